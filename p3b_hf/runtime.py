"""Where a run executes: device choice and the few collective operations p3b_hf needs under DDP.

One home for "which device", "which rank", "how many processes" and "sum this tensor over the ranks",
so every method, the Trainer integration and the run layer agree. Single-process runs never touch
``torch.distributed``: every collective here is a no-op when no process group is initialised.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from .errors import P3BError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None = "auto") -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cuda"`` without a GPU is
    an error naming the fix."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise P3BError(f"--device {name!r} is not one of {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise P3BError("--device cuda was requested but no CUDA GPU is visible; use --device cpu.")
    return name


def _group() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's once initialised, else the launcher's ``RANK`` (0 alone)."""
    return dist.get_rank() if _group() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes of this launch: the process group's once initialised, else the launcher's
    ``WORLD_SIZE`` (accelerate / torchrun set it before the Trainer creates the group)."""
    return dist.get_world_size() if _group() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_(t: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """In-place SUM (or mean) over the ranks; a no-op in single-process runs."""
    if _group() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        if mean:
            t /= dist.get_world_size()
    return t


def broadcast_tensors_(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values, one flat collective per dtype (a no-op
    single-process)."""
    if not (_group() and dist.get_world_size() > 1):
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=src)
            pos = 0
            for t in group:
                t.copy_(flat[pos : pos + t.numel()].view_as(t))
                pos += t.numel()


#: gradients are averaged in flat buckets of at most this many elements (one collective each)
GRAD_BUCKET_NUMEL = 2**24


def all_reduce_grads_(params: list[torch.Tensor]) -> int:
    """Average the gradients of ``params`` over the ranks in place, as DDP would for parameters its reducer
    does not own (used for P3B's BPI heads, which DDP ignores). A gradient that is ``None`` on some rank
    counts as zeros; one that is ``None`` on every rank stays ``None`` (the optimizer then skips the
    parameter, as in a single-process run). One small collective agrees on which gradients exist, then
    flat same-dtype buckets are summed. Returns how many gradients were averaged (0 single-process)."""
    if not (_group() and dist.get_world_size() > 1) or not params:
        return 0
    world = dist.get_world_size()
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=dev)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in live:
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads + [None]:  # type: ignore[list-item]
            if g is not None and (size + g.numel() <= GRAD_BUCKET_NUMEL or not bucket):
                bucket.append(g)
                size += g.numel()
                continue
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world
            pos = 0
            for b in bucket:
                b.copy_(flat[pos : pos + b.numel()].view_as(b))
                pos += b.numel()
            if g is not None:
                bucket, size = [g], g.numel()
    return len(live)


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """The ranks' tensors concatenated along dim 0 in rank order (``t`` itself when single-process)."""
    if not _group() or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects; a no-op single-process)."""
    if not _group() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if _group():
        dist.barrier()


def init_distributed(device: str | None = "auto") -> None:
    """Join the process group now when launched by torchrun/accelerate (``WORLD_SIZE`` > 1).

    The Trainer would do it only when the first ``TrainingArguments`` is built; methods that compute
    statistics before training (VBP, global pruning) need it earlier to shard their data and to
    broadcast their plan, and the rendezvous keeps the ranks in step from the start.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _group():
        from accelerate import PartialState

        PartialState(cpu=resolve_device(device) == "cpu")
