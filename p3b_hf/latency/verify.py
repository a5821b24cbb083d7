"""Calibrate before a run, verify after it: the pruned artefact and the dense one, deployed the same way,
timed in one round-robin run on the named backend / device; target vs predicted vs achieved speed-up."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .budget import LatencyBudget
from .model import Clock, cache_dir, cache_key, calibrate
from .options import LatencyOptions

logger = logging.getLogger(__name__)

#: achieved below this fraction of the target speed-up is reported as a miss (stderr + report)
MISS_FRACTION = 0.9


def _threads(opts: LatencyOptions) -> int:
    return int(opts.threads or torch.get_num_threads())


def prepare(
    opts: LatencyOptions,
    dense: nn.Module,
    *,
    clock: Clock | None = None,
    log: Callable[[str], None] | None = None,
) -> LatencyBudget:
    """The latency budget of a run: the calibrated (or cached) latency model of ``dense`` on the backend /
    device of ``opts``, and the target it sets."""
    opts.check()
    threads = _threads(opts)
    key = cache_key(
        dense.config,
        device=opts.speed_device,
        backend=opts.speed_backend,
        threads=threads,
        batch=opts.speed_batch_size,
        image_size=None,
    )
    own = clock is None
    if own:
        from .timing import BackendClock

        clock = BackendClock(opts.speed_backend, opts.speed_device, threads, opts.speed_batch_size)
    try:
        model = calibrate(
            dense.cpu().float().eval() if own and opts.speed_backend == "onnxruntime" else dense,
            clock,
            key,
            directory=cache_dir(opts.latency_cache),
            recalibrate=opts.recalibrate,
            log=log or logger.info,
        )
    finally:
        if own:
            clock.close()
    budget = LatencyBudget.of(
        model,
        dense.config,
        target_speedup=opts.target_speedup,
        target_latency_ms=opts.target_latency_ms,
    )
    if opts.measured_loop:
        budget.meter = lambda pruned: measured_speedup(opts, dense, pruned, clock if not own else None)
    return budget


def measured_speedup(
    opts: LatencyOptions, dense: nn.Module, pruned: nn.Module, clock: Clock | None = None
) -> float:
    """The deployed ``pruned`` model's speed-up over ``dense`` (:func:`measure`, paired). Under
    torch.distributed the main process measures and every rank gets its number, so that a plan chosen on
    it is the same on every rank."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    value = [0.0]
    if not distributed or dist.get_rank() == 0:
        m = measure(opts, dense, pruned, clock)
        value[0] = m["dense_ms"] / m["pruned_ms"]
    if distributed:
        dist.broadcast_object_list(value, src=0)
    return float(value[0])


def measure(
    opts: LatencyOptions, dense: nn.Module, pruned: nn.Module, clock: Clock | None = None
) -> dict[str, float]:
    """ms per batch of the deployed dense and pruned models, paired (one round-robin run). CPU: the
    project's :class:`p3b_hf.export.DeploySpeed`; CUDA: the same deployable modules in PyTorch on the GPU."""
    if clock is not None:
        return {"dense_ms": float(clock.time_model(dense)), "pruned_ms": float(clock.time_model(pruned))}
    b = opts.speed_batch_size
    if opts.speed_device == "cpu":
        from ..export import DeploySpeed

        timer = DeploySpeed(
            dense,
            batch_size=b,
            threads=_threads(opts),
            backend="onnxruntime" if opts.speed_backend == "onnxruntime" else "fast",
        )
        try:
            m = timer.measure(copy_cpu(pruned))
        finally:
            timer.close()
        ips = m["images_per_s"]
        return {
            "dense_ms": 1e3 * b / ips["dense/deploy"],
            "pruned_ms": 1e3 * b / ips["pruned/deploy"],
            "eager_speedup": m["eager_speed_vs_dense"],
        }
    from .timing import BackendClock

    clock_ = BackendClock(opts.speed_backend, opts.speed_device, _threads(opts), b)
    try:
        ms = clock_.time_models({"dense": copy_cpu(dense), "pruned": copy_cpu(pruned)}, dense.config)
    finally:
        clock_.close()
    return {"dense_ms": ms["dense"], "pruned_ms": ms["pruned"]}


def copy_cpu(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().float().eval()


def verify(
    budget: LatencyBudget,
    opts: LatencyOptions,
    dense: nn.Module,
    pruned: nn.Module,
    *,
    clock: Clock | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``pruning_report.json``'s ``latency`` section: the target, the latency model's prediction for the
    pruned architecture, and the speed-up measured on the deployed artefacts (dense timed the same way, in
    the same run). Warns loudly (stderr) when the achieved speed-up is below 0.9 x the target."""
    predicted_ms = budget.predict(pruned.config)
    measured = measure(opts, dense, pruned, clock)
    achieved = measured["dense_ms"] / measured["pruned_ms"]
    target = budget.target_speedup
    section: dict[str, Any] = {
        "backend": opts.speed_backend,
        "device": opts.speed_device,
        "dtype": "fp32",
        "batch_size": opts.speed_batch_size,
        "threads": _threads(opts),
        "target_speedup": target,
        "target_latency_ms": opts.target_latency_ms,
        "predicted_speedup": budget.dense_ms / max(predicted_ms, 1e-12),
        "predicted_ms": predicted_ms,
        "achieved_speedup": achieved,
        "measured_dense_ms": measured["dense_ms"],
        "measured_pruned_ms": measured["pruned_ms"],
        "prediction_error": predicted_ms / measured["pruned_ms"] - 1.0,
        "met": achieved >= MISS_FRACTION * target,
        "latency_model": budget.model.summary(),
    }
    if "eager_speedup" in measured:
        section["eager_speedup"] = measured["eager_speedup"]
    if not section["met"]:
        msg = (
            f"LATENCY TARGET MISSED: the pruned model is {achieved:.2f}x faster than the dense one on "
            f"{opts.speed_backend}/{opts.speed_device} (batch {opts.speed_batch_size}, {section['threads']} "
            f"threads), the target was {target:.2f}x (latency model predicted {section['predicted_speedup']:.2f}x). "
            "Check the latency model's fit (plots/latency_model.png), recalibrate on an idle machine "
            "(--recalibrate), or ask for a higher --target-speedup."
        )
        section["warning"] = msg
        (warn or _loud)(msg)
    return section


def _loud(msg: str) -> None:
    logger.warning(msg)
    bar = "!" * 100
    print(f"\n{bar}\n{msg}\n{bar}\n", file=sys.stderr)
