"""The cell plan: which (method, budget) cells a compare runs, where, from which model (:func:`_cells`),
and the :class:`~p3b_hf.runner.PruneJob` of each (:func:`cell_job`). Bad options and stale finished cells
are refused here, before any training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import P3BError
from ..latency.options import LatencyOptions
from ..options import KDOptions, PruneOptions
from .options import BUDGET_TEXT, START_DENSE, CompareJob
from .reuse import check_reusable
from .specs import MethodSpec, _labels_text, parse_methods


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError as e:
        raise P3BError(f"--prune-ratio {text!r} must be comma-separated numbers, e.g. 0.5,0.75") from e
    for r in ratios:
        PruneOptions(model="", prune_ratio=r).check()
    return ratios


def latency_targets(job: CompareJob) -> list[float]:
    """``--budget latency``: the speed-up of every cell (``--target-speedups``, else ``--target-speedup``)."""
    c = job.compare
    if c.target_speedups:
        try:
            values = [float(t) for t in str(c.target_speedups).split(",") if t.strip()]
        except ValueError as e:
            raise P3BError(
                f"--target-speedups {c.target_speedups!r} must be comma-separated numbers, e.g. 2,3"
            ) from e
    elif job.latency.target_speedup is not None:
        values = [float(job.latency.target_speedup)]
    else:
        raise P3BError("--budget latency needs --target-speedups (e.g. 2,3) or --target-speedup.")
    for v in values:
        dataclasses.replace(job.latency, target_speedup=v, target_latency_ms=None).check()
    if c.protocol == "lodo":
        raise P3BError(
            "--budget latency runs with --protocol single only; run one compare per held-out domain."
        )
    return values


def cell_job(job: CompareJob, spec: MethodSpec, ratio: float, cell: Path, start_model: str | None) -> Any:
    """The :class:`~p3b_hf.runner.PruneJob` of one cell. ``start_model``: prune that model instead of the
    source (the dense cell); a post-training method that distils from its input (VBP) then also distils from it
    unless the user gave a teacher."""
    from ..methods import get_method
    from ..runner import PruneJob

    method = get_method(spec.method)
    base = job.method_options.get(spec.method) or method.options()
    kd = job.kd
    if method.traits.kd == "none":  # a method that does not distil (global): the KD options are others'
        kd = KDOptions()
    if (
        method.traits.post_training
        and method.traits.kd == "input"
        and start_model is not None
        and not kd.teacher
    ):
        kd = dataclasses.replace(kd, teacher=start_model)  # VBP distils from the dense cell it prunes
    options = spec.options(base, job.train.epochs)
    prune_ratio: float | None = ratio
    if (
        job.compare.budget == "channels"
    ):  # Torch-Pruning's channel ratio (global cells; checked in run_compare)
        options = dataclasses.replace(options, ratio=ratio, target_params=None)
        prune_ratio = None
    latency = LatencyOptions()
    if job.compare.budget == "latency":  # ``ratio`` is the cell's speed-up target
        latency = dataclasses.replace(job.latency, target_speedup=ratio, target_latency_ms=None)
        prune_ratio = None
    return PruneJob(
        prune=PruneOptions(
            model=start_model or job.compare.model,
            method=spec.method,
            prune_ratio=prune_ratio,
            pad_to=job.compare.pad_to,
        ),
        data=job.data,
        output=dataclasses.replace(job.output, output_dir=str(cell)),
        train=job.train,
        kd=kd,
        method_options=options,
        latency=latency,
    )


def _cells(job: CompareJob) -> tuple[list[tuple[float, MethodSpec, str, Path]], Path, list[str], bool]:
    """``(cells, dense dir, labels of methods started from the dense cell, whether the dense cell is needed)``;
    refuses bad options and finished cells that describe another experiment (before any training)."""
    c = job.compare
    specs = parse_methods(c.methods)
    latency = c.budget == "latency"
    ratios = latency_targets(job) if latency else parse_ratios(c.prune_ratio)
    other = [s.label for s in specs if c.budget not in s.traits.budgets]
    if other:
        from ..methods import all_methods

        able = [_labels_text(m) for m in all_methods() if c.budget in m.traits.budgets]
        raise P3BError(
            f"--budget {c.budget} ({BUDGET_TEXT[c.budget]}) applies to {', '.join(able) or 'no'} cells only, "
            f"not {', '.join(other)}; compare those at whole-model parameter budgets (--budget params)."
        )
    out_dir = Path(job.output.output_dir)
    dense_dir = out_dir / "dense"
    cells = [
        (
            ratio,
            spec,
            spec.start(c.global_from),
            out_dir / (f"{spec.label}-x{ratio:g}" if latency else f"{spec.label}-{round(100 * ratio)}"),
        )
        for ratio in ratios
        for spec in specs
    ]
    from_dense = sorted({spec.label for _, spec, start, _ in cells if start == START_DENSE})
    need_dense = c.dense_baseline or bool(from_dense)
    # a finished cell made from another model (or other held-out domains) than it would be made from now is
    # refused before any training (--overwrite: every cell is recomputed instead of reused)
    if not job.output.overwrite:
        if need_dense:
            check_reusable(dense_dir, c.model, job.data)
        for _, _, start, cell in cells:
            check_reusable(cell, str(dense_dir) if start == START_DENSE else c.model, job.data)
    return cells, dense_dir, from_dense, need_dense
