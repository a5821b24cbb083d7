"""The steps of one export into its staging dir: load, deployable module, ``model.onnx``, verification against
PyTorch, optional int8 (with its checks), accuracy of PyTorch / fp32 / int8 on an eval split, optional speed;
returns the report. Kept apart from :mod:`.model_dir`, which owns the checks before and the rename after."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .deploy import LogitsModule, _image_shape, deploy_module, residual_index_ops
from .eval_data import _load_split, _stack
from .files import FP32_NAME, INT8_NAME, SCHEMA, _file_info
from .int8 import quantize_int8
from .onnx_export import DEFAULT_OPSET, export_onnx
from .speed import DeploySpeed
from .stack import ExportError
from .verify import compare_logits, onnx_logits, session, torch_logits


def _export_into(
    staging: Path,
    src: Path,
    config: Any,
    *,
    quantize: str | None,
    calibration_dataset: str | None,
    calibration_samples: int,
    dataset: str | None,
    data_kwargs: dict[str, Any],
    max_eval_samples: int | None,
    opset: int | None,
    dynamic_batch: bool,
    batch_size: int,
    fold: str,
    graph: str,
    tolerance: float,
    verify_samples: int,
    int8_min_agreement: float | None,
    speed: bool,
    speed_repeats: int,
    dense_model: str | None,
    threads: int | None,
    seed: int,
    log: Callable[[str], None],
    load_model: Callable,
    load_image_processor: Callable,
) -> dict[str, Any]:
    import onnxruntime

    from .. import __version__

    model = load_model(str(src)).eval()
    dense = dense_source = None
    if speed:  # the dense original first: a missing one is refused before any export work
        from ..bench import dense_model_for

        dense, dense_source = dense_model_for(model, dense_model)
    processor = load_image_processor(str(src))
    channels, size = _image_shape(config, processor)
    eval_ds = eval_origin = None
    if dataset:
        eval_ds, eval_origin = _load_split(
            dataset,
            "eval",
            processor,
            config,
            max_samples=max_eval_samples,
            seed=seed,
            data_kwargs=data_kwargs,
        )
        x_verify, _ = _stack(eval_ds, verify_samples)
        verify_origin = f"first {len(x_verify)} eval images of {eval_origin}"
    else:
        x_verify = torch.randn(
            verify_samples, channels, size, size, generator=torch.Generator().manual_seed(seed)
        )
        verify_origin = (
            f"{verify_samples} random N(0,1) pixel tensors (seed {seed}; give --dataset for real images)"
        )

    module = deploy_module(model, fold=fold, graph=graph)
    graph = (
        "hf" if isinstance(module, LogitsModule) else graph
    )  # what was exported (non-ViT families: always hf)
    index_ops = residual_index_ops(module)
    metadata = {
        "producer": f"p3b_hf {__version__}",
        "p3b_hf.graph": graph,
        "p3b_hf.fold": fold,
        "model_type": str(config.model_type),
        "image_size": str(size),
        "id2label": json.dumps({int(k): v for k, v in config.id2label.items()}),
    }
    t = time.time()
    log(
        f"[export] {src} -> ONNX (opset {opset or DEFAULT_OPSET}, graph {graph}, fold {fold}, "
        f"{'dynamic batch' if dynamic_batch else f'batch {batch_size}'}) ..."
    )
    fp32 = export_onnx(
        module,
        staging / FP32_NAME,
        config,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        opset=opset,
        metadata=metadata,
        image_size=size,
    )
    export_s = time.time() - t
    ref = torch_logits(model, x_verify)
    sess = session(fp32, threads)
    check = compare_logits(ref, onnx_logits(sess, x_verify))
    log(
        f"[export] verified in onnxruntime {onnxruntime.__version__}: max |delta logit| {check['max_abs_diff']:.2e} "
        f"(tolerance {tolerance:g}), top-1 agreement {100 * check['top1_agreement']:.1f} % on {verify_origin}"
    )
    if not check["max_abs_diff"] <= tolerance:  # also catches NaN
        raise ExportError(
            f"The ONNX model disagrees with PyTorch: max |delta logit| {check['max_abs_diff']:.3g} > "
            f"--tolerance {tolerance:g} (top-1 agreement {100 * check['top1_agreement']:.1f} %) on "
            f"{verify_origin}; nothing was written. Try --fold none, --graph hf or another --opset; "
            "raise --tolerance only if the difference is explained."
        )
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "model_dir": str(src),
        "model_type": config.model_type,
        "format": "onnx",
        "opset": opset or DEFAULT_OPSET,
        "graph": graph,
        "fold": fold,
        "residual_index_ops": index_ops,
        "batch": "dynamic" if dynamic_batch else batch_size,  # dynamic unless --static-batch N
        "input": {
            "name": "pixel_values",
            "shape": ["batch" if dynamic_batch else batch_size, channels, size, size],
            "preprocessing": "the model dir's preprocessor_config.json (AutoImageProcessor)",
        },
        "output": {"name": "logits", "labels": "config.json id2label"},
        "versions": {
            "p3b_hf": __version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnx": importlib.import_module("onnx").__version__,
            "onnxscript": importlib.import_module("onnxscript").__version__,
        },
        "files": {"fp32": _file_info(fp32)},
        "export_s": export_s,
        "verification": {"inputs": verify_origin, "tolerance": tolerance, "fp32_vs_torch": check},
    }
    int8_sess = None
    if quantize == "int8":
        calib = None
        if calibration_dataset:
            calib_ds, calib_origin = _load_split(
                calibration_dataset,
                "train",
                processor,
                config,
                max_samples=calibration_samples,
                seed=seed,
                data_kwargs=data_kwargs,
            )
            calib_x, _ = _stack(calib_ds, calibration_samples, seed=seed, shuffle=True)
            calib = calib_x.numpy()
        t = time.time()
        log(
            f"[export] int8 ({'static, ' + str(len(calib)) + ' calibration images' if calib is not None else 'dynamic'}) ..."
        )
        info = quantize_int8(fp32, staging / INT8_NAME, calibration=calib, work_dir=staging)
        if calibration_dataset:
            info["calibration"] = f"{len(calib)} random images (seed {seed}) of {calib_origin}"
        info["quantize_s"] = time.time() - t
        int8_sess = session(staging / INT8_NAME, threads)
        q_check = compare_logits(ref, onnx_logits(int8_sess, x_verify))
        q_vs_fp32 = compare_logits(onnx_logits(sess, x_verify), onnx_logits(int8_sess, x_verify))
        report["files"]["int8"] = _file_info(staging / INT8_NAME)
        report["int8"] = info
        report["verification"]["int8_vs_torch"] = q_check
        report["verification"]["int8_vs_fp32"] = q_vs_fp32
        log(
            f"[export] int8: max |delta logit| vs fp32 {q_vs_fp32['max_abs_diff']:.3g}, top-1 agreement "
            f"{100 * q_vs_fp32['top1_agreement']:.1f} %"
        )
        if not np.isfinite(q_vs_fp32["max_abs_diff"]):
            raise ExportError("The int8 model produces non-finite logits; nothing was written.")
        if int8_min_agreement is not None and q_vs_fp32["top1_agreement"] < int8_min_agreement:
            raise ExportError(
                f"The int8 model agrees with fp32 on only {100 * q_vs_fp32['top1_agreement']:.1f} % of "
                f"top-1 predictions (< --int8-min-agreement {int8_min_agreement:g}); nothing was written. "
                "Try static int8 with --calibration-dataset, or keep fp32."
            )
    if eval_ds is not None:
        log(f"[export] accuracy on {eval_origin} ...")
        report["accuracy"] = _accuracy(model, eval_ds, sess, int8_sess, eval_origin)
        a = report["accuracy"]
        log(
            "[export] top-1: PyTorch {:.2f} %, ONNX fp32 {:.2f} %{}".format(
                100 * a["torch"],
                100 * a["onnx_fp32"],
                f", ONNX int8 {100 * a['onnx_int8']:.2f} % ({a['int8_minus_fp32_points']:+.2f} points)"
                if int8_sess
                else "",
            )
        )
    if speed:
        timer = DeploySpeed(
            dense,
            batch_size=1,
            repeats=speed_repeats,
            threads=threads,
            opset=opset,
            fold=fold,
            dense_source=dense_source,
        )
        reuse = dynamic_batch or batch_size == 1  # the files can be timed at batch 1 as they are
        files = {"ort-fp32": fp32, **({"ort-int8": staging / INT8_NAME} if int8_sess is not None else {})}
        try:
            report["speed"] = timer.measure(model, pruned_onnx=files if reuse else None)
        finally:
            timer.close()
        s = report["speed"]
        log(
            f"[export] speed (CPU, batch 1, {s['threads']} thread(s)): deployable {s['deploy_speed_vs_dense']:.2f}x "
            f"its dense ONNX model, {s['deploy_vs_dense_eager']:.2f}x dense PyTorch eager "
            f"(eager pruned: {s['eager_speed_vs_dense']:.2f}x)"
        )
    return report


@torch.no_grad()
def _accuracy(model: nn.Module, eval_ds: Any, sess: Any, int8_sess: Any, origin: str) -> dict[str, Any]:
    loader = torch.utils.data.DataLoader(eval_ds, batch_size=64, shuffle=False)
    n = 0
    correct = {"torch": 0, "onnx_fp32": 0, "onnx_int8": 0}
    agree = 0
    for batch in loader:
        x, y = batch["pixel_values"].float(), batch["labels"].numpy()
        preds = {"torch": torch_logits(model, x).argmax(-1), "onnx_fp32": onnx_logits(sess, x).argmax(-1)}
        if int8_sess is not None:
            preds["onnx_int8"] = onnx_logits(int8_sess, x).argmax(-1)
            agree += int((preds["onnx_int8"] == preds["onnx_fp32"]).sum())
        for k, p in preds.items():
            correct[k] += int((p == y).sum())
        n += len(y)
    out: dict[str, Any] = {
        "eval_split": origin,
        "samples": n,
        "torch": correct["torch"] / n,
        "onnx_fp32": correct["onnx_fp32"] / n,
    }
    if int8_sess is not None:
        out["onnx_int8"] = correct["onnx_int8"] / n
        out["int8_minus_fp32_points"] = 100 * (out["onnx_int8"] - out["onnx_fp32"])
        out["int8_fp32_top1_agreement"] = agree / n
    return out
