"""``accuracy_vs_params.png``: accuracy vs parameters per method, one panel per held-out domain / eval set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rows import eval_set_names


def _panels_of(rows: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """Plot panels: ``(title, [(method, params in M, accuracy in %)])``; one per held-out domain and the
    average (lodo), one per eval set (several sets), else one."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("params") is not None]
    if any("per_domain" in r for r in rows):
        domains = list(next((r["per_domain"] for r in rows if r.get("per_domain")), {}))
        keys = [(f"held out: {d}", lambda r, d=d: r["per_domain"].get(d)) for d in domains]
        keys.append(("average over held-out domains", lambda r: r.get("accuracy")))
    elif eval_set_names(rows):
        keys = [
            (f"eval set: {n}", lambda r, n=n: (r.get("eval_sets") or {}).get(n)) for n in eval_set_names(rows)
        ]
    else:
        keys = [("", lambda r: r.get("accuracy"))]
    panels = []
    for title, get in keys:
        pts = [(r["method"], r["params"] / 1e6, 100 * get(r)) for r in ok if get(r) is not None]
        panels.append((title, pts))
    return panels


def plot_accuracy_vs_params(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs parameters per method; one panel per held-out domain / eval set when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels_of(rows)
    n = len(panels)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(6.4 * cols if n == 1 else 4.6 * cols, 4.4 * nrows), squeeze=False
    )
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        by_method: dict[str, list[tuple[float, float]]] = {}
        for method, params, acc in pts:
            by_method.setdefault(method, []).append((params, acc))
        for method, mpts in sorted(by_method.items()):
            mpts.sort()
            style = "*" if method == "dense" else "o-"
            ax.plot(
                [p for p, _ in mpts],
                [a for _, a in mpts],
                style,
                label=method,
                markersize=10 if method == "dense" else 6,
            )
        ax.set(
            xlabel="parameters (M)",
            ylabel="top-1 accuracy (%)",
            title=title or "Accuracy vs parameters at equal budgets",
        )
        ax.grid(alpha=0.3)
        if by_method:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
