"""The shared steps of a pruning run: load model + processor + data, adapt the classifier to the target
labels, build TrainingArguments, evaluate, and save the run atomically.

``p3b-hf prune`` and ``p3b-hf compare`` use these; methods get a :class:`PruneContext` and only do
what is specific to them (choose channels, train).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import TrainingArguments

from .errors import BudgetError, P3BError
from .models.locator import locate
from .report import (
    REPORT_NAME,
    base_report,
    last_complete_checkpoint,
    make_staging_dir,
    plot_widths,
    write_report,
)


@dataclass
class PruneContext:
    """Everything a method needs; built once by :func:`prepare_context`."""

    args: argparse.Namespace
    model: nn.Module  # dense, fp32, classifier adapted to the target labels
    image_processor: Any
    data: Any  # p3b_hf.data.ImageData
    train_ds: Any
    eval_ds: Any
    collator: Any
    num_labels: int
    staging_dir: Path  # final outputs go here; renamed to output_dir at the end
    work_dir: Path  # Trainer checkpoints (persist across crashes; removed after success)
    started: float = field(default_factory=time.time)
    # True when adapt_classifier gave the model a fresh head for the data set's labels: the model was not
    # trained on this task, so post-training methods (VBP) must not treat it as the task-trained model.
    head_reinitialised: bool = False


def check_ratio(ratio: float | None, name: str = "--prune-ratio") -> None:
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise BudgetError(f"{name}={ratio} is impossible: give the fraction of whole-model parameters to remove, "
                          "strictly between 0 and 1 (e.g. 0.5).")


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and output_dir.is_file():
        raise P3BError(f"--output-dir {output_dir} is a file; give a directory path.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        what = "a previous run (pruning_report.json)" if (output_dir / REPORT_NAME).exists() else "other files"
        raise P3BError(f"--output-dir {output_dir} already holds {what}. Choose a new directory or pass "
                       "--overwrite to replace it (it is only replaced once the new run has finished).")


def adapt_classifier(model: nn.Module, labels: list[str]) -> bool:
    """Give ``model`` a freshly initialised head for ``labels`` unless it already has exactly that label set.

    Transfer pruning fine-tunes on a *new* task, so the source head is usually useless. Returns True
    if the head was replaced.
    """
    cfg = model.config
    current = [cfg.id2label[i] for i in range(cfg.num_labels)] if cfg.num_labels else []
    if [str(x) for x in current] == [str(x) for x in labels]:
        return False
    mods = locate(model)
    k = len(labels)
    for name, old in mods.heads.items():
        new = nn.Linear(old.in_features, k, dtype=old.weight.dtype, device=old.weight.device)
        nn.init.trunc_normal_(new.weight, std=0.02)
        nn.init.zeros_(new.bias)
        setattr(mods.model, name, new)
    cfg.num_labels = k
    cfg.id2label = {i: str(lab) for i, lab in enumerate(labels)}
    cfg.label2id = {str(lab): i for i, lab in enumerate(labels)}
    model.num_labels = k
    return True


def resolve_device(name: str | None) -> str:
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise P3BError("--device cuda was requested but no CUDA GPU is visible; use --device cpu.")
    return name


def training_arguments(ctx: PruneContext, phase: str, *, epochs: float, lr: float, weight_decay: float,
                       **overrides: Any) -> TrainingArguments:
    """TrainingArguments shared by every method's training phase (checkpoints under ``work_dir/phase``)."""
    a = ctx.args
    device = resolve_device(getattr(a, "device", None))
    kw: dict[str, Any] = dict(
        output_dir=str(ctx.work_dir / phase), num_train_epochs=epochs, learning_rate=lr, weight_decay=weight_decay,
        per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=getattr(a, "eval_batch_size", None)
        or a.batch_size, remove_unused_columns=False, label_names=["labels"], seed=a.seed, data_seed=a.seed,
        report_to="none", save_strategy="epoch", save_total_limit=2, eval_strategy="no", logging_strategy="steps",
        logging_steps=max(1, getattr(a, "logging_steps", 50)), bf16=bool(getattr(a, "bf16", False)),
        fp16=bool(getattr(a, "fp16", False)), use_cpu=device == "cpu",
        dataloader_num_workers=getattr(a, "num_workers", 0), ddp_find_unused_parameters=False,
        lr_scheduler_type="cosine", warmup_steps=0, disable_tqdm=False,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: Any, batch_size: int = 256, device: str | None = None,
                      desc: str = "eval") -> dict[str, float]:
    """Top-1 accuracy (and mean CE loss) of ``model`` on a transformed eval dataset."""
    if dataset is None or len(dataset) == 0:
        return {}
    device = device or next(model.parameters()).device.type
    was_training = model.training
    model.eval()
    model.to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    correct = total = 0
    loss_sum = 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        x = batch["pixel_values"].to(device)
        y = batch["labels"].to(device)
        dtype = next(model.parameters()).dtype
        logits = model(pixel_values=x.to(dtype)).logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        total += y.numel()
    model.train(was_training)
    return {"accuracy": correct / total, "loss": loss_sum / total, "samples": total}


def init_distributed(args: argparse.Namespace) -> None:
    """Join the process group now when launched by torchrun/accelerate (WORLD_SIZE > 1).

    The Trainer would do it only when the first TrainingArguments is built; methods that compute
    statistics before training (VBP, global pruning) need it earlier to shard their data and to
    broadcast their plan, and the rendezvous keeps ranks in step from the start.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=resolve_device(getattr(args, "device", None)) == "cpu")


def resume_checkpoint(ctx_or_args: Any, folder: str | os.PathLike) -> str | None:
    """The checkpoint ``--resume`` continues from: the newest *complete* one in ``folder``, else None."""
    args = getattr(ctx_or_args, "args", ctx_or_args)
    return last_complete_checkpoint(folder) if getattr(args, "resume", False) else None


def load_inputs(args: argparse.Namespace) -> tuple[nn.Module, Any, Any]:
    """Check ``--output-dir``, seed, and load model (fp32), image processor and data from CLI-style args."""
    from . import data as data_lib
    from .loading import load_image_processor, load_model

    init_distributed(args)
    check_output_dir(Path(args.output_dir), getattr(args, "overwrite", False))
    torch.manual_seed(args.seed)
    model = load_model(args.model)
    processor = load_image_processor(args.model)
    data = data_lib.load_image_dataset(
        args.dataset, image_column=args.image_column, label_column=args.label_column, train_split=args.train_split,
        eval_split=args.eval_split, max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples, seed=args.seed)
    return model, processor, data


def prepare_context(args: argparse.Namespace) -> PruneContext:
    """Load everything for a pruning run from CLI-style args (see ``p3b_hf.commands.prune``)."""
    from . import data as data_lib

    check_ratio(getattr(args, "prune_ratio", None))
    output_dir = Path(args.output_dir)
    model, processor, data = load_inputs(args)
    head_reinitialised = adapt_classifier(model, data.labels)
    image_size = data_lib.model_image_size(model.config)  # None: the processor's (DINOv2)
    train_ds, eval_ds = data_lib.build_datasets(data, processor, image_size=image_size, augment=args.augment)
    collator = data_lib.make_collator(len(data.labels), mixup=args.mixup, cutmix=args.cutmix,
                                      label_smoothing=args.label_smoothing,
                                      enabled=args.mixup > 0 or args.cutmix > 0 or args.label_smoothing > 0)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_dir(output_dir)
    work_dir = output_dir.with_name(output_dir.name + ".work")
    work_dir.mkdir(parents=True, exist_ok=True)
    return PruneContext(args=args, model=model, image_processor=processor, data=data, train_ds=train_ds,
                        eval_ds=eval_ds, collator=collator, num_labels=len(data.labels), staging_dir=staging,
                        work_dir=work_dir, head_reinitialised=head_reinitialised)


def remove_if_empty(path: Path) -> None:
    """Remove ``path`` if it is an empty directory: a run refused before any training leaves no trace,
    while a ``.work`` dir that holds checkpoints (resumable with ``--resume``) is kept."""
    try:
        path.rmdir()
    except OSError:
        pass


def _pad_result(result: Any, pad_to: int | None) -> dict[str, Any]:
    """``--pad-to N``: replace the pruned model by its exactly equivalent zero-padded copy
    (:func:`p3b_hf.align.pad_widths`); the report keeps the unpadded cost next to the padded one."""
    if not pad_to:
        return {}
    from .align import pad_widths
    from .cost import count_cost

    before = count_cost(result.pruned_model)
    result.pruned_model = pad_widths(result.pruned_model, pad_to)
    return {"pad_to": pad_to, "unpadded": {"params": before["params"], "macs": before["macs"]}}


def finish_run(ctx: PruneContext, result: Any, dense_model_for_cost: nn.Module) -> dict[str, Any]:
    """Write model, plan, report and plots into the staging dir, then move it to ``--output-dir``."""
    from .report import _write_model

    a = ctx.args
    staging = ctx.staging_dir
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: every rank holds the same model; only rank 0 writes
        shutil.rmtree(staging, ignore_errors=True)  # (ranks renaming the same --output-dir race otherwise)
        return base_report(dense_model_for_cost, result.pruned_model, method=a.method,
                           prune_ratio=getattr(a, "prune_ratio", None), plan=result.plan,
                           eval_metrics=result.eval_metrics, dense_eval_metrics=result.dense_eval_metrics,
                           wall_time_s=time.time() - ctx.started)
    try:
        padding = _pad_result(result, getattr(a, "pad_to", None))
        _write_model(result.pruned_model, staging, ctx.image_processor, result.plan)
        report = base_report(
            dense_model_for_cost, result.pruned_model, method=a.method, prune_ratio=getattr(a, "prune_ratio", None),
            plan=result.plan, eval_metrics=result.eval_metrics, dense_eval_metrics=result.dense_eval_metrics,
            wall_time_s=time.time() - ctx.started,
            extra={"history": result.history, "dataset": a.dataset, "base_model": a.model,
                   "command": " ".join(sys.argv), "num_labels": ctx.num_labels, **padding})
        plot_widths(result.pruned_model, staging / "plots" / "widths.png", dense_config=dense_model_for_cost.config)
        write_report(staging, report)
        out = Path(a.output_dir)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not getattr(a, "keep_checkpoints", False):
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return report


def summarize(report: dict[str, Any]) -> str:
    d, p = report["dense"], report["pruned"]
    acc = report.get("eval", {}).get("accuracy")
    dacc = (report.get("dense_eval") or {}).get("accuracy")
    lines = [
        f"method            {report['method']}",
        f"params            {d['params'] / 1e6:8.3f} M -> {p['params'] / 1e6:8.3f} M "
        f"({100 * report['achieved_param_reduction']:.1f} % removed)",
        f"MACs/image        {d['macs'] / 1e9:8.3f} G -> {p['macs'] / 1e9:8.3f} G "
        f"({100 * report['achieved_mac_reduction']:.1f} % removed)",
    ]
    if acc is not None:
        lines.append(f"accuracy          dense {dacc if dacc is None else f'{100 * dacc:.2f} %'} -> pruned "
                     f"{100 * acc:.2f} %")
    if report.get("wall_time_s") is not None:
        lines.append(f"wall time         {report['wall_time_s']:.1f} s")
    return "\n".join(lines)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
