"""Run-time pieces shared by the VBP and global-pruning CLIs: calibration data, fine-tune, eval, plan cache.

Kept apart from :mod:`p3b_hf.methods.importance` (pure statistics) so that the statistics can be
used on any iterable of batches without a :class:`~p3b_hf.pipeline.PruneContext`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PlanError
from ..plan import WidthPlan
from ..training import FineTuneTrainer, KDConfig


def add_flag(parser: Any, flag: str, **kwargs: Any) -> None:
    """``parser.add_argument`` unless another method already registered ``flag`` (e.g. a shared --teacher)."""
    if flag in getattr(parser, "_option_string_actions", {}):
        return
    parser.add_argument(flag, **kwargs)


def calib_collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack images and *integer* labels (no Mixup: statistics want clean samples)."""
    return {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features]),
            "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)}


def calibration_dataset(ctx: Any) -> Any:
    """The target *training* split with eval transforms (no augmentation), as statistics want."""
    data = getattr(ctx, "data", None)
    if data is not None and getattr(data, "train", None) is not None:
        from ..data import build_datasets, model_image_size

        train, _ = build_datasets(data, ctx.image_processor, image_size=model_image_size(ctx.model.config),
                                  augment="none")
        return train
    return ctx.train_ds


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def calibration_loader(dataset: Any, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                       num_workers: int = 0, shard: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``dataset``; ``shard=True`` gives each DDP rank a disjoint strided slice (no padding,
    so all-reduced statistics count every sample exactly once)."""
    rank, world = _dist()
    if shard and world > 1:
        dataset = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       collate_fn=calib_collate, num_workers=num_workers)


def broadcast_plan(plan: WidthPlan) -> WidthPlan:
    """Rank 0's plan on every DDP rank (gradient scores can differ in the last bits between GPUs)."""
    import torch.distributed as dist

    if _dist()[1] == 1:
        return plan
    box = [plan.to_dict()]
    dist.broadcast_object_list(box, src=0)
    return WidthPlan.from_dict(box[0])


def run_device(ctx: Any) -> str:
    from ..pipeline import resolve_device

    return resolve_device(getattr(ctx.args, "device", None))


def evaluate(ctx: Any, model: nn.Module, desc: str) -> dict[str, float]:
    from ..pipeline import evaluate_accuracy

    a = ctx.args
    bs = getattr(a, "eval_batch_size", None) or getattr(a, "batch_size", 64)
    return evaluate_accuracy(model, ctx.eval_ds, batch_size=bs, device=run_device(ctx), desc=desc)


def cached_plan(ctx: Any, name: str) -> WidthPlan | None:
    """On ``--resume``, the plan saved by the interrupted run (so that resumed training matches it)."""
    path = Path(ctx.work_dir) / f"{name}.width_plan.json"
    if getattr(ctx.args, "resume", False) and path.exists():
        try:
            return WidthPlan.from_json(path)
        except PlanError:
            return None
    return None


def save_plan_cache(ctx: Any, name: str, plan: WidthPlan) -> None:
    if _dist()[0] != 0:
        return
    Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
    plan.to_json(Path(ctx.work_dir) / f"{name}.width_plan.json")


def finetune(ctx: Any, model: nn.Module, *, phase: str, epochs: float, lr: float, weight_decay: float,
             teacher: nn.Module | None = None, kd: KDConfig | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place with :class:`FineTuneTrainer`; returns a small training summary."""
    from ..pipeline import resume_checkpoint, training_arguments

    if epochs <= 0:
        return {"epochs": 0, "train_time_s": 0.0}
    overrides = {}
    if getattr(ctx.args, "save_strategy", None):  # e.g. "no" for benchmark runs without checkpoints
        overrides["save_strategy"] = ctx.args.save_strategy
    targs = training_arguments(ctx, phase, epochs=epochs, lr=lr, weight_decay=weight_decay, **overrides)
    trainer = FineTuneTrainer(model=model, args=targs, train_dataset=ctx.train_ds, data_collator=ctx.collator,
                              teacher=teacher, kd=kd)
    t0 = time.time()
    out = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, targs.output_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "train_time_s": time.time() - t0,
            "train_loss": float(out.training_loss), "loss_curve": losses, "step_time": trainer.step_timer.summary()}
