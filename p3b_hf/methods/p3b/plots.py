"""P3B figures from a run's history: ΔΨ per block over training (like the paper's Fig. 1), keep ratios
per block over training, and the final keep ratios per block."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .estimator import shadow_abs_diffs


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _block_label(b: int) -> str:
    return f"{'attn' if b % 2 == 0 else 'mlp'}{b // 2}"


def _series(updates: list[dict[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    rows = [(u["step"], u[key]) for u in updates if u.get(key) is not None]
    return [r[0] for r in rows], [r[1] for r in rows]


def _lines(ax: Any, steps: list[int], rows: list[list[float]], title: str, ylabel: str) -> None:
    import matplotlib.cm as cm

    n = len(rows[0])
    for b in range(n):
        ax.plot(
            steps,
            [r[b] for r in rows],
            ls="-" if b % 2 == 0 else "--",
            color=cm.viridis(b / max(n - 1, 1)),
            label=_block_label(b),
            lw=1.2,
        )
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _boundaries(ax: Any, schedule: dict[str, Any] | None) -> None:
    if not schedule:
        return
    for key in ("start", "sparse", "finalize"):
        ax.axvline(schedule[key], color="grey", lw=0.8, ls=":")


def plot_history(history: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``p3b_dpsi.png``, ``p3b_keep_history.png``, ``p3b_keep_final.png`` and, for runs with BPI
    shadows, ``p3b_shadows.png`` into ``out_dir`` (those that the history has data for). Returns the
    written paths."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    updates = [u for u in history.get("updates", []) if u.get("phase") != "finalize_reselect"]
    written: list[Path] = []
    if not updates:
        return written
    schedule = history.get("schedule")
    steps_c, dcls = _series(updates, "dpsi_cls")
    steps_p, dpatch = _series(updates, "dpsi_patch")
    if dcls:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
        _lines(axes[0], steps_c, dcls, "ΔΨ class head (CE before − after block)", "ΔΨ")
        _lines(axes[1], steps_p, dpatch, "ΔΨ patch head", "ΔΨ")
        for ax in axes:
            _boundaries(ax, schedule)
            ax.axhline(0.0, color="k", lw=0.6)
        axes[1].legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        written.append(out / "p3b_dpsi.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    steps, keep = _series(updates, "keep_achieved")
    if keep:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        _lines(ax, steps, keep, "Kept fraction of block parameters per update", "keep ratio")
        _boundaries(ax, schedule)
        ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        written.append(out / "p3b_keep_history.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
        final, target = keep[-1], updates[-1].get("keep_target")
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(final)), 3.8))
        xs = range(len(final))
        ax.bar(xs, final, color=["tab:blue" if b % 2 == 0 else "tab:orange" for b in xs], label="achieved")
        if target is not None:
            ax.scatter(xs, target, color="k", marker="_", s=120, label="target κ", zorder=3)
        ax.set_xticks(list(xs), [_block_label(b) for b in xs], rotation=90, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("keep ratio")
        ax.set_title("Final keep ratio per block (blue: attention, orange: MLP)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "p3b_keep_final.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if any(u.get("shadows") for u in updates):
        written.append(_plot_shadows(plt, updates, schedule, out / "p3b_shadows.png"))
    return written


def _plot_shadows(
    plt: Any, updates: list[dict[str, Any]], schedule: dict[str, Any] | None, path: Path
) -> Path:
    """Left: final target κ per block, driving BPI vs each shadow. Right: max |Δκ| over blocks per update."""
    rows = [u for u in updates if u.get("shadows")]
    names = list(rows[-1]["shadows"])
    n = len(rows[-1]["keep_target"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    xs = list(range(n))
    axes[0].plot(xs, rows[-1]["keep_target"], "k-o", ms=4, lw=1.5, label="driving BPI")
    for name in names:
        axes[0].plot(
            xs, rows[-1]["shadows"][name]["keep_target"], "-", marker=".", lw=1, label=f"shadow {name}"
        )
        diffs = shadow_abs_diffs(rows, name)
        axes[1].plot([s for s, _ in diffs], [max(d) for _, d in diffs], lw=1.2, label=f"shadow {name}")
    axes[0].set_xticks(xs, [_block_label(b) for b in xs], rotation=90, fontsize=7)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("target keep ratio κ")
    axes[0].set_title("Last update: κ per block (shadow = sub-batch:every)")
    axes[1].axhline(0.05, color="grey", lw=0.8, ls="--")
    _boundaries(axes[1], schedule)
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel("max over blocks |κ_shadow − κ_driver|")
    axes[1].set_title("Shadow vs driving BPI on the same run")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
