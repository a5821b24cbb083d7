"""What the post-training methods (VBP, grouped global pruning) share: calibration data, the plan cache
for resumed runs, the broadcast of rank 0's plan, and the fine-tune after pruning.

Kept apart from :mod:`p3b_hf.methods.statistics` / :mod:`p3b_hf.methods.importance` (pure scores over
any iterable of batches), which know nothing about a run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PlanError
from ..plan import WidthPlan
from ..runtime import broadcast_object, is_main_process, rank, world_size
from ..training import FineTuneTrainer, KDConfig
from .base import RunContext


def calib_collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack images and *integer* labels (no Mixup: statistics want clean samples)."""
    return {
        "pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features]),
        "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long),
    }


def calibration_dataset(ctx: RunContext) -> Any:
    """The target *training* split with eval transforms (no augmentation), as statistics want."""
    if ctx.data is not None and getattr(ctx.data, "train", None) is not None:
        from ..data import build_datasets, model_image_size

        train, _ = build_datasets(
            ctx.data, ctx.image_processor, image_size=model_image_size(ctx.model.config), augment="none"
        )
        return train
    return ctx.train_ds


def calibration_loader(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    shard: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of ``dataset``; ``shard=True`` gives each DDP rank a disjoint strided slice (no padding,
    so all-reduced statistics count every sample exactly once)."""
    world = world_size()
    if shard and world > 1:
        dataset = torch.utils.data.Subset(dataset, range(rank(), len(dataset), world))
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        collate_fn=calib_collate,
        num_workers=num_workers,
    )


def broadcast_plan(plan: WidthPlan) -> WidthPlan:
    """Rank 0's plan on every DDP rank (gradient scores can differ in the last bits between GPUs)."""
    if world_size() == 1:
        return plan
    return WidthPlan.from_dict(broadcast_object(plan.to_dict()))


def cached_plan(ctx: RunContext, name: str) -> WidthPlan | None:
    """On resume, the plan saved by the interrupted run (so that resumed training matches it)."""
    path = Path(ctx.work_dir) / f"{name}.width_plan.json"
    if ctx.resume and path.exists():
        try:
            return WidthPlan.from_json(path)
        except PlanError:
            return None
    return None


def save_plan_cache(ctx: RunContext, name: str, plan: WidthPlan) -> None:
    if not is_main_process():
        return
    Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
    plan.to_json(Path(ctx.work_dir) / f"{name}.width_plan.json")


def finetune(
    ctx: RunContext,
    model: nn.Module,
    *,
    phase: str,
    epochs: float,
    lr: float,
    weight_decay: float,
    teacher: nn.Module | None = None,
    kd: KDConfig | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place with :class:`FineTuneTrainer`; returns a small training summary."""
    if epochs <= 0:
        return {"epochs": 0, "train_time_s": 0.0}
    targs = ctx.training_arguments(
        phase, num_train_epochs=epochs, learning_rate=lr, weight_decay=weight_decay
    )
    trainer = FineTuneTrainer(
        model=model,
        args=targs,
        train_dataset=ctx.train_ds,
        data_collator=ctx.collator,
        teacher=teacher,
        kd=kd,
    )
    t0 = time.time()
    out = trainer.train(resume_from_checkpoint=ctx.resume_checkpoint(targs.output_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "train_time_s": time.time() - t0,
        "train_loss": float(out.training_loss),
        "loss_curve": losses,
        "step_time": trainer.step_timer.summary(),
    }
