"""P3B inside a HF ``Trainer``: :class:`PruningCallback` (the schedule) and :class:`P3BTrainer` (losses,
optimizer groups, Taylor reads, checkpoints).

Quick start::

    from p3b_hf.trainer import P3BConfig, P3BTrainer      # re-exported from here
    trainer = P3BTrainer(model=model, args=TrainingArguments("out", num_train_epochs=50, ...),
                         train_dataset=train_ds, eval_dataset=eval_ds, p3b=P3BConfig(prune_ratio=0.5))
    trainer.train()
    pruned = trainer.pruned_model          # a physically smaller P3BViT/P3BDeiT model

What goes where: the trainer adds the BPI losses to the task loss (and records ΔΨ), builds the optimizer
groups (backbone / BPI at a constant lr / optional masks), reads the mask gradients for the Taylor
scores before gradient clipping, and saves / restores the P3B state in checkpoints -- through the public
hooks of :class:`~p3b_hf.trainer_adapter.TrainerAdapter`, never the Trainer's private methods. The
callback runs the schedule: mask updates every ``update_every`` optimizer steps, finalisation (hard masks
-> ``WidthPlan`` -> :func:`apply_width_plan`), evaluation and saving of the pruned model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ...checkpoints import save_model_dir
from ...errors import CheckpointError, P3BError
from ...runtime import all_reduce_, all_reduce_grads_
from ...slicing import apply_width_plan
from ...training import FineTuneTrainer, compute_accuracy, evaluate_accuracy
from .bpi import per_head_ce
from .config import P3BConfig
from .pruner import P3BPruner
from .schedule import Schedule, default_phase_epochs
from .state import P3BState

logger = logging.getLogger(__name__)

_NO_DECAY_NAMES = (
    "position_embeddings",
    "cls_token",
    "distillation_token",
    "mask_token",
    "relative_position_bias_table",
)


class PruningCallback(TrainerCallback):
    """Runs P3B's schedule inside a :class:`P3BTrainer` (added automatically; pass your own instance in
    ``callbacks=[PruningCallback(P3BConfig(...))]`` to share it, e.g. to read its history live)."""

    def __init__(self, config: P3BConfig | None = None) -> None:
        self.config = (config or P3BConfig()).resolved()
        self.pruner: P3BPruner | None = None
        self.trainer: P3BTrainer | None = None
        self.pruned_model: nn.Module | None = None
        self.finalize_metrics: dict[str, Any] = {}
        self.wall_time_s: float = 0.0
        self._t0: float | None = None

    # ------------------------------------------------------------------ wiring
    def setup(self, model: nn.Module) -> P3BPruner:
        if self.pruner is None:
            self.pruner = P3BPruner(model, self.config)
        return self.pruner

    def bind(self, trainer: P3BTrainer) -> None:
        self.trainer = trainer

    @property
    def state(self) -> P3BState:
        return self.pruner.state

    @property
    def history(self) -> dict[str, Any]:
        """Per-update keep ratios / ΔΨ, phase boundaries and finalisation results (JSON-able)."""
        sched = self.pruner.schedule
        return {
            "updates": self.state.history,
            "schedule": sched.to_dict() if sched else None,
            "finalize": self.finalize_metrics,
            "skipped_taylor_steps": self.state.skipped_taylor_steps,
            "non_block_params": self.pruner.non_block,
            "block_params_full": self.pruner.full.tolist(),
        }

    def _make_schedule(self, args: TrainingArguments, state: TrainerState, steps_per_epoch: int) -> Schedule:
        c = self.config
        epochs = state.max_steps / steps_per_epoch
        d0, d1, d2 = default_phase_epochs(epochs)
        e0 = d0 if c.prune_start_epoch is None else c.prune_start_epoch
        e1 = d1 if c.prune_sparse_epoch is None else c.prune_sparse_epoch
        e2 = d2 if c.prune_finalize_epoch is None else c.prune_finalize_epoch
        s = Schedule.from_epochs(steps_per_epoch, e0, e1, e2, c.update_every, c.tau_max, c.tau_min)
        if any(x is not None for x in (c.prune_start_step, c.prune_sparse_step, c.prune_finalize_step)):
            s0 = s.start if c.prune_start_step is None else c.prune_start_step
            s1 = s.sparse if c.prune_sparse_step is None else c.prune_sparse_step
            s2 = s.finalize if c.prune_finalize_step is None else c.prune_finalize_step
            u = c.update_every or max(1, (s2 - s0) // 78)
            s = Schedule(s0, s1, s2, u, c.tau_max, c.tau_min)
        if s.finalize > state.max_steps:
            logger.warning(
                "P3B finalize step %d is after the last training step %d: the model will be "
                "finalised at the end of training with the masks reached by then.",
                s.finalize,
                state.max_steps,
            )
        return s

    # ------------------------------------------------------------------ events
    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.pruner is None or self.trainer is None:
            raise P3BError(
                "PruningCallback only works inside a P3BTrainer (it needs the BPI loss and the "
                "mask-gradient hooks): use P3BTrainer(..., callbacks=[PruningCallback(cfg)])."
            )
        self._t0 = time.perf_counter()
        ga = args.gradient_accumulation_steps
        n = len(train_dataloader) if train_dataloader is not None else None
        steps_per_epoch = max(n // ga + int(n % ga > 0), 1) if n else max(state.max_steps, 1)
        self.pruner.schedule = self._make_schedule(args, state, steps_per_epoch)
        self._fit_bpi_every(self.pruner.schedule.update_every * ga)
        self.pruner.sync_device()
        self.pruner.sync_heads()  # outside DDP's reducer: DDP did not broadcast them
        logger.info("P3B schedule (optimizer steps): %s", self.pruner.schedule)

    def _fit_bpi_every(self, window_forwards: int) -> None:
        """Lower the *default* ``bpi_every`` to the micro-batches of one update window, so that every window
        runs the patch heads at least once (an explicit ``--bpi-every`` is left as given: it warns)."""
        c = self.config
        if c.bpi_every_auto and c.bpi_every > window_forwards and self.pruner.estimators:
            logger.info(
                "P3B: bpi_every %d -> %d (one update window is %d micro-batches).",
                c.bpi_every,
                max(1, window_forwards),
                window_forwards,
            )
            c.bpi_every = max(1, window_forwards)
            self.pruner.estimators[0].every = c.bpi_every

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.trainer is not None:
            self.trainer._p3b_before_step()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        pr = self.pruner
        done = state.global_step
        if pr.state.finalized or pr.schedule is None:
            return
        if pr.schedule.is_update(done):
            t0 = time.perf_counter()
            entry = pr.update(done)
            entry["update_s"] = time.perf_counter() - t0
            logger.info(
                "P3B update at step %d (%s): model keep %.4f", done, entry["phase"], entry["model_keep"]
            )
            # on EVERY rank: Trainer.log runs the on_log callbacks, which reset control.should_log; logging on
            # rank 0 only made rank 1 alone enter the loss all_gather of a coinciding logging step (DDP hang)
            if self.trainer is not None:
                self.trainer.log(
                    {"p3b_model_keep": entry["model_keep"], "p3b_rho": entry["rho"], "p3b_tau": entry["tau"]}
                )
        if done >= pr.schedule.finalize:
            self.finalize(done)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        pr = self.pruner
        if not pr.state.finalized:
            self.finalize(state.global_step)
        elif self.pruned_model is None or state.global_step > (pr.state.finalize_step or 0):
            # resumed after finalisation, or trained on with hard masks: build from the final weights
            self._build_and_save(pr.plan, stage="train_end")
        if self._t0 is not None:
            self.wall_time_s = time.perf_counter() - self._t0

    # ------------------------------------------------------------------ finalisation
    def finalize(self, done: int) -> nn.Module:
        plan = self.pruner.finalize(done)
        return self._build_and_save(plan, stage="finalize")

    def _build_and_save(self, plan: Any, stage: str) -> nn.Module:
        tr, c = self.trainer, self.config
        model = self.pruner.model
        pruned = apply_width_plan(
            model,
            plan,
            layernorm_mode=c.layernorm_mode,
            provenance={"method": "p3b", "prune_ratio": c.prune_ratio},
        )
        pruned.eval()
        self.pruned_model = pruned
        metrics: dict[str, Any] = {
            "step": int(tr.state.global_step) if tr else None,
            "params": sum(p.numel() for p in pruned.parameters()),
        }
        if tr is not None and c.evaluate_pruned and tr.eval_dataset is not None:
            metrics["pruned"] = tr.evaluate_model(pruned)
            if self.pruner.gates is not None:
                metrics["hard_masked"] = tr.evaluate_model(model)
        self.finalize_metrics[stage] = metrics
        if tr is not None and c.save_dir is not None and tr.is_world_process_zero():
            out = os.path.join(tr.args.output_dir, "pruned_model") if c.save_dir == "auto" else c.save_dir
            save_model_dir(pruned, out, image_processor=tr.processing_class, plan=plan)
            metrics["saved_to"] = out
        return pruned


class P3BTrainer(FineTuneTrainer):
    """:class:`~p3b_hf.training.FineTuneTrainer` that prunes with P3B while it fine-tunes.

    Extra keyword ``p3b``: a :class:`P3BConfig`. KD (P3B-Dist) uses the parent's ``teacher=`` / ``kd=``; a
    ``KDConfig`` whose ``reduction`` is unset (e.g. ``KDConfig(alpha=0.3)``) distils at DeiT's scale, as
    ``--method p3b --teacher`` does (:func:`~p3b_hf.training.resolve_kd`).
    ``trainer.pruned_model`` holds the physically pruned model after training.
    """

    #: P3B-Dist distils as DeiT's DistillationLoss does (docs/p3b.md §6)
    default_kd_reduction = "deit"

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        *,
        p3b: P3BConfig | None = None,
        callbacks: list[TrainerCallback] | None = None,
        compute_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        callbacks = list(callbacks or [])
        cb = next((c for c in callbacks if isinstance(c, PruningCallback)), None)
        if cb is None:
            cb = PruningCallback(p3b)
            callbacks.insert(0, cb)  # user callbacks then see the state after each update
        elif p3b is not None:
            raise ValueError("Pass the P3BConfig either as p3b= or inside your PruningCallback, not both.")
        if model is None:
            raise ValueError("P3BTrainer needs a model (a HF ViT/DeiT image classifier).")
        self.pruning = cb
        self.p3b = cb.config
        self._loss_parts: torch.Tensor | None = None  # task / BPI loss sums since the last log
        self._loss_parts_n = 0
        self._heads_synced_step: int | None = None
        cb.setup(model)
        if args is not None and args.label_names is None:
            args.label_names = ["labels"]  # DeiT-with-teacher forwards have no `labels` argument
        super().__init__(
            model=model,
            args=args,
            callbacks=callbacks,
            compute_metrics=compute_metrics or compute_accuracy,
            **kwargs,
        )
        cb.bind(self)
        departures = recipe_departures(self.args)
        if departures:
            logger.warning(
                "P3BTrainer: these TrainingArguments depart from the reference pruning recipe: %s. "
                "Pass lr_scheduler_type='constant', max_grad_norm=0.0, weight_decay=0.05 to follow "
                "it (the p3b-hf CLI does).",
                "; ".join(departures),
            )

    @property
    def pruned_model(self) -> nn.Module | None:
        return self.pruning.pruned_model

    @property
    def pruner(self) -> P3BPruner:
        return self.pruning.pruner

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        pr = self.pruner
        bpi_phase = model.training and bool(pr.estimators) and not pr.state.finalized
        if bpi_phase:
            forward_index = pr.state.train_forwards  # drives bpi_every
            pr.state.train_forwards += 1
            batch = int(inputs["labels"].shape[0])
            for est in pr.estimators:
                est.heads.active, est.heads.patch_rows = True, est.patch_rows(batch, forward_index)
        try:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            task_loss, bpi_loss = loss, None
            if bpi_phase:
                bpi_loss = self._bpi_loss(inputs["labels"])
                loss = bpi_loss if self.p3b.frozen else loss + bpi_loss
            if model.training:
                self._log_parts(task_loss, bpi_loss)
        finally:
            for est in pr.estimators:
                est.heads.active, est.heads.patch_rows = False, None
                est.heads.clear()
        return (loss, outputs) if return_outputs else loss

    def _bpi_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """The 4·2L BPI cross-entropies of every estimator (class heads on the whole batch, patch heads on
        their sub-batch), recorded as ΔΨ inside the scoring window. The logits come from the heads
        themselves (:meth:`~.bpi.BPITaps.pop_logits`), not from the model output."""
        pr = self.pruner
        accumulating = pr.schedule is not None and pr.schedule.accumulating(self.state.global_step)
        total = 0.0
        for est in pr.estimators:
            cls_logits, patch = est.heads.pop_logits()
            ce_cls = per_head_ce(cls_logits, labels)
            ce_patch = None if patch is None else per_head_ce(patch, labels[: patch.shape[2]])
            total = total + ce_cls.sum() + (0.0 if ce_patch is None else ce_patch.sum())
            if accumulating:
                est.record(ce_cls.detach(), None if ce_patch is None else ce_patch.detach())
        return total

    # ------------------------------------------------------------------ logging
    def _log_parts(self, task_loss: torch.Tensor, bpi_loss: torch.Tensor | None) -> None:
        """Sum the task loss and the BPI loss (0 once finalised) of each training micro-batch until the next
        ``loss`` log (device tensors: no host sync per step)."""
        t = task_loss.detach().float().reshape(())
        parts = torch.stack(
            [t, t.new_zeros(()) if bpi_loss is None else bpi_loss.detach().float().reshape(())]
        )
        self._loss_parts = parts if self._loss_parts is None else self._loss_parts + parts
        self._loss_parts_n += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Training logs get ``task_loss`` (what the fine-tune alone would optimise: the CE, or the KD loss
        with a teacher) and ``bpi_loss`` (the sum of the 4·2L BPI cross-entropies) next to ``loss`` (what is
        optimised: their sum, or ``bpi_loss`` alone when ``frozen``), each the mean over the micro-batches
        since the last log and over the ranks. Runs on every rank, like the Trainer's own loss gather."""
        if "loss" in logs and self._loss_parts is not None:
            sums = torch.cat([self._loss_parts, self._loss_parts.new_tensor([self._loss_parts_n])])
            all_reduce_(sums)
            logs["task_loss"] = round(float(sums[0] / sums[2]), 4)
            logs["bpi_loss"] = round(float(sums[1] / sums[2]), 4)
            self._loss_parts, self._loss_parts_n = None, 0
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ optimizer / scheduler
    def _param_groups(self) -> list[dict[str, Any]]:
        model, c = self.model, self.p3b
        groups = {k: [] for k in ("decay", "no_decay", "bpi_decay", "bpi_no_decay", "masks")}
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if n.startswith("p3b_gates."):
                if c.train_masks:
                    groups["masks"].append(p)
                continue
            no_decay = p.ndim <= 1 or n.endswith(".bias") or any(k in n for k in _NO_DECAY_NAMES)
            prefix = "bpi_" if n.startswith(("p3b_bpi.", "p3b_shadows.")) else ""
            groups[prefix + ("no_decay" if no_decay else "decay")].append(p)
        lr, wd = self.args.learning_rate, self.args.weight_decay
        spec = {
            "decay": (lr, wd),
            "no_decay": (lr, 0.0),
            "bpi_decay": (c.bpi_lr, c.bpi_weight_decay),
            "bpi_no_decay": (c.bpi_lr, 0.0),
            "masks": (c.mask_lr if c.mask_lr is not None else lr, 0.0),
        }
        return [
            {"params": ps, "lr": spec[k][0], "weight_decay": spec[k][1], "p3b_group": k}
            for k, ps in groups.items()
            if ps
        ]

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Backbone decay / no-decay at the model lr, BPI decay / no-decay at ``bpi_lr`` (constant), and
        the masks (no decay, ``mask_lr``) only with ``train_masks``."""
        if self.optimizer is None:
            cls, kw = (
                self.optimizer_cls_and_kwargs
                if self.optimizer_cls_and_kwargs is not None
                else self.get_optimizer_cls_and_kwargs(self.args, self.model)
            )
            kw = {k: v for k, v in kw.items() if k not in ("params", "lr")}
            self.optimizer = cls(self._param_groups(), lr=self.args.learning_rate, **kw)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        """The args' schedule for the backbone; BPI heads keep their constant lr (as in the reference)."""
        sched = super().create_scheduler(num_training_steps, optimizer)
        lambdas = getattr(sched, "lr_lambdas", None)
        if lambdas is not None:
            for i, group in enumerate(sched.optimizer.param_groups):
                if str(group.get("p3b_group", "")).startswith("bpi"):
                    lambdas[i] = _constant
                    group["lr"] = group["initial_lr"]
        return sched

    # ------------------------------------------------------------------ Taylor scores
    def _p3b_before_step(self) -> None:
        """Once per optimizer step, before clipping / AMP unscaling: average the BPI heads' gradients over
        the ranks (DDP's reducer ignores the heads, see :mod:`.bpi`), then read the Taylor scores."""
        pr, step = self.pruner, self.state.global_step
        if self._heads_synced_step != step:
            self._heads_synced_step = step
            if not pr.state.finalized and all_reduce_grads_(pr.head_parameters()):
                pr.sync_heads(buffers_only=True)  # same on every rank: after finalisation the heads are idle
        self._p3b_taylor()

    def _p3b_taylor(self) -> None:
        """Read the mask gradients once per optimizer step, *before* clipping / AMP unscaling (after
        finalisation: drop them, the frozen masks must not move)."""
        pr = self.pruner
        if pr.gates is not None and pr.state.finalized:
            pr.gates.drop_grads()
            return
        if pr.gates is None or pr.schedule is None:
            return
        step = self.state.global_step
        if not pr.schedule.accumulating(step):
            return
        scaler = getattr(self.accelerator, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        pr.record_taylor(step, grad_scale=scale)

    def before_clip(self) -> None:
        self._p3b_before_step()

    def clip_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The backbone alone: the masks and the BPI heads (whose gradients are about twice the backbone's)
        are left out of the norm, so they cannot shrink the backbone's step."""
        return [p for n, p in model.named_parameters() if not _is_p3b_param(n)]

    # ------------------------------------------------------------------ evaluation of other models
    def evaluate_model(self, model: nn.Module) -> dict[str, float]:
        """Accuracy / loss of ``model`` on the eval set (used right after finalisation for the pruned and the
        hard-masked model), with the run's precision; DDP ranks each score a shard and sum."""
        a = self.args
        dtype = torch.bfloat16 if a.bf16 else torch.float16 if a.fp16 else None
        return evaluate_accuracy(
            model,
            self.eval_dataset,
            batch_size=a.per_device_eval_batch_size,
            device=str(a.device),
            autocast_dtype=dtype,
            desc="eval pruned",
        )

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model weights without the P3B modules, so the checkpoint is a plain HF model."""
        return {
            k: v
            for k, v in state_dict.items()
            if not k.startswith(("p3b_gates.", "p3b_bpi.", "p3b_shadows."))
        }

    def save_extra_state(self, output_dir: str) -> None:
        """``p3b_state.safetensors`` / ``p3b_state.json``: masks, BPI heads, windows, EMA, history."""
        pr = self.pruner
        pr.state.save(
            output_dir,
            pr.state_tensors(),
            {
                "schedule": pr.schedule.to_dict() if pr.schedule else None,
                "config": _jsonable(dataclasses.asdict(self.p3b)),
            },
        )

    def load_extra_state(self, checkpoint_dir: str) -> None:
        if self.pruner.shadows:
            raise CheckpointError(
                "A P3B run with BPI shadows (bpi_shadows / --bpi-shadow) cannot be resumed: the "
                "shadow heads and windows are a measurement aid and are not checkpointed. Start "
                "the run again, or resume without shadows."
            )
        tensors, meta = P3BState.read(checkpoint_dir)
        pr = self.pruner
        pr.load_state_tensors(tensors)
        pr.state.load(tensors, meta, pr.device)
        if pr.state.finalized:  # the plan is a pure function of the (hard) masks
            pr.plan = pr.width_plan()


def _is_p3b_param(name: str) -> bool:
    """Masks, BPI heads and shadow heads (possibly under a DDP ``module.`` prefix)."""
    return any(part in name for part in ("p3b_gates.", "p3b_bpi.", "p3b_shadows."))


#: the reference's pruning-run optimiser recipe (docs/p3b.md §6): constant lr, no clipping, AdamW wd 0.05
REFERENCE_RECIPE = {"lr_scheduler_type": "constant", "max_grad_norm": 0.0, "weight_decay": 0.05}


def recipe_departures(args: TrainingArguments) -> list[str]:
    """How ``args`` depart from the reference's pruning-run recipe (empty list = none)."""
    out = []
    sched = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if sched not in ("constant", "constant_with_warmup"):
        out.append(f"lr_scheduler_type={sched!r} (reference: a constant lr while pruning)")
    if args.max_grad_norm and args.max_grad_norm > 0:
        out.append(
            f"max_grad_norm={args.max_grad_norm} (reference: no clipping; here the backbone alone is clipped)"
        )
    if args.weight_decay != REFERENCE_RECIPE["weight_decay"]:
        out.append(f"weight_decay={args.weight_decay} (reference: 0.05)")
    return out


def _constant(_step: int) -> float:
    return 1.0


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in d.items()}
