"""``p3b-hf finetune``: plain DeiT-recipe fine-tune of a (pruned) model dir, optionally with KD.

This is P3B's second stage (README: "fine-tune pruned model"): the physically pruned model is trained
like any DeiT -- AdamW, cosine schedule to ``--min-lr``, Mixup 0.8 / CutMix 1.0 / label smoothing 0.1,
the DeiT augmentations -- with no masks. The defaults are the reference fine-tune recipe
(docs/p3b.md §7, §8): 300 epochs, lr 5e-4 for a global batch of 512 (scaled
linearly with the global batch unless ``--lr`` is given), weight decay 0.05, no warm-up, min lr 1e-5.

Works on any ``AutoModelForImageClassification`` dir (pruned P3B or stock ViT/DeiT). The model's
classifier must already match the data set's labels (``p3b-hf prune`` output does), unless
``--new-head``. ``--teacher DIR`` adds knowledge distillation (:class:`~p3b_hf.training.KDConfig`).

Output (atomic): the fine-tuned model dir (same files as ``p3b-hf prune``); its ``pruning_report.json``
is the input's report plus a ``finetune`` section, so ``p3b-hf push`` shows both accuracies.
Runs under ``accelerate launch`` / ``torchrun`` unchanged (the Trainer handles DDP); only the main
process writes the output dir.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

REFERENCE_LR, REFERENCE_GLOBAL_BATCH = 5e-4, 512


@dataclass
class FineTuneOutcome:
    """What :func:`execute` hands back (the recipe runner fingerprints ``model`` on every rank)."""

    model: nn.Module
    report: dict[str, Any]
    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data and model")
    g.add_argument("--model", required=True, help="(pruned) model dir or Hub id")
    g.add_argument("--dataset", required=True, help="Hub data set, preset, save_to_disk, parquet or imagefolder dir")
    g.add_argument("--image-column", default=None)
    g.add_argument("--label-column", default=None)
    g.add_argument("--train-split", default="train")
    g.add_argument("--eval-split", default=None)
    g.add_argument("--max-train-samples", type=int, default=None)
    g.add_argument("--max-eval-samples", type=int, default=None)
    g.add_argument("--output-dir", required=True)
    g.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir (after success)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep DIR.work/ Trainer checkpoints")
    g.add_argument("--resume", action="store_true", help="resume from the last checkpoint in DIR.work/finetune")
    g.add_argument("--new-head", action="store_true",
                   help="replace the classifier when its labels differ from the data set's (dense models only)")
    r = parser.add_argument_group("DeiT recipe (defaults = the P3B reference fine-tune)")
    r.add_argument("--epochs", type=float, default=300.0)
    r.add_argument("--batch-size", type=int, default=128, help="per-device batch size")
    r.add_argument("--eval-batch-size", type=int, default=None)
    r.add_argument("--grad-accum-steps", type=int, default=1)
    r.add_argument("--lr", type=float, default=None,
                   help=f"peak lr (default {REFERENCE_LR:g} * global_batch / {REFERENCE_GLOBAL_BATCH})")
    r.add_argument("--min-lr", type=float, default=1e-5, help="cosine schedule floor")
    r.add_argument("--warmup-epochs", type=float, default=0.0)
    r.add_argument("--weight-decay", type=float, default=0.05)
    r.add_argument("--augment", choices=["deit", "glyph", "basic", "none"], default="deit")
    r.add_argument("--mixup", type=float, default=0.8)
    r.add_argument("--cutmix", type=float, default=1.0)
    r.add_argument("--label-smoothing", type=float, default=0.1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--bf16", action="store_true")
    r.add_argument("--fp16", action="store_true")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    r.add_argument("--num-workers", type=int, default=0)
    r.add_argument("--logging-steps", type=int, default=50)
    r.add_argument("--eval-each-epoch", action="store_true", help="evaluate after every epoch (logged)")
    k = parser.add_argument_group("knowledge distillation")
    k.add_argument("--teacher", default=None, help="teacher model dir / Hub id (same labels); enables KD")
    k.add_argument("--kd-alpha", type=float, default=0.5)
    k.add_argument("--kd-temperature", type=float, default=1.0)
    k.add_argument("--kd-kind", choices=["soft", "hard"], default="soft",
                   help="soft: KL at --kd-temperature; hard: DeiT's CE to the teacher argmax")
    k.add_argument("--kd-reduction", choices=["deit", "batchmean"], default="deit",
                   help="soft KD scale: 'deit' = KL summed / (batch x classes) as DeiT's DistillationLoss "
                        "(default); 'batchmean' = / batch (K times larger)")


def world_size() -> int:
    """Processes of the current launch (accelerate / torchrun set WORLD_SIZE before the Trainer starts)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def scaled_lr(args: argparse.Namespace) -> float:
    """DeiT's linear scaling rule: the reference lr is for a global batch of 512."""
    if args.lr is not None:
        return float(args.lr)
    global_batch = args.batch_size * world_size() * args.grad_accum_steps
    return REFERENCE_LR * global_batch / REFERENCE_GLOBAL_BATCH


def _check_args(args: argparse.Namespace) -> None:
    from ..errors import P3BError

    if args.epochs <= 0:
        raise P3BError(f"--epochs {args.epochs} must be > 0.")
    if args.batch_size < 1 or args.grad_accum_steps < 1:
        raise P3BError("--batch-size and --grad-accum-steps must be >= 1.")
    if args.bf16 and args.fp16:
        raise P3BError("Give at most one of --bf16 / --fp16.")
    if not 0.0 <= args.kd_alpha <= 1.0 or args.kd_temperature <= 0:
        raise P3BError("--kd-alpha must lie in [0, 1] and --kd-temperature be > 0.")


def _labels_of(config: Any) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _check_labels(config: Any, labels: list[str], what: str) -> None:
    """A fine-tune continues the task the model was trained/pruned for: same label list, same order."""
    from ..errors import DataError

    theirs = [str(x) for x in labels]
    if _labels_of(config) == theirs:
        return
    raise DataError(f"{what} predicts {config.num_labels} labels ({_labels_of(config)[:4]}...) but the data "
                    f"set has {len(theirs)} ({theirs[:4]}...). Fine-tune on the data set the model was pruned on"
                    + (", or pass --new-head to start a fresh classifier." if what == "--model" else "."))


def _context(args: argparse.Namespace) -> Any:
    """A :class:`~p3b_hf.pipeline.PruneContext` for a *pruned* model: like ``prepare_context`` but the
    classifier is kept (labels must match, unless ``--new-head``) and the image size comes from the config
    (the module locator only reads dense/full-width models)."""

    from .. import data as data_lib
    from ..pipeline import PruneContext, adapt_classifier, load_inputs

    output_dir = Path(args.output_dir)
    model, processor, data = load_inputs(args)
    head_reinitialised = False
    if args.new_head:
        head_reinitialised = adapt_classifier(model, data.labels)
    else:
        _check_labels(model.config, data.labels, "--model")
    size = data_lib.model_image_size(model.config)  # None: the processor's (DINOv2)
    train_ds, eval_ds = data_lib.build_datasets(data, processor, image_size=size,
                                                augment=args.augment)
    collator = data_lib.make_collator(len(data.labels), mixup=args.mixup, cutmix=args.cutmix,
                                      label_smoothing=args.label_smoothing,
                                      enabled=args.mixup > 0 or args.cutmix > 0 or args.label_smoothing > 0)
    work_dir = output_dir.with_name(output_dir.name + ".work")
    work_dir.mkdir(parents=True, exist_ok=True)
    return PruneContext(args=args, model=model, image_processor=processor, data=data, train_ds=train_ds,
                        eval_ds=eval_ds, collator=collator, num_labels=len(data.labels), staging_dir=output_dir,
                        work_dir=work_dir, head_reinitialised=head_reinitialised)


def execute(args: argparse.Namespace) -> FineTuneOutcome:
    """Fine-tune, evaluate, and (on the main process) write the output dir; return the trained model."""
    from ..loading import load_model
    from ..pipeline import resolve_device, resume_checkpoint, training_arguments
    from ..report import REPORT_NAME, atomic_dir, layer_widths, write_report
    from ..training import FineTuneTrainer, KDConfig, compute_accuracy

    _check_args(args)
    ctx = _context(args)
    model = ctx.model
    teacher = None
    if args.teacher:
        teacher = load_model(args.teacher)
        _check_labels(teacher.config, ctx.data.labels, "--teacher")
    kd = KDConfig(alpha=args.kd_alpha, temperature=args.kd_temperature, kind=args.kd_kind,
                  reduction=args.kd_reduction) if teacher else None

    lr = scaled_lr(args)
    steps_per_epoch = max(1, math.ceil(len(ctx.train_ds) / (args.batch_size * world_size() * args.grad_accum_steps)))
    targs = training_arguments(
        ctx, "finetune", epochs=args.epochs, lr=lr, weight_decay=args.weight_decay,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": min(args.min_lr, lr)},
        warmup_steps=int(round(args.warmup_epochs * steps_per_epoch)),
        gradient_accumulation_steps=args.grad_accum_steps,
        eval_strategy="epoch" if args.eval_each_epoch else "no", save_total_limit=1)
    trainer = FineTuneTrainer(model=model, args=targs, train_dataset=ctx.train_ds, eval_dataset=ctx.eval_ds,
                              data_collator=ctx.collator, compute_metrics=compute_accuracy, teacher=teacher, kd=kd)
    t0 = time.time()
    train_out = trainer.train(resume_from_checkpoint=resume_checkpoint(args, targs.output_dir))
    train_time = time.time() - t0
    metrics = {k.removeprefix("eval_"): float(v) for k, v in trainer.evaluate().items()
               if isinstance(v, (int, float))}
    model = trainer.accelerator.unwrap_model(trainer.model).eval()

    source = Path(args.model)
    report: dict[str, Any] = {}
    if (source / REPORT_NAME).exists():
        report = json.loads((source / REPORT_NAME).read_text())
    report.setdefault("method", getattr(model.config, "pruning_method", None) or "finetune")
    report.setdefault("base_model", getattr(model.config, "base_model_name_or_path", None) or args.model)
    report.setdefault("dataset", args.dataset)
    report.setdefault("widths", layer_widths(model))
    report["finetune"] = {
        "source_model": args.model, "dataset": args.dataset, "epochs": args.epochs, "lr": lr, "min_lr": args.min_lr,
        "weight_decay": args.weight_decay, "batch_size_per_device": args.batch_size, "world_size": world_size(),
        "grad_accum_steps": args.grad_accum_steps, "mixup": args.mixup, "cutmix": args.cutmix,
        "label_smoothing": args.label_smoothing, "augment": args.augment,
        "teacher": args.teacher, "kd": vars(kd) if kd else None, "eval": metrics,
        "train_loss": float(train_out.training_loss), "train_time_s": train_time,
        "device": resolve_device(args.device), "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
    }
    out = Path(args.output_dir)
    if trainer.is_world_process_zero():
        with atomic_dir(out, overwrite=True) as staging:
            model.save_pretrained(staging)
            if ctx.image_processor is not None:
                ctx.image_processor.save_pretrained(staging)
            for extra in ("width_plan.json", "plots"):
                src = source / extra
                if src.is_dir():
                    shutil.copytree(src, staging / extra)
                elif src.exists():
                    shutil.copy2(src, staging / extra)
            write_report(staging, report)
        if not args.keep_checkpoints:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return FineTuneOutcome(model=model, report=report, output_dir=out, metrics=metrics)


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Per-layer widths + sha256 over every tensor (name, shape, bytes): equal iff the models are equal."""
    import torch

    from ..report import layer_widths

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return {"widths": layer_widths(model), "sha256": h.hexdigest()}


def run(args: argparse.Namespace) -> int:
    outcome = execute(args)
    acc = outcome.metrics.get("accuracy")
    print(f"fine-tuned {args.model} for {args.epochs:g} epochs"
          + (f": eval accuracy {100 * acc:.2f} %" if acc is not None else ""))
    print(f"saved to {outcome.output_dir}")
    return 0
