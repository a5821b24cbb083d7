"""How a run's ``latency`` section (:func:`p3b_hf.latency.verify.verify`) reads in the summary, the model
card and the compare table."""

from __future__ import annotations

from typing import Any


def _x(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def summary_lines(section: dict[str, Any] | None) -> list[str]:
    """``p3b-hf prune``'s summary: target vs predicted vs achieved, and the miss warning."""
    if not section:
        return []
    lines = [
        f"speed-up          target {_x(section.get('target_speedup'))}, predicted "
        f"{_x(section.get('predicted_speedup'))}, achieved {_x(section.get('achieved_speedup'))} "
        f"({section.get('backend')}/{section.get('device')}, batch {section.get('batch_size')}, "
        f"{section.get('threads')} threads; dense {section.get('measured_dense_ms', 0):.2f} ms -> pruned "
        f"{section.get('measured_pruned_ms', 0):.2f} ms)"
    ]
    if section.get("warning"):
        lines.append(f"WARNING           {section['warning']}")
    return lines


def card_lines(section: dict[str, Any] | None) -> list[str]:
    """Model card table rows (``| key | value |``)."""
    if not section:
        return []
    where = (
        f"{section.get('backend')} fp32, {section.get('device')}, batch {section.get('batch_size')}, "
        f"{section.get('threads')} threads"
    )
    met = "yes" if section.get("met") else "**no** (achieved < 0.9 × target)"
    return [
        f"| latency budget | {_x(section.get('target_speedup'))} speed-up on {where} |",
        f"| speed-up predicted by the latency model | {_x(section.get('predicted_speedup'))} |",
        f"| speed-up measured (deployed artefact vs dense, same run) | {_x(section.get('achieved_speedup'))} |",
        f"| latency target met | {met} |",
    ]


#: compare rows / CSV columns of ``--budget latency``
ROW_FIELDS = ["target_speedup", "predicted_speedup", "achieved_speedup", "latency_met"]
TABLE_HEADS = ["target speed-up", "predicted", "achieved (deployed, measured)"]


def row_fields(target: float, section: dict[str, Any] | None) -> dict[str, Any]:
    """A compare cell's latency columns (``None`` where the cell did not run)."""
    section = section or {}
    return {
        "target_speedup": target,
        "predicted_speedup": section.get("predicted_speedup"),
        "achieved_speedup": section.get("achieved_speedup"),
        "latency_met": section.get("met"),
    }


def table_cells(row: dict[str, Any]) -> str:
    """The compare table's latency cells of one row (a miss is marked ``(miss)``)."""
    if "target_speedup" not in row:
        return " – | – | – |"
    miss = " (miss)" if row.get("latency_met") is False else ""
    return (
        f" {_x(row.get('target_speedup'))} | {_x(row.get('predicted_speedup'))} | "
        f"{_x(row.get('achieved_speedup'))}{miss} |"
    )
