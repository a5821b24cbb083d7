"""Training pieces every method shares: ``TrainingArguments`` from :class:`~p3b_hf.options.TrainOptions`,
knowledge distillation, the step timer, accuracy metrics and the one evaluation loop.

Every method's training (P3B's pruning run, VBP's KD fine-tune, the global-pruning fine-tune and the plain
fine-tune of a pruned model) is a :class:`FineTuneTrainer` run; P3B's trainer subclasses it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import EvalPrediction, TrainerCallback, TrainingArguments

from .checkpoints import record_wall_time
from .errors import NonFiniteLossError, P3BError, RunInterrupted
from .options import KDOptions, TrainOptions
from .runtime import all_reduce_, rank, resolve_device, world_size
from .trainer_adapter import TrainerAdapter

KD_REDUCTIONS = ("deit", "batchmean")


@dataclass
class KDConfig:
    """Knowledge distillation: ``loss = (1 - alpha) * CE(student, y) + alpha * KD``.

    ``kind="soft"``: ``KD = T^2 * KL(softmax(t/T) || softmax(s/T))`` summed over classes and samples, then

    * ``reduction="deit"``: divided by ``B * K`` (batch size times classes), exactly DeiT's
      ``DistillationLoss`` (``kl_div(..., reduction="sum") * T^2 / outputs.numel()``), which P3B-Dist uses;
    * ``reduction="batchmean"``: divided by ``B`` only (the textbook KL per sample; VBP's choice). It is
      ``K`` times the DeiT term, so at ``K = 1000`` classes the teacher term dominates the CE.
    * ``reduction=None`` (the default, "unset"): the convention of the trainer / method that trains with it,
      set by :func:`resolve_kd` -- the one place that fills it: ``FineTuneTrainer`` / ``P3BTrainer`` /
      ``p3b-hf finetune`` / P3B-Dist "deit", VBP "batchmean" (:data:`p3b_hf.methods.vbp.KD_REDUCTION`). So
      ``P3BTrainer(teacher=t, kd=KDConfig(alpha=0.3))`` distils at DeiT's scale, as ``--method p3b`` does.

    ``kind="hard"`` uses DeiT's hard distillation ``CE(s_dist, argmax t)`` instead of the KL term (no
    reduction choice: a batch mean). For two-headed (distilled DeiT) students the KD term is applied to
    the distillation logits and the CE to the class logits, as in DeiT; for one-headed students both act
    on ``logits``.
    """

    alpha: float = 0.5
    temperature: float = 1.0
    kind: str = "soft"
    reduction: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("soft", "hard"):
            raise P3BError(f"KD kind must be 'soft' or 'hard', got {self.kind!r}.")
        if self.reduction is not None and self.reduction not in KD_REDUCTIONS:
            raise P3BError(f"KD reduction must be one of {KD_REDUCTIONS}, got {self.reduction!r}.")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise P3BError(
                f"KD alpha must lie in [0, 1] and the temperature be > 0 (got alpha={self.alpha}, "
                f"temperature={self.temperature})."
            )


def training_arguments(
    train: TrainOptions, output_dir: str | os.PathLike, **overrides: Any
) -> TrainingArguments:
    """The ``TrainingArguments`` every p3b_hf training phase starts from (cosine schedule, checkpoints every
    epoch, tqdm progress, no external loggers); ``overrides`` win (e.g. P3B's constant lr)."""
    device = resolve_device(train.device)
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=train.epochs,
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size or train.batch_size,
        remove_unused_columns=False,
        label_names=["labels"],
        seed=train.seed,
        data_seed=train.seed,
        report_to="none",
        save_strategy="steps" if train.save_steps and train.save_strategy != "no" else train.save_strategy,
        save_steps=train.save_steps or 500,
        save_total_limit=2,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, train.logging_steps),
        bf16=train.bf16,
        fp16=train.fp16,
        use_cpu=device == "cpu",
        dataloader_num_workers=train.num_workers,
        ddp_find_unused_parameters=False,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        disable_tqdm=False,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def evaluate_accuracy(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    device: str | None = None,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on a transformed eval dataset.

    The one evaluation loop of p3b_hf. Under DDP every rank scores a strided shard and the sums are
    all-reduced, so every rank returns the metrics of the whole split (each sample counted once).
    """
    with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
        if dataset is None or len(dataset) == 0:
            return {}
        device = device or next(model.parameters()).device.type
        was_training = model.training
        model.eval()
        model.to(device)
        world = world_size()
        shard = (
            dataset if world == 1 else torch.utils.data.Subset(dataset, range(rank(), len(dataset), world))
        )
        loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False)
        dtype = next(model.parameters()).dtype
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        for batch in tqdm(loader, desc=desc, leave=False, disable=None):
            x = batch["pixel_values"].to(device, dtype)
            y = batch["labels"].to(device)
            with torch.autocast(
                torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logits = logits_of(model(pixel_values=x)).float()
            y = y.argmax(-1) if y.dim() > 1 else y
            sums[0] += (logits.argmax(-1) == y).sum()
            sums[1] += F.cross_entropy(logits, y, reduction="sum")
            sums[2] += y.numel()
        all_reduce_(sums)
        model.train(was_training)
        n = max(float(sums[2]), 1.0)
        return {"accuracy": float(sums[0]) / n, "loss": float(sums[1]) / n, "samples": int(sums[2])}


def kd_config(kd: KDOptions, *, always: bool = False) -> KDConfig | None:
    """The :class:`KDConfig` of the distillation options (``None`` without a teacher unless ``always``: VBP
    distils from the dense input model by default). ``reduction`` stays unset unless ``--kd-reduction`` was
    given: the trainer fills in its method's convention (:func:`resolve_kd`)."""
    if not kd.teacher and not always:
        return None
    return KDConfig(
        alpha=kd.kd_alpha, temperature=kd.kd_temperature, kind=kd.kd_kind, reduction=kd.kd_reduction
    )


def resolve_kd(kd: KDConfig | None, convention: str) -> KDConfig | None:
    """``kd`` with an unset ``reduction`` set to ``convention`` (the scaling of the method that distils: "deit"
    for P3B-Dist and the plain fine-tune, "batchmean" for VBP). The only place an unset reduction is filled;
    a reduction the user gave is kept."""
    if kd is None or kd.reduction is not None:
        return kd
    if convention not in KD_REDUCTIONS:
        raise P3BError(f"KD convention must be one of {KD_REDUCTIONS}, got {convention!r}.")
    return dataclasses.replace(kd, reduction=convention)


def logits_of(outputs: Any) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs[0]


def kd_loss(
    student_out: Any,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    cfg: KDConfig,
    ce: nn.Module | None = None,
) -> torch.Tensor:
    """Distillation loss of a student output against frozen teacher logits (mean over the batch)."""
    logits = logits_of(student_out)
    cls_logits = getattr(student_out, "cls_logits", None)
    dist_logits = getattr(student_out, "distillation_logits", None)
    cls_logits = logits if cls_logits is None else cls_logits
    dist_logits = logits if dist_logits is None else dist_logits
    base = ce(cls_logits, labels) if ce is not None else F.cross_entropy(cls_logits, labels)
    if cfg.kind == "hard":
        distill = F.cross_entropy(dist_logits, teacher_logits.argmax(-1))
    else:
        t = cfg.temperature
        total = F.kl_div(
            F.log_softmax(dist_logits / t, -1),
            F.log_softmax(teacher_logits / t, -1),
            reduction="sum",
            log_target=True,
        ) * (t * t)
        if cfg.reduction is None:
            raise P3BError(
                "KDConfig.reduction is unset: give 'deit' or 'batchmean', or let the trainer resolve it "
                "(resolve_kd(kd, convention); FineTuneTrainer / P3BTrainer do)."
            )
        distill = total / (dist_logits.numel() if cfg.reduction == "deit" else dist_logits.shape[0])
    return (1 - cfg.alpha) * base + cfg.alpha * distill


def soft_target_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against dense (mixup/cutmix/label-smoothed) targets or class indices."""
    if targets.dim() == logits.dim():
        return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, targets)


def compute_accuracy(pred: EvalPrediction) -> dict[str, float]:
    """Top-1 (and top-5 when there are >5 classes) accuracy: the Trainer's ``compute_metrics``.

    Ten lines of numpy instead of ``evaluate.load("accuracy")``, whose metric scripts come from the Hub
    (offline runs would fail) and whose import costs seconds per run; p3b_hf does not depend on
    ``evaluate``."""
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    labels = pred.label_ids
    if labels.ndim > 1:  # dense targets: compare with their argmax
        labels = labels.argmax(-1)
    out = {"accuracy": float((logits.argmax(-1) == labels).mean())}
    if logits.shape[-1] > 5:
        top5 = np.argpartition(-logits, 5, axis=-1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(-1).mean())
    return out


class StepTimer(TrainerCallback):
    """Wall time and process memory of every optimizer step, summarised over the whole run.

    A run that is fast at the start can slow down later (subnormal floats, growing state, a leak);
    the summary puts the first and the last 10 % of the steps side by side so a report shows it.
    Added to every :class:`FineTuneTrainer` (``trainer.step_timer``).
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rss: list[float] = []
        self._t0: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._t0 is None:
            return
        self.times.append(time.perf_counter() - self._t0)
        self.rss.append(_rss_mb())
        self._t0 = None

    def summary(self) -> dict[str, Any]:
        """``first_10pct_s`` / ``last_10pct_s``: mean step time of the first / last 10 % of the steps
        (at least one step each), their ratio, the mean of each tenth of the run, and the resident
        memory (MiB) at the end of each tenth."""
        n = len(self.times)
        if n == 0:
            return {"steps": 0}
        k = max(1, n // 10)
        first, last = sum(self.times[:k]) / k, sum(self.times[-k:]) / k
        tenths = [self.times[i * n // 10 : (i + 1) * n // 10] for i in range(10)]
        rss = [self.rss[min(n - 1, (i + 1) * n // 10 - 1)] for i in range(10)]
        return {
            "steps": n,
            "first_10pct_s": first,
            "last_10pct_s": last,
            "last_vs_first": last / first if first > 0 else None,
            "tenths_mean_s": [sum(t) / len(t) if t else None for t in tenths],
            "rss_mib_tenths": rss,
        }


class GracefulStop(TrainerCallback):
    """SIGTERM (what schedulers and ``docker stop`` send) and SIGINT (Ctrl-C) during training: finish the
    current optimizer step, write a checkpoint, and stop with :class:`~p3b_hf.errors.RunInterrupted` -- no
    lost epoch, no traceback, no output dir. A second signal stops at once.

    Under DDP the ranks agree (an all-reduce of the flag every step), so all of them save the same step.
    After every checkpoint the run's wall time so far goes to ``OUTPUT_DIR.work/run.json`` (a resumed run
    reports the total)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now (a checkpoint being written is skipped on resume)
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name} (second signal)", signum)
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers live in the main thread only (a Trainer in a worker thread keeps defaults)
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        flag = self.signum is not None
        if world_size() > 1:
            t = torch.tensor([float(self.signum or 0)], device=args.device)
            all_reduce_(t)  # every rank learns of a signal any rank got (the sum is > 0)
            flag = bool(t.item() > 0)
            if flag and self.signum is None:
                self.signum = int(signal.SIGTERM)
        if flag:
            self.stopping = True
            control.should_save = True  # the Trainer saves right after this callback, then calls on_save

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.should_save:
            record_wall_time(Path(args.output_dir).parent)
        if self.stopping:
            raise self.interrupted(args, state)

    def interrupted(self, args: Any, state: Any) -> RunInterrupted:
        name = signal.Signals(self.signum or signal.SIGTERM).name
        return RunInterrupted(
            f"stopped by {name} after step {state.global_step}; the newest checkpoint is in "
            f"{args.output_dir}. Rerun the same command with --resume to continue.",
            self.signum or int(signal.SIGTERM),
        )


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil missing or the platform refuses: memory is informational only
        return float("nan")


class FineTuneTrainer(TrainerAdapter):
    """``transformers.Trainer`` (through :class:`~p3b_hf.trainer_adapter.TrainerAdapter`, which also fixes
    resuming ViT checkpoints) with what every p3b_hf method's training needs.

    * ``teacher`` + ``kd``: frozen teacher (kept out of the optimizer and DDP) for KD.
    * dense (mixup/cutmix) targets in ``labels`` are handled by a soft-target cross-entropy.
    * a diverged run stops with :class:`~p3b_hf.errors.NonFiniteLossError` instead of training on NaNs.
    * ``trainer.step_timer``: the time and memory of every optimizer step (:class:`StepTimer`).

    ``kd_reduction``: the soft-KD scaling used when ``kd.reduction`` is unset (default: the class's
    :attr:`default_kd_reduction`, DeiT's, as ``p3b-hf finetune``; VBP resolves its own "batchmean" first).
    """

    #: soft-KD scaling of an unset ``KDConfig.reduction`` (``p3b-hf finetune`` and P3B-Dist: DeiT's)
    default_kd_reduction: str = "deit"
    #: consecutive optimizer-step losses that may be NaN/inf before the run is stopped
    max_nonfinite_losses: int = 3

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module | None = None,
        kd: KDConfig | None = None,
        kd_reduction: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.step_timer = StepTimer()
        self.graceful_stop = GracefulStop()
        # first, so that its on_step_end times the training step alone (not a P3B mask update or a
        # finalisation evaluation, which P3B times separately)
        kwargs["callbacks"] = [self.step_timer, *(kwargs.get("callbacks") or []), self.graceful_stop]
        super().__init__(*args, **kwargs)
        if teacher is not None:
            check_teacher_labels(teacher, self.model)
        self._nonfinite_losses = 0
        self.teacher = teacher
        self.kd = resolve_kd(
            kd or (KDConfig() if teacher is not None else None), kd_reduction or self.default_kd_reduction
        )
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
            self.teacher.to(self.args.device)
        # our losses are batch means: let the Trainer handle gradient-accumulation scaling
        self.model_accepts_loss_kwargs = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train`` that checkpoints and stops cleanly on SIGTERM / SIGINT (:class:`GracefulStop`)."""
        stop = self.graceful_stop
        stop.install()
        try:
            out = super().train(*args, **kwargs)
        finally:
            stop.restore()
        if stop.signum is not None:  # the signal came after the last step (final eval): the epoch's
            raise stop.interrupted(self.args, self.state)  # checkpoint is the newest one
        return out

    def task_loss(self, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        return soft_target_ce(logits_of(outputs), labels)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if self.teacher is not None and model.training:
            with torch.no_grad():
                t_logits = logits_of(self.teacher(pixel_values=inputs["pixel_values"]))
            hard = labels.argmax(-1) if labels.dim() > 1 else labels
            loss = kd_loss(
                outputs, t_logits.float(), hard, self.kd, ce=None if labels.dim() == 1 else _DenseCE(labels)
            )
        else:
            loss = self.task_loss(outputs, labels)
        inputs["labels"] = labels
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """Stop a diverged run early with a clear error instead of training on NaNs for hours.

        A few non-finite losses in a row are tolerated (fp16 overflow steps are skipped by the grad
        scaler anyway); after ``max_nonfinite_losses`` the run stops. The checkpoints in the output's
        ``.work`` dir are kept, and ``p3b-hf`` writes no output directory.
        """
        loss = super().training_step(model, inputs, num_items_in_batch)
        if torch.isfinite(loss.detach()).all():
            self._nonfinite_losses = 0
            return loss
        self._nonfinite_losses += 1
        if self._nonfinite_losses >= self.max_nonfinite_losses:
            raise NonFiniteLossError(
                f"The training loss was NaN/inf for {self._nonfinite_losses} steps in a row (step "
                f"{self.state.global_step}): the run diverged. Lower the learning rate (--lr), use --bf16 instead "
                "of --fp16, or check the input data for NaNs; the last good checkpoint is kept in "
                f"{self.args.output_dir}."
            )
        return loss


def check_teacher_labels(teacher: nn.Module, student: nn.Module) -> None:
    """A KD teacher must predict the student's label set (same size, same names when both have names)."""
    t, s = teacher.config, student.config
    if t.num_labels != s.num_labels:
        raise P3BError(
            f"The KD teacher predicts {t.num_labels} classes but the model {s.num_labels}: the teacher "
            "must be fine-tuned on the same target data set (e.g. `p3b-hf finetune --new-head` on the "
            "dense model) before it can teach."
        )
    t_names = [str(t.id2label.get(i, i)) for i in range(t.num_labels)]
    s_names = [str(s.id2label.get(i, i)) for i in range(s.num_labels)]
    generic = all(n.startswith("LABEL_") for n in t_names + s_names)
    if not generic and t_names != s_names:
        diff = next(i for i, (a, b) in enumerate(zip(t_names, s_names)) if a != b)
        raise P3BError(
            f"The KD teacher's labels differ from the model's (class {diff}: teacher {t_names[diff]!r}, "
            f"model {s_names[diff]!r}); use a teacher fine-tuned on this data set with the same label order."
        )


class _DenseCE(nn.Module):
    """CE against the dense targets of the current batch (used as KD's base term)."""

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__()
        self.targets = targets

    def forward(self, logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        return soft_target_ce(logits, self.targets)
