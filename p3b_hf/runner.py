"""The one orchestrator of a run: :func:`prune` and :func:`finetune`.

Every entry point -- ``p3b-hf prune`` / ``finetune``, ``p3b-hf compare``, the demo, ``recipes/run.py``
and the dev scripts -- builds typed options (:mod:`p3b_hf.options`, plus the method's own dataclass) and
calls one of these functions; nobody builds or re-parses command lines. A run:

1. checks the options (before anything is loaded), joins the process group under DDP, seeds;
2. loads model (fp32), image processor and data; gives the model a fresh head for the target labels;
3. builds transformed datasets and the Mixup/CutMix collator;
4. calls the method (``prune``) or trains (``finetune``) -- methods know nothing of output directories;
   with several eval sets (``--eval-split a,b``, or domains: ``--test-domains``) scores the result on each,
   and the source-vs-target gap (docs/data.md "Domains");
5. pads (``--pad-to``), writes model + report + plots into a staging directory and moves it to
   ``output_dir`` in one rename (only the main process writes); removes the checkpoints unless asked.

Dependencies point one way: commands -> runner -> methods -> training / runtime / checkpoints ->
plan / cost -> models.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import (
    PLAN_NAME,
    check_free_space,
    check_output_location,
    check_run_record,
    make_staging_dir,
    output_error,
    output_lock,
    publish,
    recover_output_dir,
    remove_if_empty,
    write_model_files,
)
from .errors import DataError, OptionsError, P3BError
from .latency.options import LatencyOptions
from .methods import METHODS, Method, all_methods, get_method, require_family_kind
from .methods.base import MethodResult, RunContext
from .models.locator import classifier_heads, require_supported_config
from .options import (
    FINETUNE_DEFAULTS,
    DataOptions,
    FinetuneOptions,
    KDOptions,
    OutputOptions,
    PruneOptions,
    TrainOptions,
    cli_fields,
    flag_of,
)
from .padding import check_pad_to
from .report import REPORT_NAME, base_report, domain_gap, layer_widths, plot_widths, write_report
from .runtime import init_distributed, is_main_process, resolve_device, world_size

logger = logging.getLogger(__name__)


@dataclass
class PruneJob:
    """Everything ``p3b-hf prune`` needs. ``method_options``: the method's options dataclass
    (e.g. :class:`~p3b_hf.methods.p3b.config.P3BConfig`); ``None`` = its defaults."""

    prune: PruneOptions
    data: DataOptions
    output: OutputOptions
    train: TrainOptions = field(default_factory=TrainOptions)
    kd: KDOptions = field(default_factory=KDOptions)
    method_options: Any = None
    latency: LatencyOptions = field(default_factory=LatencyOptions)  # --target-speedup etc. (docs/latency.md)


def finetune_train_options(**overrides: Any) -> TrainOptions:
    """:class:`TrainOptions` with the fine-tune command's defaults (the P3B reference fine-tune: 300 epochs,
    batch 128, lr scaled from 5e-4 at a global batch of 512)."""
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(**{**{k: v for k, v in FINETUNE_DEFAULTS.items() if k in names}, **overrides})


@dataclass
class FinetuneJob:
    """Everything ``p3b-hf finetune`` needs."""

    finetune: FinetuneOptions
    data: DataOptions
    output: OutputOptions
    train: TrainOptions = field(default_factory=finetune_train_options)
    kd: KDOptions = field(default_factory=KDOptions)  # an unset --kd-reduction: FineTuneTrainer's, DeiT's


@dataclass
class RunResult:
    """What a run produced: the output directory, its report, the model (on every rank)."""

    output_dir: Path
    report: dict[str, Any]
    model: nn.Module
    metrics: dict[str, float] = field(default_factory=dict)
    context: RunContext | None = None  # prune: what the method ran on (data, datasets, processor)


# ------------------------------------------------------------------------------------------- given options
#: the KD options that tune a distillation (``--teacher`` names it)
KD_TUNING = ("kd_alpha", "kd_temperature", "kd_kind", "kd_reduction")
COMMON_OPTIONS = (PruneOptions, DataOptions, TrainOptions, OutputOptions, KDOptions, FinetuneOptions)


def _flag(name: str) -> str:
    """The command-line flag of the common option field ``name``."""
    for cls in COMMON_OPTIONS:
        for f in cli_fields(cls):
            if f.name == name:
                return flag_of(f)
    return "--" + name.replace("_", "-")


def check_given_kd(given: set[str] | frozenset[str], kd: KDOptions, who: str, needs_teacher: bool) -> None:
    """KD options that would do nothing: tuning flags without ``--teacher`` where distillation needs one
    (``needs_teacher``: P3B, ``p3b-hf finetune``), ``--kd-reduction`` with ``--kd-kind hard``."""
    if needs_teacher and not kd.teacher:
        for name in KD_TUNING:
            if name in given:
                raise OptionsError(
                    f"{_flag(name)} has no effect without --teacher: {who} distils only from a --teacher DIR "
                    "(the dense model fine-tuned on this data set); add --teacher or drop it."
                )
    if kd.kd_kind == "hard" and "kd_reduction" in given:
        raise OptionsError(
            "--kd-reduction scales the soft KL only: with --kd-kind hard (DeiT's hard distillation, a "
            "batch-mean CE to the teacher's argmax) drop it."
        )


def check_given_options(
    method_name: str, given: set[str] | frozenset[str], kd: KDOptions | None = None
) -> None:
    """Refuse, in one :class:`~p3b_hf.errors.OptionsError` naming the right flag, an option the user gave
    (``given``: field names; the CLI's :func:`~p3b_hf.options.given_options`, a recipe stage's keys) that
    ``--method method_name`` would silently ignore: another method's option (``--importance`` with VBP), a
    common option the method declares unused (``--epochs`` with VBP: ``--vbp-epochs``; KD with global), or
    a KD option that cannot act (:func:`check_given_kd`)."""
    method = get_method(method_name)
    given = {str(g).replace("-", "_") for g in given}
    own = {f.name for f in cli_fields(method.options)}
    for name in METHODS:
        if name == method.name:
            continue
        try:
            other = get_method(name)
        except ImportError:  # a method whose optional dependencies are not installed
            continue
        for f in cli_fields(other.options):
            if f.name in given and f.name not in own:
                raise OptionsError(
                    f"{flag_of(f)} is an option of --method {name}, not of --method {method.name}: drop it, or "
                    f"run --method {name}."
                )
    from .latency.options import TARGETS, check_given_latency

    check_given_latency(
        frozenset(given),
        any(t in given for t in TARGETS),
        "add --target-speedup X (or --target-latency-ms T)",
    )
    for name, instead in method.unused_options.items():
        if name in given:
            raise OptionsError(f"{_flag(name)} is not used by --method {method.name}: {instead}.")
    if method.traits.kd == "none":  # a method that declares it does not distil: every KD option is unused
        for name in ("teacher", *KD_TUNING):
            if name in given:
                raise OptionsError(
                    f"{_flag(name)} is not used by --method {method.name}: it does not distil; distil the pruned "
                    "model afterwards with `p3b-hf finetune --model OUT --teacher DIR`."
                )
    if kd is not None:
        check_given_kd(given, kd, f"--method {method.name}", method.kd_needs_teacher)


# ------------------------------------------------------------------------------------------- shared steps
def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and output_dir.is_file():
        raise P3BError(f"--output-dir {output_dir} is a file; give a directory path.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        what = (
            "a previous run (pruning_report.json)" if (output_dir / REPORT_NAME).exists() else "other files"
        )
        raise P3BError(
            f"--output-dir {output_dir} already holds {what}. Choose a new directory or pass "
            "--overwrite to replace it (it is only replaced once the new run has finished)."
        )


def adapt_classifier(model: nn.Module, labels: list[str]) -> bool:
    """Give ``model`` a freshly initialised head for ``labels`` unless it already has exactly that label set.

    ``prune`` and ``finetune`` both do this (one behaviour, logged as one WARNING line naming the old and new
    label count): transformers' ``from_pretrained(..., ignore_mismatched_sizes=True)`` convention, which its
    image-classification example uses for transfer. Transfer pruning fine-tunes on a *new* task, so the
    source head is useless there. Returns True if the head was replaced.
    """
    cfg = model.config
    current = [cfg.id2label[i] for i in range(cfg.num_labels)] if cfg.num_labels else []
    if [str(x) for x in current] == [str(x) for x in labels]:
        return False
    k = len(labels)
    same = " (same count, other label names)" if len(current) == k else ""
    logger.warning(
        "p3b_hf: classifier head replaced, %d -> %d labels%s: the model's labels differ from the data set's, "
        "so a freshly initialised head is trained (transformers' ignore_mismatched_sizes=True convention)",
        len(current),
        k,
        same,
    )
    owner = getattr(model, "module", model)
    for name, old in classifier_heads(model).items():  # every supported family (Swin / ConvNeXt too)
        new = nn.Linear(old.in_features, k, dtype=old.weight.dtype, device=old.weight.device)
        nn.init.trunc_normal_(new.weight, std=0.02)
        nn.init.zeros_(new.bias)
        setattr(owner, name, new)
    cfg.num_labels = k
    cfg.id2label = {i: str(lab) for i, lab in enumerate(labels)}
    cfg.label2id = {str(lab): i for i, lab in enumerate(labels)}
    model.num_labels = k
    return True


def load_data(data: DataOptions, seed: int) -> Any:
    """The raw splits of ``data`` (one :class:`~p3b_hf.errors.DataError` on bad input)."""
    from .data import load_image_dataset

    return load_image_dataset(
        data.dataset,
        image_column=data.image_column,
        label_column=data.label_column,
        train_split=data.train_split,
        eval_split=data.eval_split,
        max_train_samples=data.max_train_samples,
        max_eval_samples=data.max_eval_samples,
        seed=seed,
        domain_column=data.domain_column,
        train_domains=data.train_domains,
        test_domains=data.test_domains,
        source_holdout=data.source_holdout,
        max_bad_images=data.max_bad_images,
        image_check=data.image_check,
    )


def _datasets(
    raw: Any, data: DataOptions, processor: Any, model_config: Any
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Transformed train / primary eval datasets, the collator, and every eval set by name (the primary's
    entry is the same dataset object)."""
    from .data import build_datasets, build_eval_sets, make_collator, model_image_size

    image_size = model_image_size(model_config)  # None: the image processor's (DINOv2)

    train_ds, eval_ds = build_datasets(raw, processor, image_size=image_size, augment=data.augment)
    eval_sets = {raw.primary_eval: eval_ds}
    if len(raw.evals) > 1:
        others = build_eval_sets(raw, processor, image_size=image_size, augment=data.augment)
        eval_sets.update({k: v for k, v in others.items() if k != raw.primary_eval})
    collator = make_collator(
        len(raw.labels),
        mixup=data.mixup,
        cutmix=data.cutmix,
        label_smoothing=data.label_smoothing,
        enabled=data.mixing,
    )
    return train_ds, eval_ds, collator, eval_sets


def _work_dir(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".work")


@contextmanager
def _own_output(output_dir: Path) -> Iterator[None]:
    """Check where the run will write (before any work), lock ``output_dir`` for the run (one run per output
    dir: a second is refused in one line) and repair what a run killed inside ``--overwrite``'s rename left
    (the previous model is put back). Only the main process locks and repairs."""
    check_output_location(output_dir)
    if not is_main_process():
        yield
        return
    with output_lock(output_dir):
        for line in recover_output_dir(output_dir):
            print(f"p3b-hf: {line}", file=sys.stderr)
        yield


@contextmanager
def _one_line_write_errors(output_dir: Path) -> Iterator[None]:
    """A disk that fills up (or turns read-only) mid-run: one :class:`P3BError` naming it and ``--resume``."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        mapped = output_error(e, output_dir)
        if mapped is None:
            raise
        raise mapped from e


#: options that do not change what a run computes (where, how fast, what is logged or kept); every other
#: option is part of the run's identity, which ``--resume`` must not change
NOT_IDENTITY = frozenset(
    {
        "device",
        "num_workers",
        "logging_steps",
        "eval_batch_size",
        "save_steps",
        "save_strategy",
        "max_eval_samples",
        "pad_to",
        "output_dir",
        "overwrite",
        "keep_checkpoints",
        "resume",
        "save_dir",
    }
)


def run_identity(command: str, labels: list[str], *parts: Any, method_options: Any = None) -> dict[str, Any]:
    """What defines a run, for ``--resume``: the command, the label set and every option that changes the
    result (``method.*`` for the method's own)."""
    ident: dict[str, Any] = {"command": command, "labels": [str(x) for x in labels]}
    ident.update({k: v for k, v in _jsonable_options(*parts).items() if k not in NOT_IDENTITY})
    if method_options is not None:
        opts = _jsonable_options(method_options)
        ident.update({f"method.{k}": v for k, v in opts.items() if k not in NOT_IDENTITY | {"prune_ratio"}})
    return ident


def _model_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _start_work_dir(
    output_dir: Path, resume: bool, identity: dict[str, Any], model: nn.Module
) -> tuple[Path, float]:
    """Free space for the checkpoints, then the run record in ``OUTPUT_DIR.work`` (refusing a ``--resume``
    with other options). Returns the work dir and the wall time the run already spent (resumed runs)."""
    work_dir = _work_dir(output_dir)
    if is_main_process():
        check_free_space(output_dir, _model_bytes(model))
    prior = check_run_record(work_dir, identity, resume, write=is_main_process())
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir, prior


def _load(
    model_name: str, data: DataOptions, output: OutputOptions, train: TrainOptions
) -> tuple[nn.Module, Any, Any]:
    """Check the output dir, join DDP, seed, and load model (fp32), image processor and data."""
    from .loading import load_config, load_image_processor, load_model

    init_distributed(train.device)
    check_output_dir(Path(output.output_dir), output.overwrite)
    require_supported_config(load_config(model_name))  # one clear error before weights or data are read
    torch.manual_seed(train.seed)
    model = load_model(model_name)
    return model, load_image_processor(model_name), load_data(data, train.seed)


def _finish(output_dir: Path, staging: Path, work_dir: Path, keep_checkpoints: bool, write: Any) -> None:
    """Main process: fill ``staging`` with ``write(staging)``, then publish it as ``output_dir``; other ranks
    drop their staging dir (ranks renaming the same directory would race)."""
    if not is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        with _one_line_write_errors(output_dir):
            write(staging)
            publish(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not keep_checkpoints:
        shutil.rmtree(work_dir, ignore_errors=True)


def _jsonable_options(*parts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        if dataclasses.is_dataclass(p):
            out.update({k: v for k, v in dataclasses.asdict(p).items()})
    return out


# ------------------------------------------------------------------------------------------- prune
def prune(
    job: PruneJob,
    *,
    dense_eval_metrics: dict[str, float] | None = None,
    dense_eval_sets: dict[str, dict[str, float]] | None = None,
) -> RunResult:
    """Fine-tune + prune ``job.prune.model`` on ``job.data`` with ``job.prune.method``; write the pruned model
    directory (safetensors, per-layer-width config, code files, processor, ``width_plan.json``,
    ``pruning_report.json``, ``plots/``) to ``job.output.output_dir``. ``dense_eval_metrics``: the dense
    baseline's accuracy for the report, when the method does not measure one (P3B); ``dense_eval_sets``
    likewise per eval set (``{name: {accuracy, ...}}``), for the gap's change against the dense model."""
    job.prune.check()
    job.train.check()
    _check_latency(job)
    method = get_method(job.prune.method)
    _check_budget(job, method)
    options = job.method_options if job.method_options is not None else method.options()
    if not isinstance(options, method.options):
        raise P3BError(
            f"method {method.name!r} takes {method.options.__name__}, got {type(options).__name__}."
        )
    output_dir = Path(job.output.output_dir)
    with _own_output(output_dir):
        return _prune(job, method, options, output_dir, dense_eval_metrics, dense_eval_sets)


def _prune(
    job: PruneJob,
    method: Any,
    options: Any,
    output_dir: Path,
    dense_eval_metrics: dict[str, float] | None,
    dense_eval_sets: dict[str, dict[str, float]] | None,
) -> RunResult:
    started = time.time()
    model, processor, raw = _load(job.prune.model, job.data, job.output, job.train)
    require_family_kind(method, model)  # P3B on Swin: one error generated from the traits, nothing written
    check_pad_to(model.config, job.prune.pad_to)  # refused before any training or file (not after it)
    head_reinitialised = adapt_classifier(model, raw.labels)
    identity = run_identity(
        "prune", raw.labels, job.prune, job.data, job.train, job.kd, method_options=options
    )
    work_dir, prior = _start_work_dir(output_dir, job.output.resume, identity, model)
    train_ds, eval_ds, collator, eval_sets = _datasets(raw, job.data, processor, model.config)
    staging = make_staging_dir(output_dir)
    ctx = RunContext(
        model=model,
        image_processor=processor,
        data=raw,
        train_ds=train_ds,
        eval_ds=eval_ds,
        collator=collator,
        train=job.train,
        work_dir=work_dir,
        artifacts_dir=staging,
        prune_ratio=job.prune.prune_ratio,
        kd=job.kd,
        resume=job.output.resume,
        head_reinitialised=head_reinitialised,
        eval_sets=eval_sets,
        started=started - prior,  # a resumed run's wall time includes the interrupted part
    )
    dense = copy.deepcopy(model).cpu()
    if job.latency.active:  # calibrate (or load) the latency model of the dense model as deployed
        from .latency.verify import prepare

        try:
            ctx.latency = prepare(job.latency, copy.deepcopy(dense), log=print)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            remove_if_empty(work_dir)
            raise
    try:
        with _one_line_write_errors(output_dir):
            result = method.run(ctx, options)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _drop_unused_work_dir(work_dir)
        raise
    dense_measured = result.dense_eval_metrics is not None
    if result.dense_eval_metrics is None and dense_eval_metrics is not None:
        result.dense_eval_metrics = dict(dense_eval_metrics)
    return finish_prune(
        job,
        ctx,
        result,
        dense,
        staging,
        dense_eval_sets=dense_eval_sets,
        dense_measured=dense_measured,
        method_options=options,
    )


def _drop_unused_work_dir(work_dir: Path) -> None:
    """A failed run keeps its checkpoints for ``--resume`` but leaves no ``OUT.work`` without any (empty
    per-phase dirs and the run record alone are removed)."""
    from .checkpoints import RUN_RECORD

    if is_main_process() and work_dir.is_dir() and not any(work_dir.glob("**/checkpoint-*")):
        (work_dir / RUN_RECORD).unlink(missing_ok=True)
        remove_if_empty(work_dir)


def score_eval_sets(
    ctx: RunContext,
    result: MethodResult,
    dense: nn.Module,
    dense_eval_sets: dict[str, dict[str, float]] | None = None,
    dense_measured: bool = False,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(pruned, dense)`` metrics per eval set when the run has several (else ``(None, None)``).

    The primary set's entry is the method's own ``eval_metrics`` (the method already scored it); the others
    are scored here. The dense model's are ``dense_eval_sets`` if given, else measured here when the method
    measured the dense model itself (``dense_measured``) on a head trained for the task -- a dense model
    whose head was just re-initialised has no meaningful per-domain accuracy."""
    if len(ctx.eval_sets) < 2:
        return None, None
    primary = next(iter(ctx.eval_sets))
    have = result.eval_metrics.get("accuracy") is not None
    scored = ctx.evaluate_sets(result.pruned_model, skip=(primary,) if have else (), desc="pruned eval")
    pruned = {n: dict(result.eval_metrics) if n == primary and have else scored[n] for n in ctx.eval_sets}
    dense_sets = dict(dense_eval_sets) if dense_eval_sets else None
    if dense_sets is None and dense_measured and not ctx.head_reinitialised:
        have_dense = (result.dense_eval_metrics or {}).get("accuracy") is not None
        scored = ctx.evaluate_sets(dense, skip=(primary,) if have_dense else (), desc="dense eval")
        dense_sets = {
            n: dict(result.dense_eval_metrics or {}) if n == primary and have_dense else scored[n]
            for n in ctx.eval_sets
        }
    return pruned, dense_sets


def finish_prune(
    job: PruneJob,
    ctx: RunContext,
    result: MethodResult,
    dense: nn.Module,
    staging: Path,
    extra: dict[str, Any] | None = None,
    dense_eval_sets: dict[str, dict[str, float]] | None = None,
    dense_measured: bool = False,
    method_options: Any = None,
) -> RunResult:
    """Score every eval set, pad, report and write a method's result (see :func:`prune`).
    ``method_options``: the options the method ran with (default ``job.method_options``). On any error the
    staging dir is removed (and the work dir if empty; a trained run's checkpoints stay for ``--resume``)."""
    try:
        eval_sets, dense_sets = score_eval_sets(ctx, result, dense, dense_eval_sets, dense_measured)
        padding = _pad(result, job.prune.pad_to)
        latency = _verify_latency(job, ctx, result, dense)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_if_empty(ctx.work_dir)
        raise
    report = base_report(
        dense,
        result.pruned_model,
        method=job.prune.method,
        prune_ratio=job.prune.prune_ratio,
        plan=result.plan,
        eval_metrics=result.eval_metrics,
        dense_eval_metrics=result.dense_eval_metrics,
        eval_sets=eval_sets,
        dense_eval_sets=dense_sets,
        domains=ctx.data.domains if ctx.data is not None else None,
        wall_time_s=time.time() - ctx.started,
        extra={
            "history": result.history,
            "dataset": job.data.dataset,
            "base_model": job.prune.model,
            "command": " ".join(sys.argv),
            "options": _jsonable_options(job.prune, job.data, job.train, job.kd),
            "method_options": _method_options_report(
                method_options if method_options is not None else job.method_options, job.prune.prune_ratio
            ),
            "num_labels": ctx.num_labels,
            "head_reinitialised": ctx.head_reinitialised,
            **padding,
            **latency,
            **(extra or {}),
        },
    )

    def write(directory: Path) -> None:
        write_model_files(result.pruned_model, directory, ctx.image_processor, result.plan)
        plot_widths(result.pruned_model, directory / "plots" / "widths.png", dense_config=dense.config)
        if ctx.latency is not None:
            from .latency.plot import plot_latency_model

            plot_latency_model(ctx.latency.model, directory / "plots" / "latency_model.png")
        write_report(directory, report)

    output_dir = Path(job.output.output_dir)
    _finish(output_dir, staging, ctx.work_dir, job.output.keep_checkpoints, write)
    return RunResult(
        output_dir=output_dir,
        report=report,
        model=result.pruned_model,
        metrics=dict(result.eval_metrics),
        context=ctx,
    )


def _method_options_report(options: Any, prune_ratio: float | None) -> dict[str, Any]:
    """The method's options as the run used them: a method option ``prune_ratio`` (P3B's) is the common
    ``--prune-ratio``, not the dataclass default the method replaces."""
    out = _jsonable_options(options)
    if "prune_ratio" in out:
        out["prune_ratio"] = prune_ratio
    return out


def _check_latency(job: PruneJob) -> None:
    """One budget: a latency target replaces --prune-ratio (checked before anything is loaded)."""
    latency = getattr(job, "latency", None)
    if latency is None or not latency.active:
        return
    latency.check()
    if job.prune.prune_ratio is not None:
        from .errors import BudgetError

        raise BudgetError(
            "Give one budget: --prune-ratio (parameters) or --target-speedup / --target-latency-ms (latency), "
            "not both."
        )


def _check_budget(job: PruneJob, method: Method) -> None:
    """Refuse a budget the method does not declare (:class:`~p3b_hf.methods.MethodTraits` ``budgets``) before
    anything is loaded: a method that ignores ``--target-speedup`` would silently prune to another target."""
    latency = getattr(job, "latency", None)
    budget = "latency" if latency is not None and latency.active else "params"
    if budget == "latency" and budget not in method.traits.budgets:
        able = [m.name for m in all_methods() if budget in m.traits.budgets]
        raise OptionsError(
            f"--method {method.name} takes no latency budget (--target-speedup / --target-latency-ms); use "
            f"--prune-ratio, or one of {', '.join('--method ' + n for n in able)}."
        )


def _verify_latency(job: PruneJob, ctx: RunContext, result: MethodResult, dense: nn.Module) -> dict[str, Any]:
    """The report's ``latency`` section: target, prediction and the speed-up measured on the artefact that
    is saved (after ``--pad-to``), dense deployed and timed the same way in the same run (main process)."""
    if ctx.latency is None or not is_main_process():
        return {}
    from .latency.verify import verify

    return {"latency": verify(ctx.latency, job.latency, dense, result.pruned_model)}


def _pad(result: MethodResult, pad_to: int | None) -> dict[str, Any]:
    """``pad_to``: replace the pruned model by its exactly equivalent zero-padded copy; the report keeps
    the unpadded cost next to the padded one."""
    if not pad_to:
        return {}
    from .cost import count_cost
    from .padding import pad_widths

    before = count_cost(result.pruned_model)
    result.pruned_model = pad_widths(result.pruned_model, pad_to)
    return {"pad_to": pad_to, "unpadded": {"params": before["params"], "macs": before["macs"]}}


# ------------------------------------------------------------------------------------------- finetune
REFERENCE_LR, REFERENCE_GLOBAL_BATCH = 5e-4, 512


def scaled_lr(train: TrainOptions, grad_accum_steps: int) -> float:
    """DeiT's linear scaling rule: the reference lr is for a global batch of 512 (``train.lr`` wins)."""
    if train.lr is not None:
        return float(train.lr)
    global_batch = train.batch_size * world_size() * grad_accum_steps
    return REFERENCE_LR * global_batch / REFERENCE_GLOBAL_BATCH


def _labels_of(config: Any) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def check_labels(config: Any, labels: list[str], what: str) -> None:
    """A teacher (or any model that must not get a new head) predicts the data set's labels, in order."""
    theirs = [str(x) for x in labels]
    if _labels_of(config) == theirs:
        return
    raise DataError(
        f"{what} predicts {config.num_labels} labels ({_labels_of(config)[:4]}...) but the data "
        f"set has {len(theirs)} ({theirs[:4]}...). Give a {what} trained on this data set's labels."
    )


def finetune(job: FinetuneJob) -> RunResult:
    """Plain DeiT-recipe fine-tune of a (pruned) model dir, optionally with KD: P3B's second stage, and the
    dense baseline of ``compare`` (``new_head``). The output's ``pruning_report.json`` is the input's
    report plus a ``finetune`` section."""
    job.train.check()
    job.finetune.check()
    if not 0.0 <= job.kd.kd_alpha <= 1.0 or job.kd.kd_temperature <= 0:
        raise P3BError("--kd-alpha must lie in [0, 1] and --kd-temperature be > 0.")
    output_dir = Path(job.output.output_dir)
    with _own_output(output_dir):
        return _finetune(job, output_dir)


def _finetune(job: FinetuneJob, output_dir: Path) -> RunResult:
    from .loading import load_model
    from .training import FineTuneTrainer, compute_accuracy, kd_config

    ft, train = job.finetune, job.train
    started = time.time()
    model, processor, raw = _load(ft.model, job.data, job.output, train)
    # labels that differ from the data set's: a fresh head, logged -- as in prune (``--new-head``: the same)
    head_reinitialised = adapt_classifier(model, raw.labels)
    train_ds, eval_ds, collator, eval_sets = _datasets(raw, job.data, processor, model.config)
    teacher = None
    if job.kd.teacher:
        teacher = load_model(job.kd.teacher)
        check_labels(teacher.config, raw.labels, "--teacher")
    kd = kd_config(job.kd)  # an unset --kd-reduction: FineTuneTrainer applies DeiT's scale
    identity = run_identity("finetune", raw.labels, ft, job.data, train, job.kd)
    work_dir, prior = _start_work_dir(output_dir, job.output.resume, identity, model)
    started -= prior  # a resumed run's wall time includes the interrupted part
    staging = make_staging_dir(output_dir)
    try:
        lr = scaled_lr(train, ft.grad_accum_steps)
        steps_per_epoch = max(1, -(-len(train_ds) // (train.batch_size * world_size() * ft.grad_accum_steps)))
        schedule = (
            {"lr_scheduler_type": "constant", "max_grad_norm": 0.0}
            if ft.schedule == "constant"
            else {
                "lr_scheduler_type": "cosine_with_min_lr",
                "lr_scheduler_kwargs": {"min_lr": min(ft.min_lr, lr)},
            }
        )
        from .training import training_arguments

        targs = training_arguments(
            train,
            work_dir / "finetune",
            learning_rate=lr,
            warmup_steps=int(round(ft.warmup_epochs * steps_per_epoch)),
            gradient_accumulation_steps=ft.grad_accum_steps,
            eval_strategy="epoch" if ft.eval_each_epoch else "no",
            save_total_limit=1,
            **schedule,
        )
        trainer = FineTuneTrainer(
            model=model,
            args=targs,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            data_collator=collator,
            processing_class=processor,
            compute_metrics=compute_accuracy,
            teacher=teacher,
            kd=kd,
        )
        t0 = time.time()
        from .checkpoints import last_complete_checkpoint

        resume = last_complete_checkpoint(targs.output_dir) if job.output.resume else None
        with _one_line_write_errors(output_dir):
            train_out = trainer.train(resume_from_checkpoint=resume)
        train_time = time.time() - t0
        metrics = {
            k.removeprefix("eval_"): float(v)
            for k, v in trainer.evaluate().items()
            if isinstance(v, (int, float))
        }
        set_metrics = None
        if len(eval_sets) > 1:
            from .training import evaluate_accuracy

            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            batch = train.eval_batch_size or train.batch_size
            set_metrics = {
                name: evaluate_accuracy(
                    unwrapped, ds, batch_size=batch, device=resolve_device(train.device), desc=f"eval {name}"
                )
                for name, ds in eval_sets.items()
            }
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _drop_unused_work_dir(work_dir)
        raise
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    source = Path(ft.model)
    report: dict[str, Any] = {}
    if (source / REPORT_NAME).exists():
        report = json.loads((source / REPORT_NAME).read_text())
    report.setdefault("method", getattr(model.config, "pruning_method", None) or "finetune")
    report.setdefault("base_model", getattr(model.config, "base_model_name_or_path", None) or ft.model)
    report.setdefault("dataset", job.data.dataset)
    report.setdefault("widths", layer_widths(model))
    report["finetune"] = {
        "source_model": ft.model,
        "dataset": job.data.dataset,
        "epochs": train.epochs,
        "lr": lr,
        "min_lr": ft.min_lr,
        "schedule": ft.schedule,
        "weight_decay": train.weight_decay,
        "batch_size_per_device": train.batch_size,
        "world_size": world_size(),
        "grad_accum_steps": ft.grad_accum_steps,
        "mixup": job.data.mixup,
        "cutmix": job.data.cutmix,
        "label_smoothing": job.data.label_smoothing,
        "augment": job.data.augment,
        "teacher": job.kd.teacher,
        "kd": dataclasses.asdict(trainer.kd) if trainer.kd else None,
        "eval": metrics,
        "train_loss": float(train_out.training_loss),
        "train_time_s": train_time,
        "wall_time_s": time.time() - started,
        "step_time": trainer.step_timer.summary(),
        "head_reinitialised": head_reinitialised,
        "device": resolve_device(train.device),
        "precision": "bf16" if train.bf16 else "fp16" if train.fp16 else "fp32",
    }
    if set_metrics is not None:
        report["finetune"].update(
            eval_sets=set_metrics,
            domains=raw.domains,
            domain_gap=domain_gap(set_metrics, source=raw.source_eval, target=raw.primary_eval),
        )

    def write(directory: Path) -> None:
        write_model_files(model, directory, processor)
        for extra in (PLAN_NAME, "plots"):
            src = source / extra
            if src.is_dir():
                shutil.copytree(src, directory / extra, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, directory / extra)
        write_report(directory, report)

    _finish(output_dir, staging, work_dir, job.output.keep_checkpoints, write)
    trainer.accelerator.wait_for_everyone()
    return RunResult(output_dir=output_dir, report=report, model=model, metrics=metrics)
