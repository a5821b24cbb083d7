"""int8 from an fp32 ONNX file with onnxruntime's quantization tools: dynamic, or static QDQ calibrated on
images; only MatMul / Gemm, 7-bit weight range (why: :func:`quantize_int8`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .stack import ExportError, _quiet, require_onnx
from .verify import session

QUANT_OPS = ["MatMul", "Gemm"]


class _CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a stack of images, in the model's batch."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int | None) -> None:
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.input_name = input_name
        self.batch = batch or 1
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos + self.batch > len(self.images):
            return None
        part = self.images[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return {self.input_name: part}

    def rewind(self) -> None:
        self.pos = 0


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    calibration: np.ndarray | None = None,
    work_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """int8 model from an fp32 ONNX file with onnxruntime's quantization tools.

    ``calibration is None``: **dynamic** quantization (int8 weights, activations quantized per call:
    ``DynamicQuantizeLinear`` + ``MatMulInteger``). Otherwise **static** QDQ quantization (uint8
    activations with ranges from ``calibration`` images, MinMax). Weights are int8 per output channel
    with ``reduce_range`` (7-bit): the u8 x s8 kernels of AVX2 CPUs without VNNI add pairs of products in
    int16 and saturate with full 8-bit weights -- on the dev-bench P3B model that cost 39 % of the top-1
    agreement with fp32 (per-tensor) or 81 % (per-channel), reduce_range 5 % (docs/export.md).
    Only MatMul/Gemm are quantized (LayerNorm, softmax, GELU stay fp32). The model is first
    pre-processed (shape inference + graph optimisation) as onnxruntime recommends.
    """
    require_onnx()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="p3b_hf_quant_", dir=work_dir)
    with tmp_ctx as tmp, _quiet():
        source = Path(tmp) / "prep.onnx"
        try:
            quant_pre_process(str(fp32_path), str(source))
            preprocessed = True
        except Exception:  # pre-processing is an optimisation; quantize the exported graph as is
            source, preprocessed = fp32_path, False
        try:
            if calibration is None:
                quantize_dynamic(
                    str(source),
                    str(out_path),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                    op_types_to_quantize=QUANT_OPS,
                )
                info: dict[str, Any] = {
                    "mode": "dynamic",
                    "weights": "int8 per-channel, 7-bit range",
                    "activations": "uint8, per call",
                }
            else:
                if len(calibration) == 0:
                    raise ExportError("The calibration set is empty; give --calibration-samples >= 1.")
                inp = session(source).get_inputs()[0]
                batch = inp.shape[0] if isinstance(inp.shape[0], int) else min(8, len(calibration))
                reader = _CalibrationReader(calibration, inp.name, batch)
                quantize_static(
                    str(source),
                    str(out_path),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                    op_types_to_quantize=QUANT_OPS,
                    calibrate_method=CalibrationMethod.MinMax,
                )
                info = {
                    "mode": "static",
                    "weights": "int8 per-channel, 7-bit range",
                    "activations": "uint8, calibrated (MinMax)",
                    "calibration_samples": int(len(calibration)),
                }
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(
                f"int8 quantization failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            ) from e
    info.update({"op_types": QUANT_OPS, "preprocessed": preprocessed})
    return info
