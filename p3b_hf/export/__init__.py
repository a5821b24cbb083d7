"""Deployable artefacts: ONNX export of pruned (and dense) models, int8, verified in onnxruntime.

``p3b-hf export --model DIR`` writes ``DIR/onnx/model.onnx`` (+ ``model_int8.onnx``) and
``DIR/onnx/export_report.json``. What is exported is not the HF module as is but its *deployable form*
(:func:`deploy_module`, :mod:`.deploy`: ``optimize_for_inference`` with P3B's residual gathers and
scatter-adds folded into zero columns / rows of the adjacent Linears where that is exact).

Every export is verified before anything is written: the ONNX model runs in onnxruntime on a
verification batch (eval images with ``dataset=...``, else seeded random pixels) and its logits are
compared with the PyTorch model as loaded (max |delta logit| must be <= ``tolerance``). Files are
written to a staging directory beside the target and renamed at the end; on any error nothing is
left behind.

The modules, in the order an export uses them: :mod:`.stack` (the optional ONNX dependency,
:class:`ExportError`), :mod:`.options` (:class:`ExportOptions`), :mod:`.model_dir` (``export`` /
:func:`export_model_dir`: checks, staging, report, rename), :mod:`.files` (file names, staging, the
report reader), :mod:`.pipeline` (the steps into the staging dir), :mod:`.deploy`, :mod:`.onnx_export`,
:mod:`.verify` (onnxruntime session, logits, comparison), :mod:`.int8`, :mod:`.eval_data` (verification
/ calibration images), :mod:`.speed` (:class:`DeploySpeed`), :mod:`.bench_onnx` (``bench --onnx``) and
:mod:`.card` (the model-card section). The names below are the package's API (``from p3b_hf.export
import ...``).
"""

from __future__ import annotations

from .bench_onnx import BENCH_SCHEMA, ONNX_VARIANTS, format_onnx_table, onnx_ratios, run_onnx_bench
from .card import card_section
from .deploy import FOLDS, GRAPHS, LogitsModule, deploy_module, residual_index_ops
from .files import FP32_NAME, INT8_NAME, ONNX_DIR, REPORT_NAME, SCHEMA, load_export_report
from .int8 import QUANT_OPS, quantize_int8
from .model_dir import P3B_MODEL_TYPES, ExportResult, export, export_model_dir
from .onnx_export import DEFAULT_OPSET, export_onnx
from .options import ExportOptions
from .speed import DeploySpeed, deploy_speed_ratio
from .stack import INSTALL_HINT, ExportError, onnx_available, require_onnx
from .verify import DEFAULT_TOLERANCE, compare_logits, onnx_logits, session, torch_logits

__all__ = [
    "BENCH_SCHEMA",
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "FOLDS",
    "FP32_NAME",
    "GRAPHS",
    "INSTALL_HINT",
    "INT8_NAME",
    "ONNX_DIR",
    "ONNX_VARIANTS",
    "P3B_MODEL_TYPES",
    "QUANT_OPS",
    "REPORT_NAME",
    "SCHEMA",
    "DeploySpeed",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "LogitsModule",
    "card_section",
    "compare_logits",
    "deploy_module",
    "deploy_speed_ratio",
    "export",
    "export_model_dir",
    "export_onnx",
    "format_onnx_table",
    "load_export_report",
    "onnx_available",
    "onnx_logits",
    "onnx_ratios",
    "quantize_int8",
    "require_onnx",
    "residual_index_ops",
    "run_onnx_bench",
    "session",
    "torch_logits",
]
