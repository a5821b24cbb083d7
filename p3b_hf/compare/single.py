"""One compare on the data as given (``--protocol single``): the source model checked, the dense cell when
needed, then every cell in turn, a row each, the outputs rewritten after every cell."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .cells import _cells, cell_job
from .dense import dense_row
from .options import START_DENSE, CompareJob
from .outputs import write_outputs
from .prune_cell import run_cell
from .reuse import own_epochs, start_label
from .rows import NOT_OK, add_gap_change, row_of
from .speed import deploy_ratio, throughput_ratio


def check_source(job: CompareJob) -> None:
    """Refuse a source model no method can prune (an unsupported family) or a ``--pad-to`` it cannot take,
    before any cell runs or any file is written."""
    from ..loading import load_config
    from ..models.locator import require_supported_config

    config = load_config(job.compare.model)
    require_supported_config(config)  # before any cell runs or any file is written
    from ..padding import check_pad_to

    check_pad_to(config, job.compare.pad_to)


def run_single(job: CompareJob) -> list[dict[str, Any]]:
    """Every method x ratio cell (and the dense cell when needed) of one compare: rows, written as
    ``compare.json`` / ``.csv`` / ``.md`` and ``accuracy_vs_params.png`` into ``job.output.output_dir`` after
    every cell. Each fold of ``--protocol lodo`` is one of these."""
    check_source(job)
    from ..loading import load_model
    from ..runtime import resolve_device

    c = job.compare
    job.train.check()
    cells, dense_dir, from_dense, need_dense = _cells(job)
    out_dir = Path(job.output.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(c.bench_device)
    dense = None if c.no_bench else load_model(c.model)
    deploy = None
    if dense is not None and c.deploy_backend != "none":
        from ..export import DeploySpeed  # the deployable artefact's speed, beside the eager module's

        deploy = DeploySpeed(
            dense, batch_size=c.bench_batch_size or 1, repeats=c.bench_repeats, backend=c.deploy_backend
        )
    settings = {
        "compare": dataclasses.asdict(c),
        "data": dataclasses.asdict(job.data),
        "train": dataclasses.asdict(job.train),
        "kd": dataclasses.asdict(job.kd),
    }
    rows: list[dict[str, Any]] = []
    dense_epochs = None
    if need_dense:
        if from_dense:
            why = "" if c.dense_baseline else " (trained although --dense-baseline was not given)"
            print(
                f"p3b-hf compare: {', '.join(from_dense)} start from the dense cell {dense_dir}, the model "
                f"fine-tuned on this task, trained once and reused{why}"
            )
        dense_cell = dense_row(job, dense_dir)
        rows.append(dense_cell)
        dense_epochs = dense_cell["epochs_total"] if dense_cell["status"] == "ok" else None
    for ratio, spec, start, cell in cells:
        from_dense_cell = start == START_DENSE
        if from_dense_cell and dense_epochs is None:
            report = {
                "status": "failed",
                "error": f"the dense cell {dense_dir} failed; {spec.label} starts from it",
            }
        else:
            report = run_cell(cell_job(job, spec, ratio, cell, str(dense_dir) if from_dense_cell else None))
        ok = report.get("status") not in NOT_OK
        speed = None
        if ok and dense is not None:
            speed = throughput_ratio(cell, dense, device, c.bench_batch_size, c.bench_repeats)
        before = (
            dense_epochs if from_dense_cell and dense_epochs is not None else 0.0
        )  # the dense cell's training
        total = own_epochs(report, job.train.epochs) + before if ok else None
        rows.append(
            row_of(
                spec.label, ratio, report, speed, start=start_label(start, dense_epochs), epochs_total=total
            )
        )
        if speed is not None and deploy is not None:
            rows[-1]["deploy_speed_vs_dense"] = deploy_ratio(deploy, cell)
        if c.budget == "latency":
            from ..latency.report import row_fields

            rows[-1].update(prune_ratio=None, **row_fields(ratio, report.get("latency")))
        add_gap_change(rows)
        write_outputs(out_dir, rows, settings)  # partial results survive a crash
    add_gap_change(rows)
    write_outputs(out_dir, rows, settings)
    if deploy is not None:
        deploy.close()
    return rows
