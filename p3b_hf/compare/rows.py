"""One table row per cell (or a status row: unreachable / unsupported / failed), its per-eval-set fields and
the domain gap's change against the dense row."""

from __future__ import annotations

from typing import Any

from .options import START_SOURCE

#: cell statuses without a pruned model: a budget the method cannot reach, a method not defined for this model's
#: family (P3B on Swin / ConvNeXt), or any other refused input / failed run
NOT_OK = ("unreachable", "unsupported", "failed")


def eval_set_fields(report: dict[str, Any]) -> dict[str, Any]:
    """A report's accuracy per eval set and its domain gap, as row fields (``{}`` with one eval set).
    A fine-tune report's own section wins over the prune report it extends."""
    ft = report.get("finetune") or {}
    sets = ft.get("eval_sets") if "finetune" in report else report.get("eval_sets")
    if not sets:
        return {}
    gap = (ft.get("domain_gap") if "finetune" in report else report.get("domain_gap")) or {}
    return {
        "eval_sets": {name: m.get("accuracy") for name, m in sets.items()},
        "source_set": gap.get("source_set"),
        "target_set": gap.get("target_set"),
        "gap": gap.get("gap"),
    }


def row_of(
    label: str,
    ratio: float | None,
    report: dict[str, Any],
    speed: float | None,
    *,
    start: str = START_SOURCE,
    epochs_total: float | None = None,
) -> dict[str, Any]:
    """One table row; ``start`` / ``epochs_total`` say what the cell started from and its training in all;
    with several eval sets, ``eval_sets`` (accuracy per set; ``accuracy`` is the primary one's) and ``gap``."""
    if report.get("status") in NOT_OK:
        return {
            "method": label,
            "prune_ratio": ratio,
            "status": report["status"],
            "start": start,
            "epochs_total": None,
            "error": report["error"],
        }
    return {
        "method": label,
        "prune_ratio": ratio,
        "status": "ok",
        "start": start,
        "epochs_total": epochs_total,
        "accuracy": report.get("eval", {}).get("accuracy"),
        "params": report["pruned"]["params"],
        "macs": report["pruned"]["macs"],
        "param_reduction": report.get("achieved_param_reduction"),
        "throughput_vs_dense": speed,
        "deploy_speed_vs_dense": None,
        "wall_time_s": report.get("wall_time_s"),
        **eval_set_fields(report),
    }


def add_gap_change(rows: list[dict[str, Any]]) -> None:
    """``gap_change``: each row's source-vs-target gap minus the dense row's (> 0: pruning widened it)."""
    dense = next((r for r in rows if r["method"] == "dense" and r["status"] == "ok"), None)
    base = dense.get("gap") if dense else None
    for r in rows:
        if r["status"] == "ok" and r.get("gap") is not None and base is not None:
            r["gap_change"] = r["gap"] - base


def eval_set_names(rows: list[dict[str, Any]]) -> list[str]:
    """Every eval set named by a row, in first-seen order (the primary set first)."""
    names: list[str] = []
    for r in rows:
        for name in r.get("eval_sets") or {}:
            if name not in names:
                names.append(name)
    return names
