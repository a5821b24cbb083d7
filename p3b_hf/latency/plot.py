"""The latency model as a picture: each curve's timed grid (dots) and its fitted step curve (line)."""

from __future__ import annotations

from pathlib import Path

from .model import LatencyModel


def plot_latency_model(model: LatencyModel, path: Path) -> Path:
    """One panel per curve: measured ms (dots, one colour per residual width) and the fit; the title names
    the chosen step and the fit error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(model.curves)
    cols = min(3, len(names)) or 1
    rows = -(-len(names) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        curve = model.curves[name]
        cs = sorted({int(p[1]) for p in curve.points})
        top = int(max(p[0] for p in curve.points))
        for c in cs:
            pts = [p for p in curve.points if int(p[1]) == c]
            ax.plot([p[0] for p in pts], [p[2] for p in pts], "o", ms=3, label=f"timed, c={c}")
            ws = list(range(1, top + 1))
            ax.plot(ws, [curve.ms(w, c) for w in ws], "-", lw=1, label=f"fit, c={c}")
        step = max(curve.step, curve.deploy_round)
        ax.set_title(f"{name}\nstep {step}, rel. RMS {100 * curve.rel_rms:.1f} %", fontsize=7)
        ax.set_xlabel("width (head dim / MLP neurons)", fontsize=7)
        ax.set_ylabel("ms per batch", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    k = model.key
    fig.suptitle(
        f"latency model: {k['backend']} / {k['device']} / {k['dtype']} / {k['threads']} threads / batch {k['batch']}"
        f" -- dense {model.dense_ms:.2f} ms, rest {model.rest_ms:.2f} ms, calibrated in {model.calibration_s:.0f} s",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
