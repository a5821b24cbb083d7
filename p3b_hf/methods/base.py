"""The method contract: what the run layer hands a pruning method (:class:`RunContext`) and what it gets
back (:class:`MethodResult`).

A method is an options dataclass plus ``run(ctx, options) -> MethodResult`` (registered in
:mod:`p3b_hf.methods`). It chooses channels (a :class:`~p3b_hf.plan.WidthPlan`), lets
:func:`~p3b_hf.plan.apply_width_plan` slice, and trains what it needs through
:meth:`RunContext.training_arguments`; loading, the classifier head, padding, writing and reporting are
the runner's job (:mod:`p3b_hf.runner`), so a method never touches output directories or the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoints import last_complete_checkpoint
from ..options import KDOptions, TrainOptions
from ..plan import WidthPlan
from ..runtime import resolve_device


@dataclass
class MethodResult:
    """What a method hands back to the runner (which pads, saves and reports it)."""

    pruned_model: nn.Module
    plan: WidthPlan
    eval_metrics: dict[str, float] = field(default_factory=dict)
    dense_eval_metrics: dict[str, float] | None = None
    history: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a method needs, built once by the runner.

    ``model`` is the dense fp32 model with its classifier adapted to the target labels
    (``head_reinitialised`` says whether that replaced the source head); ``train_ds`` / ``eval_ds`` are
    transformed datasets and ``collator`` the Trainer's collator (Mixup/CutMix on training batches);
    ``work_dir`` holds Trainer checkpoints (kept across crashes for ``resume``); files a method writes into
    ``artifacts_dir`` (plots) become part of the output directory. ``eval_sets``: every eval set by name
    (transformed; the first is ``eval_ds``); methods evaluate on ``eval_ds``, the runner scores the result on
    the others (per domain, per eval split).
    """

    model: nn.Module
    image_processor: Any
    data: Any  # p3b_hf.data.ImageData
    train_ds: Any
    eval_ds: Any
    collator: Any
    train: TrainOptions
    work_dir: Path
    artifacts_dir: Path
    prune_ratio: float | None = None
    kd: KDOptions = field(default_factory=KDOptions)
    resume: bool = False
    head_reinitialised: bool = False
    started: float = field(default_factory=time.time)
    eval_sets: dict[str, Any] = field(default_factory=dict)
    #: a latency budget (:class:`p3b_hf.latency.LatencyBudget`) instead of ``prune_ratio``: docs/latency.md
    latency: Any = None

    @property
    def num_labels(self) -> int:
        return len(self.data.labels) if self.data is not None else int(self.model.config.num_labels)

    @property
    def device(self) -> str:
        return resolve_device(self.train.device)

    def training_arguments(self, phase: str, **overrides: Any) -> Any:
        """``TrainingArguments`` for one training phase of the method (checkpoints in ``work_dir/phase``)."""
        from ..training import training_arguments

        return training_arguments(self.train, self.work_dir / phase, **overrides)

    def resume_checkpoint(self, output_dir: str | Path) -> str | None:
        """The checkpoint a resumed run continues from (the newest complete one), else None."""
        return last_complete_checkpoint(output_dir) if self.resume else None

    def evaluate(self, model: nn.Module, desc: str = "eval") -> dict[str, float]:
        """Top-1 accuracy and mean CE of ``model`` on the eval split (sharded over DDP ranks)."""
        from ..training import evaluate_accuracy

        batch = self.train.eval_batch_size or self.train.batch_size
        return evaluate_accuracy(model, self.eval_ds, batch_size=batch, device=self.device, desc=desc)

    def evaluate_sets(
        self, model: nn.Module, skip: tuple[str, ...] = (), desc: str = "eval"
    ) -> dict[str, dict[str, float]]:
        """:meth:`evaluate` on every eval set but those in ``skip``: ``{name: {accuracy, loss, samples}}``."""
        from ..training import evaluate_accuracy

        batch = self.train.eval_batch_size or self.train.batch_size
        return {
            name: evaluate_accuracy(model, ds, batch_size=batch, device=self.device, desc=f"{desc} {name}")
            for name, ds in self.eval_sets.items()
            if name not in skip
        }
