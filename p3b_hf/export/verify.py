"""Running an export and checking it: the onnxruntime CPU session, logits of ONNX and PyTorch for any number of
images, and their comparison (max / mean |delta logit|, top-1 agreement) -- what every export is verified
with before anything is written."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from .stack import ExportError, require_onnx

DEFAULT_TOLERANCE = 1e-3


def session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` (``threads`` intra-op threads, no spin-waiting, so that
    round-robin timing against PyTorch is fair)."""
    ort = require_onnx()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from e


def onnx_logits(sess: Any, pixel_values: np.ndarray | torch.Tensor, chunk: int = 64) -> np.ndarray:
    """Logits of an ORT session for any number of images (static-batch models run in padded chunks)."""
    x = (
        pixel_values.detach().cpu().numpy()
        if isinstance(pixel_values, torch.Tensor)
        else np.asarray(pixel_values)
    )
    x = np.ascontiguousarray(x, dtype=np.float32)
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or chunk
    outs = []
    for i in range(0, len(x), step):
        part = x[i : i + step]
        n = len(part)
        if fixed and n < fixed:
            part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), np.float32)])
        outs.append(sess.run(None, {inp.name: part})[0][:n])
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def torch_logits(model: nn.Module, pixel_values: torch.Tensor, chunk: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(pixel_values), chunk):
        y = model(pixel_values=pixel_values[i : i + chunk])
        out.append((y.logits if hasattr(y, "logits") else y).float().numpy())
    return np.concatenate(out)


def compare_logits(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """max / mean |delta logit|, the largest |logit| (for scale) and top-1 agreement."""
    d = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    return {
        "max_abs_diff": float(d.max()) if d.size else 0.0,
        "mean_abs_diff": float(d.mean()) if d.size else 0.0,
        "max_abs_logit": float(np.abs(reference).max()) if reference.size else 0.0,
        "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()) if len(reference) else 1.0,
        "samples": int(len(reference)),
    }
