"""``p3b-hf export`` on a model dir: the checks before any work (ONNX stack, a p3b_hf pruned model, a writable
target), the export into a staging dir (:mod:`.pipeline`), the report, and the atomic rename; any failure is
one :class:`p3b_hf.errors.P3BError` and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.families import pruned_model_types
from .deploy import FOLDS, GRAPHS
from .files import ONNX_DIR, REPORT_NAME, _commit, _staging
from .options import ExportOptions
from .pipeline import _export_into
from .stack import ExportError, require_onnx
from .verify import DEFAULT_TOLERANCE

#: what `p3b-hf export` accepts: the pruned format of every supported family
P3B_MODEL_TYPES = pruned_model_types()


@dataclass
class ExportResult:
    output_dir: Path
    files: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def export(options: ExportOptions, log: Callable[[str], None] = print) -> ExportResult:
    """``p3b-hf export``: :func:`export_model_dir` with ``options`` (torch threads set from ``threads``)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    o = options
    data_kwargs = {
        "image_column": o.image_column,
        "label_column": o.label_column,
        "train_split": o.train_split,
        "eval_split": o.eval_split,
    }
    return export_model_dir(
        o.model,
        output_dir=o.output_dir,
        quantize=o.quantize,
        calibration_dataset=o.calibration_dataset,
        calibration_samples=o.calibration_samples,
        dataset=o.dataset,
        data_kwargs=data_kwargs,
        max_eval_samples=o.max_eval_samples,
        opset=o.opset,
        static_batch=o.static_batch,
        fold=o.fold,
        graph=o.graph,
        tolerance=o.tolerance,
        verify_samples=o.verify_samples,
        int8_min_agreement=o.int8_min_agreement,
        speed=o.speed,
        speed_repeats=o.speed_repeats,
        dense_model=o.dense_model,
        threads=o.threads,
        seed=o.seed,
        log=log,
    )


def export_model_dir(
    model_dir: str | os.PathLike,
    *,
    output_dir: str | os.PathLike | None = None,
    quantize: str | None = None,
    calibration_dataset: str | None = None,
    calibration_samples: int = 128,
    dataset: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    max_eval_samples: int | None = None,
    opset: int | None = None,
    static_batch: int | None = None,
    fold: str = "all",
    graph: str = "deploy",
    tolerance: float = DEFAULT_TOLERANCE,
    verify_samples: int = 16,
    int8_min_agreement: float | None = None,
    speed: bool = False,
    speed_repeats: int = 5,
    dense_model: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a p3b_hf model dir to ONNX (``DIR/onnx/`` by default), verify it, optionally int8 + accuracy.

    Steps: checks (onnx stack installed, a p3b_hf model dir, target writable) -> deploy module ->
    ``model.onnx`` (a dynamic batch axis unless ``static_batch``) -> verification against the PyTorch model
    (``tolerance`` on max |delta logit|) ->
    ``model_int8.onnx`` (``quantize="int8"``: dynamic, or static with ``calibration_dataset``) ->
    accuracy of PyTorch / fp32 / int8 on the eval split (``dataset``) -> optional speed (``speed``) ->
    ``export_report.json`` -> atomic rename. Any failure raises one :class:`P3BError` and leaves
    nothing behind.
    """
    from ..loading import load_config, load_image_processor, load_model
    from ..models.locator import require_supported_config
    from ..report import portable

    t0 = time.time()
    require_onnx()
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize {quantize!r}: only int8 is supported.")
    if calibration_dataset and quantize is None:
        quantize = "int8"  # a calibration set only makes sense for static int8
    if tolerance is None or not tolerance >= 0:
        raise ExportError(f"--tolerance {tolerance!r} must be a non-negative number (max |delta logit|).")
    if calibration_samples < 1 or verify_samples < 1:
        raise ExportError("--calibration-samples and --verify-samples must be >= 1.")
    if static_batch is not None and static_batch < 1:
        raise ExportError(
            f"--static-batch {static_batch} must be >= 1 (or left out for a dynamic batch axis)."
        )
    if fold not in FOLDS or graph not in GRAPHS:
        raise ExportError(f"--fold must be one of {FOLDS} and --graph one of {GRAPHS}.")
    src = Path(model_dir)
    config = load_config(str(src))  # one CheckpointError for missing / non-model dirs
    require_supported_config(config)  # ResNet, CLIP, ...: the one clear error naming every supported class
    if getattr(config, "model_type", None) not in P3B_MODEL_TYPES:
        raise ExportError(
            f"{src} is not a p3b_hf pruned model (model_type {getattr(config, 'model_type', None)!r}); "
            "give the output dir of `p3b-hf prune` or `p3b-hf finetune` (config.json with model_type "
            f"{' / '.join(P3B_MODEL_TYPES)})."
        )
    if output_dir is None and not src.is_dir():
        raise ExportError(
            f"--model {model_dir} is not a local directory (a Hub id?); give --output-dir for the ONNX "
            "files, or download the model dir first."
        )
    target = Path(output_dir) if output_dir else src / ONNX_DIR
    staging = _staging(target)
    try:
        report = _export_into(
            staging,
            src,
            config,
            quantize=quantize,
            calibration_dataset=calibration_dataset,
            calibration_samples=calibration_samples,
            dataset=dataset,
            data_kwargs=data_kwargs or {},
            max_eval_samples=max_eval_samples,
            opset=opset,
            dynamic_batch=static_batch is None,
            batch_size=static_batch or 1,
            fold=fold,
            graph=graph,
            tolerance=tolerance,
            verify_samples=verify_samples,
            int8_min_agreement=int8_min_agreement,
            speed=speed,
            speed_repeats=speed_repeats,
            dense_model=dense_model,
            threads=threads,
            seed=seed,
            log=log,
            load_model=load_model,
            load_image_processor=load_image_processor,
        )
        report["wall_time_s"] = time.time() - t0
        report["output_dir"] = ONNX_DIR if output_dir is None else str(target)
        report = portable(report)  # names, not this machine's paths: the report is pushed with --with-onnx
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=1))
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output_dir=target, files=files, report=report)
