"""The files of a compare, rewritten after every cell: ``compare.json``, ``compare.csv``, ``compare.md`` and
``accuracy_vs_params.png`` (:func:`write_outputs`; leave-one-domain-out: :func:`write_lodo_outputs`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..report import portable
from .plot import plot_accuracy_vs_params
from .rows import eval_set_names
from .tables import lodo_table, markdown_table

CSV_FIELDS = [
    "method",
    "prune_ratio",
    "status",
    "start",
    "epochs_total",
    "accuracy",
    "params",
    "macs",
    "param_reduction",
    "throughput_vs_dense",
    "deploy_speed_vs_dense",
    "wall_time_s",
    "error",
]
GAP_FIELDS = ["source_accuracy", "gap", "gap_change"]


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    from ..runtime import is_main_process

    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(
        json.dumps(portable({"settings": settings, "rows": rows}), indent=1)
    )
    sets = eval_set_names(rows)
    fields = CSV_FIELDS + [f"accuracy[{n}]" for n in sets] + (["gap", "gap_change"] if sets else [])
    if any("target_speedup" in r for r in rows):
        from ..latency.report import ROW_FIELDS

        fields += ROW_FIELDS
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(
            {**r, **{f"accuracy[{n}]": (r.get("eval_sets") or {}).get(n) for n in sets}} for r in rows
        )
    (out_dir / "compare.md").write_text(markdown_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")


def write_lodo_outputs(
    out_dir: Path,
    rows: list[dict[str, Any]],
    fold_rows: dict[str, list[dict[str, Any]]],
    folds: list[str],
    settings: dict[str, Any],
) -> None:
    """``compare.json`` (averaged rows + every fold's rows), ``compare.csv`` (one line per method, ratio and
    held-out domain, plus an ``average`` line per method and ratio), ``compare.md`` (:func:`lodo_table`) and
    the plot (one panel per held-out domain and one for the average)."""
    from ..runtime import is_main_process

    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(
        json.dumps(
            portable(
                {"settings": settings, "protocol": "lodo", "domains": folds, "rows": rows, "folds": fold_rows}
            ),
            indent=1,
        )
    )
    fields = [
        "method",
        "prune_ratio",
        "held_out",
        "status",
        "accuracy",
        "source_accuracy",
        "gap",
        "gap_change",
        "params",
        "macs",
        "param_reduction",
        "throughput_vs_dense",
        "deploy_speed_vs_dense",
        "wall_time_s",
        "error",
    ]
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for agg in rows:
            for d in folds:
                r = next(
                    (
                        r
                        for r in fold_rows.get(d, [])
                        if (r["method"], r["prune_ratio"]) == (agg["method"], agg["prune_ratio"])
                    ),
                    None,
                )
                if r is not None:
                    src = (r.get("eval_sets") or {}).get(r.get("source_set") or "source")
                    w.writerow({**r, "held_out": d, "source_accuracy": src})
            w.writerow({**agg, "held_out": "average"})
    (out_dir / "compare.md").write_text(lodo_table(rows) + "\n")
    plot_accuracy_vs_params(rows, out_dir / "accuracy_vs_params.png")
