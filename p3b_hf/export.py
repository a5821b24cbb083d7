"""Deployable artefacts: ONNX export of pruned (and dense) ViT/DeiT models, int8, verified in onnxruntime.

``p3b-hf export --model DIR`` writes ``DIR/onnx/model.onnx`` (+ ``model_int8.onnx``) and
``DIR/onnx/export_report.json``. What is exported is not the HF module as is but its *deployable
form* (:func:`deploy_module`): :func:`p3b_hf.optimize.optimize_for_inference` (patch embedding as
one GEMM, fused q/k/v, LayerNorm affine folded into the next Linear, cls-only last layer, widths
zero-padded to multiples of 8) with P3B's residual index operations **folded away** where that is
exact (``fold="all"``, the default):

- a ``full_stats`` read (LayerNorm statistics over all C channels, then a gather of the read
  subset) feeds a Linear; the gather becomes zero columns of that Linear (``x[:, idx] @ W.T ==
  x @ W_full.T`` with ``W_full[:, idx] = W`` and zeros elsewhere). The LayerNorm affine is folded
  into the same Linear first, so the op between the statistics and the GEMM is gone entirely;
- a scatter-add of a sub-block's output into its written subset becomes zero rows of the output
  Linear (``x.index_add(-1, idx, u @ W.T + b) == x + u @ W_full.T + b_full``).

Zero columns and rows add exact zeros, so the function is unchanged; the graph then has exactly
the operators of the dense model (fewer, where sub-blocks were removed) with narrower inner GEMMs,
no Gather / ScatterND. On CPU at batch 1 the gathers and scatter-adds cost more than the MACs the
zero columns/rows add (docs/export.md has the figures); ``fold="reads"`` / ``"none"`` keep them.
``subset_stats`` reads (LayerNorm over the subset only) cannot be folded and stay gathers.

Every export is verified before anything is written: the ONNX model runs in onnxruntime on a
verification batch (eval images with ``dataset=...``, else seeded random pixels) and its logits are
compared with the PyTorch model as loaded (max |delta logit| must be <= ``tolerance``). Files are
written to a staging directory beside the target and renamed at the end; on any error nothing is
left behind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DataError, P3BError
from .models.families import pruned_model_types
from .options import option

SCHEMA = "p3b_hf.export/1"
BENCH_SCHEMA = "p3b_hf.bench_onnx/1"
ONNX_DIR = "onnx"
FP32_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
REPORT_NAME = "export_report.json"
FOLDS = ("all", "reads", "none")
GRAPHS = ("deploy", "hf")
DEFAULT_OPSET = 20
DEFAULT_TOLERANCE = 1e-3
INSTALL_HINT = 'pip install -e ".[onnx]" in your p3b_hf checkout (p3b_hf is not on PyPI)'
#: what `p3b-hf export` accepts: the pruned format of every supported family
P3B_MODEL_TYPES = pruned_model_types()
QUANT_OPS = ["MatMul", "Gemm"]


class ExportError(P3BError):
    """An export could not be made, verified or written (nothing was left behind)."""


# ------------------------------------------------------------------------------------------- deps
def require_onnx() -> Any:
    """Import the ONNX stack or raise one :class:`ExportError` with the install hint; returns onnxruntime."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: {INSTALL_HINT} (pinned onnx / onnxscript / onnxruntime)."
        )
    return importlib.import_module("onnxruntime")


def onnx_available() -> bool:
    try:
        require_onnx()
    except ExportError:
        return False
    return True


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantizer log warnings that are noise here (torchvision ops not registered,
    empty-attribute defaults, 'consider pre-processing'); errors still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# ------------------------------------------------------------------------------------------- module
class LogitsModule(nn.Module):
    """The HF module as is, returning the logits tensor (``graph="hf"``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def deploy_module(
    model: nn.Module, *, fold: str = "all", graph: str = "deploy", round_to: int | None = 8
) -> nn.Module:
    """The module that is exported: ``pixel_values -> logits``, exactly the function of ``model``.

    ``graph="deploy"`` (default): :func:`p3b_hf.optimize.optimize_for_inference` with the residual
    gathers (``fold`` in ``"all"``, ``"reads"``) and scatter-adds (``"all"``) folded into zero
    columns / rows of the adjacent Linears (module docstring). ``graph="hf"``: the HF module as is.
    Works for p3b_hf pruned models and stock HF ViT/DeiT (the dense baseline); BEiT, DINOv2, Swin and ConvNeXt,
    which ``optimize_for_inference`` does not rewrite, always export their HF module.
    """
    if fold not in FOLDS:
        raise ExportError(f"--fold {fold!r} is not one of {', '.join(FOLDS)}.")
    if graph not in GRAPHS:
        raise ExportError(f"--graph {graph!r} is not one of {', '.join(GRAPHS)}.")
    from .optimize import has_fast_path, optimize_for_inference

    if graph == "deploy" and not has_fast_path(model.config):
        graph = "hf"  # BEiT / DINOv2 / Swin / ConvNeXt: no optimize_for_inference rewrite; their HF module is exported
    if graph == "hf":
        # a copy: the p3b modules cache index tensors per device, and tracing would cache fake tensors
        return LogitsModule(copy.deepcopy(model).eval())

    kwargs: dict[str, Any] = {"compile": False, "round_to": round_to}
    if fold in ("all", "reads"):
        kwargs["dense_reads"] = True
    if fold == "all":
        kwargs["scatter"] = "dense"
    return optimize_for_inference(model, **kwargs).eval()


def residual_index_ops(module: nn.Module) -> dict[str, int]:
    """How many residual gathers / scatter-adds are left in a deploy module (0 / 0 when fully folded)."""
    from .optimize import describe

    if isinstance(module, LogitsModule):
        return {}
    d = describe(module)
    return {"gathers": d["reads"]["index"], "scatter_adds": d["writes"]["index"]}


# ------------------------------------------------------------------------------------------- export
def _image_shape(config: Any, processor: Any = None) -> tuple[int, int]:
    """``(channels, size)`` of the exported input: ``config.image_size``, except DINOv2, whose config holds its
    pretraining grid (518 px on the Hub) while its image processor crops 224 (:func:`p3b_hf.data.model_image_size`):
    the processor's crop size when there is one, else the config's grid."""
    from .data import model_image_size

    size = model_image_size(config)
    if size is None:
        crop = getattr(processor, "crop_size", None) or {}
        size = int(crop.get("height") or _as_int(config.image_size))
    return int(getattr(config, "num_channels", 3)), size


def _as_int(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    config: Any,
    *,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int | None = None,
    metadata: dict[str, str] | None = None,
    image_size: int | None = None,
) -> Path:
    """Export ``module`` (``pixel_values -> logits``) with the dynamo exporter to one ``.onnx`` file.

    Static batch ``batch_size`` unless ``dynamic_batch`` (then dimension 0 of ``pixel_values`` and
    ``logits`` is the symbolic ``batch``). ``opset`` defaults to :data:`DEFAULT_OPSET`; ``image_size``
    to :func:`_image_shape`'s.
    """
    require_onnx()
    path = Path(path)
    channels, size = _image_shape(config)
    size = image_size or size
    if batch_size < 1:
        raise ExportError(f"--batch-size {batch_size} must be >= 1.")
    # an example batch of 1 would let torch.export specialise the batch dimension to 1
    example = torch.randn(
        max(2, batch_size) if dynamic_batch else batch_size,
        channels,
        size,
        size,
        generator=torch.Generator().manual_seed(0),
    )
    kwargs: dict[str, Any] = {
        "dynamo": True,
        "input_names": ["pixel_values"],
        "output_names": ["logits"],
        "opset_version": opset or DEFAULT_OPSET,
        "external_data": False,
        "verbose": False,
        "optimize": True,
    }
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"pixel_values": {0: torch.export.Dim("batch")}}
    module = module.eval()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, (example,), None, **kwargs)
            if metadata:
                for k, v in metadata.items():
                    program.model.metadata_props[k] = str(v)
            program.save(str(path))
    except ExportError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"torch.onnx.export (dynamo) failed: {type(e).__name__}: {first}. Try another --opset, "
            "--graph hf, or --fold none, and report the model config if it persists."
        ) from e
    return path


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


# ------------------------------------------------------------------------------------------- int8
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


# ------------------------------------------------------------------------------------------- data
def _load_split(
    dataset: str,
    split: str,
    processor: Any,
    config: Any,
    *,
    max_samples: int | None,
    seed: int,
    data_kwargs: dict[str, Any],
) -> tuple[Any, str]:
    """A transformed (eval transform: resize + normalise, no augmentation) split of a data set.

    ``split="eval"``: the eval split (as ``p3b-hf prune`` chooses it); ``"train"``: the training split
    (calibration). Labels must be the model's (same count and names)."""
    from .data import build_datasets, load_image_dataset

    kw = {k: v for k, v in data_kwargs.items() if v is not None}
    if split == "train":
        kw["max_train_samples"] = max_samples
    else:
        kw["max_eval_samples"] = max_samples
    data = load_image_dataset(dataset, seed=seed, **kw)
    model_labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    if len(data.labels) != len(model_labels):
        raise DataError(
            f"--dataset {dataset} has {len(data.labels)} classes but the model predicts "
            f"{len(model_labels)}; give the data set the model was pruned / fine-tuned on."
        )
    generic = all(lab == f"LABEL_{i}" for i, lab in enumerate(model_labels))
    if not generic and [str(x) for x in data.labels] != model_labels:
        first = next(i for i, (a, b) in enumerate(zip(data.labels, model_labels)) if str(a) != b)
        raise DataError(
            f"--dataset {dataset}: label {first} is {data.labels[first]!r} in the data but "
            f"{model_labels[first]!r} in the model's config; the accuracy would be meaningless."
        )
    if processor is None:
        raise DataError(
            "The model dir has no preprocessor_config.json, so images cannot be normalised as in "
            "training; save the image processor into the model dir first."
        )
    if split == "train":
        data = dataclasses.replace(data, eval=data.train)  # the train images with the eval transform
    _, eval_ds = build_datasets(
        data, processor, image_size=_image_shape(config, processor)[1], augment="none"
    )
    origin = f"{dataset} ({'train split' if split == 'train' else data.eval_origin}, {len(eval_ds)} images)"
    return eval_ds, origin


def _stack(
    ds: Any, n: int | None = None, seed: int = 0, shuffle: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    idx = list(range(len(ds)))
    if shuffle:
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    idx = idx[: n if n is not None else len(idx)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=64, shuffle=False)
    xs, ys = [], []
    for batch in loader:
        xs.append(batch["pixel_values"].float())
        ys.append(batch["labels"])
    if not xs:
        raise DataError("The data set split is empty.")
    return torch.cat(xs), torch.cat(ys)


# ------------------------------------------------------------------------------------------- staging
def _staging(target: Path) -> Path:
    from .checkpoints import make_staging_dir

    if target.exists() and not target.is_dir():
        raise ExportError(
            f"--output-dir {target} is a file; give a directory (default: MODEL_DIR/{ONNX_DIR})."
        )
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(target)
        probe = staging / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the export dir should read like its siblings
        return staging
    except OSError as e:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(
            f"Cannot write {target}: {e.strerror or e} ({e.filename or target.parent}). Make the model "
            "dir writable or give --output-dir a writable location."
        ) from e


def _commit(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:  # put the previous export back
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- export a dir
@dataclass
class ExportResult:
    output_dir: Path
    files: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportOptions:
    """``p3b-hf export``'s options (the flags are generated from these fields, :mod:`p3b_hf.options`)."""

    model: str = option(help="model dir written by `p3b-hf prune` / `p3b-hf finetune`")
    format: str = option("onnx", choices=("onnx",), help="export format")
    quantize: str | None = option(
        None,
        choices=("int8",),
        help="also write onnx/model_int8.onnx: dynamic int8, or static with --calibration-dataset",
    )
    calibration_dataset: str | None = option(
        None,
        help="static int8: calibrate activation ranges on images of this "
        "data set's train split (implies --quantize int8)",
    )
    calibration_samples: int = option(128, help="calibration images")
    dataset: str | None = option(
        None,
        help="verify on its eval images and report top-1 of PyTorch / ONNX fp32 / int8 on the eval split",
    )
    image_column: str | None = option(
        None, help="image column of --dataset / --calibration-dataset (default: detected)"
    )
    label_column: str | None = option(None, help="label column (default: detected)")
    train_split: str = option("train", help="split --calibration-dataset draws from")
    eval_split: str | None = option(None, help="split --dataset is scored on (default: validation/test)")
    max_eval_samples: int | None = option(None, help="evaluate on at most this many images")
    opset: int | None = option(None, help="ONNX opset (default 20; 23 adds the Attention op)")
    static_batch: int | None = option(
        None,
        help="export a static batch of N images (default: a dynamic batch axis, as optimum exports; a "
        "static graph may run slightly faster at that one batch size)",
    )
    fold: str = option(
        "all",
        choices=FOLDS,
        help="fold P3B's residual gathers (reads) and scatter-adds (all) into "
        "zero columns/rows of the adjacent Linears (exact) or keep them as "
        "Gather/ScatterND ops (none)",
    )
    graph: str = option(
        "deploy",
        choices=GRAPHS,
        help="deploy: the optimize_for_inference module (ViT/DeiT; BEiT "
        "and DINOv2 always export their HF module); hf: the HF module",
    )
    tolerance: float = option(
        DEFAULT_TOLERANCE, help="largest allowed max |logit(ONNX fp32) - logit(PyTorch)|"
    )
    verify_samples: int = option(16, help="images in the verification batch")
    int8_min_agreement: float | None = option(
        None,
        help="refuse the export if int8 and fp32 agree on fewer top-1 "
        "predictions of the verification batch (fraction, e.g. "
        "0.9; default: report only)",
    )
    speed: bool = option(
        False,
        help="also time (CPU, batch 1) the export against the dense original's export and "
        "PyTorch eager; the result goes into export_report.json and the model card",
    )
    speed_repeats: int = option(5, help="timed repeats of --speed")
    dense_model: str | None = option(
        None,
        help="--speed: the dense original to time against (dir or Hub id; 'random': random weights of its "
        "dense shape, ViT/DeiT; default: config.json base_model_name_or_path, refused if it cannot be loaded)",
    )
    threads: int | None = option(None, help="torch and onnxruntime CPU threads")
    output_dir: str | None = option(None, help="where the ONNX files go (default MODEL/onnx)")
    seed: int = option(0, help="seed of the verification / calibration samples")


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


def _file_info(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size}


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
    from .loading import load_config, load_image_processor, load_model
    from .models.locator import require_supported_config
    from .report import portable

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

    from . import __version__

    model = load_model(str(src)).eval()
    dense = dense_source = None
    if speed:  # the dense original first: a missing one is refused before any export work
        from .bench import dense_model_for

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


def load_export_report(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(model_dir) / ONNX_DIR / REPORT_NAME
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{p} is not valid JSON ({e}); re-run p3b-hf export.") from e


# ------------------------------------------------------------------------------------------- speed
def _eager_runner(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    model.eval()
    return lambda x: model(pixel_values=x).logits


def _ort_runner(sess: Any) -> Callable[[torch.Tensor], Any]:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x.numpy()})


def _env(threads: int) -> dict[str, Any]:
    from .bench import environment

    env = environment(torch.device("cpu"))
    env["threads"] = threads
    env["cpu_count"] = os.cpu_count()
    try:
        env["onnxruntime"] = require_onnx().__version__
    except ExportError:
        env["onnxruntime"] = None
    return env


class DeploySpeed:
    """Images/s of a model's *deployable* artefact against its dense original's, in one run.

    The deployable path is ONNX Runtime fp32 of :func:`deploy_module` (residual ops folded) when the
    ONNX stack is installed, else :func:`p3b_hf.optimize.optimize_for_inference` in PyTorch
    (``backend`` says which). The dense model is exported once and re-timed against every pruned
    model (round-robin with it, so load drift hits both alike). Used by ``p3b-hf compare`` (the
    ``deploy_speed_vs_dense`` column), the demo and ``p3b-hf export --speed`` (the model card).
    """

    def __init__(
        self,
        dense: nn.Module,
        *,
        batch_size: int = 1,
        repeats: int = 5,
        warmup: int = 2,
        min_repeat_s: float = 0.2,
        threads: int | None = None,
        backend: str = "auto",
        opset: int | None = None,
        fold: str = "all",
        dense_source: str | None = None,
    ) -> None:
        if backend not in ("auto", "onnxruntime", "fast"):
            raise P3BError(f"deploy backend {backend!r} is not one of auto, onnxruntime, fast.")
        if backend == "onnxruntime":
            require_onnx()
        self.backend = (
            "onnxruntime" if backend == "onnxruntime" or (backend == "auto" and onnx_available()) else "fast"
        )
        self.dense = copy.deepcopy(dense).cpu().float().eval()  # callers may move theirs to a GPU later
        self.batch_size, self.repeats, self.warmup, self.min_repeat_s = (
            batch_size,
            repeats,
            warmup,
            min_repeat_s,
        )
        self.threads = threads or torch.get_num_threads()
        self.opset, self.fold = opset, fold
        self.dense_source = dense_source
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._dense_deploy: Callable | None = None

    def _deploy_runner(self, model: nn.Module, name: str, onnx_path: Path | None = None) -> Callable:
        module = deploy_module(model, fold=self.fold)
        if self.backend == "fast":
            return module
        if onnx_path is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="p3b_hf_deploy_")
            onnx_path = Path(self._tmp.name) / f"{name}.onnx"
            export_onnx(module, onnx_path, model.config, batch_size=self.batch_size, opset=self.opset)
        return _ort_runner(session(onnx_path, self.threads))

    def measure(self, pruned: nn.Module, pruned_onnx: dict[str, Path] | None = None) -> dict[str, Any]:
        """``{"deploy_speed_vs_dense": pruned deployable / dense deployable images/s, ...}``.

        ``pruned_onnx``: already exported pruned files (``{"ort-fp32": path, "ort-int8": path}``) to time
        instead of exporting again (batch size must match)."""
        from .bench import time_round_robin

        if self._dense_deploy is None:
            self._dense_deploy = self._deploy_runner(self.dense, "dense")
        runners: dict[str, Callable] = {
            "dense/eager": _eager_runner(self.dense),
            "pruned/eager": _eager_runner(pruned),
            "dense/deploy": self._dense_deploy,
        }
        if self.backend == "onnxruntime" and pruned_onnx:
            for variant, path in pruned_onnx.items():
                runners[f"pruned/{variant}"] = _ort_runner(session(path, self.threads))
            runners["pruned/deploy"] = runners.pop(f"pruned/{next(iter(pruned_onnx))}")
        else:
            runners["pruned/deploy"] = self._deploy_runner(pruned, "pruned")
        cfg = pruned.config
        channels, size = _image_shape(cfg)
        x = torch.randn(self.batch_size, channels, size, size, generator=torch.Generator().manual_seed(0))
        prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            timed = time_round_robin(runners, x, self.repeats, self.warmup, self.min_repeat_s)
        finally:
            torch.set_num_threads(prev)
        ips = {k: v["images_per_s"] for k, v in timed.items()}
        out = {
            "backend": self.backend,
            "path": (
                "ONNX Runtime fp32 (CPU), residual ops folded"
                if self.backend == "onnxruntime"
                else "optimize_for_inference (PyTorch, CPU)"
            ),
            "batch_size": self.batch_size,
            "threads": self.threads,
            "repeats": self.repeats,
            "dtype": "fp32",
            "images_per_s": ips,
            "dense_source": self.dense_source,
            "deploy_speed_vs_dense": ips["pruned/deploy"] / ips["dense/deploy"],
            "deploy_vs_dense_eager": ips["pruned/deploy"] / ips["dense/eager"],
            "eager_speed_vs_dense": ips["pruned/eager"] / ips["dense/eager"],
        }
        if "pruned/ort-int8" in ips:
            out["int8_vs_dense_eager"] = ips["pruned/ort-int8"] / ips["dense/eager"]
            out["int8_vs_dense_deploy"] = ips["pruned/ort-int8"] / ips["dense/deploy"]
        return out

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def deploy_speed_ratio(pruned: nn.Module, dense: nn.Module, **kwargs: Any) -> dict[str, Any]:
    """One-off :class:`DeploySpeed` measurement (exports the dense model too)."""
    timer = DeploySpeed(dense, **kwargs)
    try:
        return timer.measure(pruned)
    finally:
        timer.close()


# ------------------------------------------------------------------------------------------- bench --onnx
ONNX_VARIANTS = ("eager", "fast", "ort-fp32", "ort-int8")


def _parse_onnx_variant(name: str) -> dict[str, Any]:
    """``eager`` | ``fast`` | ``ort-fp32`` | ``ort-int8`` [``+nofold`` | ``+readfold`` | ``+hf`` |
    ``+static`` (int8 with random-pixel calibration: for speed only) | ``+opsetN``]."""
    base, *mods = name.split("+")
    if base not in ONNX_VARIANTS or (base in ("eager", "fast") and mods):
        raise P3BError(
            f"Unknown ONNX bench variant {name!r}: use eager, fast, ort-fp32 or ort-int8, the ort ones "
            "optionally with +nofold, +readfold, +hf, +static (int8), +opsetN."
        )
    spec: dict[str, Any] = {"base": base, "fold": "all", "graph": "deploy", "static": False, "opset": None}
    for m in mods:
        if m == "nofold":
            spec["fold"] = "none"
        elif m == "readfold":
            spec["fold"] = "reads"
        elif m == "hf":
            spec["graph"] = "hf"
        elif m == "static" and base == "ort-int8":
            spec["static"] = True
        elif m.startswith("opset") and m[5:].isdigit():
            spec["opset"] = int(m[5:])
        else:
            raise P3BError(f"Unknown modifier +{m} in ONNX bench variant {name!r}.")
    return spec


def run_onnx_bench(
    pruned: nn.Module,
    dense: nn.Module | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 10,
    warmup: int = 3,
    min_repeat_s: float = 0.2,
    threads: int | None = None,
    variants: Sequence[str] = ONNX_VARIANTS,
    pruned_variants: Sequence[str] = (),
    opset: int | None = None,
    sources: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``p3b-hf bench --onnx``: CPU images/s of dense and pruned models in PyTorch eager, ``fast``
    (optimize_for_inference) and ONNX Runtime fp32 / int8 (dynamic), timed round-robin in one run,
    per batch size. Every ONNX model is exported with a dynamic batch and checked against its
    PyTorch model (``checks``). Ratios are against the dense model in PyTorch eager at the same batch
    (``vs_dense_eager``) and against the dense model in the same variant (``vs_dense_same``)."""
    from .bench import _describe, dense_model_for, time_round_robin

    require_onnx()
    for v in (*variants, *pruned_variants):
        _parse_onnx_variant(v)
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise P3BError("--onnx-batch-sizes must be positive integers, e.g. 1,32.")
    threads = threads or torch.get_num_threads()
    sources = dict(sources or {})
    if dense is None:
        dense, sources["dense"] = dense_model_for(pruned)
    models = {"pruned": pruned.eval().float(), "dense": dense.eval().float()}
    sources.setdefault("pruned", str(getattr(pruned.config, "_name_or_path", "") or "in-memory"))
    sources.setdefault("dense", str(getattr(dense.config, "_name_or_path", "") or "in-memory"))
    channels, size = _image_shape(pruned.config)
    report: dict[str, Any] = {
        "schema": BENCH_SCHEMA,
        "env": _env(threads),
        "settings": {
            "dtype": "fp32 (int8: dynamic int8 MatMuls)",
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "warmup": warmup,
            "min_repeat_s": min_repeat_s,
            "image_size": size,
            "opset": opset or DEFAULT_OPSET,
            "variants": list(variants),
            "pruned_variants": list(pruned_variants),
            "onnx_batch": "dynamic",
        },
        "models": {name: _describe(m, sources[name]) for name, m in models.items()},
        "checks": {},
        "export_s": {},
    }
    x_check = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed + 1))
    runners: dict[str, Callable] = {}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="p3b_hf_bench_onnx_") as tmp:
            for name, model in models.items():
                ref = torch_logits(model, x_check)
                fp32_cache: dict[tuple, Path] = {}
                for v in (*variants, *(pruned_variants if name == "pruned" else ())):
                    spec = _parse_onnx_variant(v)
                    if spec["base"] == "eager":
                        runners[f"{name}/{v}"] = _eager_runner(model)
                        continue
                    if spec["base"] == "fast":
                        runners[f"{name}/{v}"] = deploy_module(
                            model, fold="none"
                        )  # optimize_for_inference defaults
                        continue
                    key = (spec["fold"], spec["graph"], spec["opset"] or opset)
                    if key not in fp32_cache:
                        path = Path(tmp) / f"{name}_{len(fp32_cache)}.onnx"
                        t = time.time()
                        export_onnx(
                            deploy_module(model, fold=spec["fold"], graph=spec["graph"]),
                            path,
                            model.config,
                            dynamic_batch=True,
                            opset=key[2],
                        )
                        report["export_s"][f"{name}/{v}"] = time.time() - t
                        fp32_cache[key] = path
                    path = fp32_cache[key]
                    if spec["base"] == "ort-int8":
                        qpath = path.with_name(path.stem + f"_int8{'s' if spec['static'] else ''}.onnx")
                        calib = (
                            torch.randn(
                                16, channels, size, size, generator=torch.Generator().manual_seed(seed + 2)
                            ).numpy()
                            if spec["static"]
                            else None
                        )
                        quantize_int8(path, qpath, calibration=calib, work_dir=tmp)
                        path = qpath
                    sess = session(path, threads)
                    check = compare_logits(ref, onnx_logits(sess, x_check))
                    report["checks"][f"{name}/{v}"] = {
                        k: check[k] for k in ("max_abs_diff", "top1_agreement")
                    }
                    if spec["base"] == "ort-fp32" and not check["max_abs_diff"] <= DEFAULT_TOLERANCE:
                        raise ExportError(
                            f"bench --onnx: {name}/{v} disagrees with PyTorch (max |delta logit| "
                            f"{check['max_abs_diff']:.3g}); not timing a wrong model."
                        )
                    runners[f"{name}/{v}"] = _ort_runner(sess)
            results = []
            for b in batch_sizes:
                x = torch.randn(b, channels, size, size, generator=torch.Generator().manual_seed(seed))
                timed = time_round_robin(runners, x, repeats, warmup, min_repeat_s)
                for key, row in timed.items():
                    model_name, variant = key.split("/", 1)
                    results.append({"model": model_name, "variant": variant, "batch_size": b, **row})
    finally:
        torch.set_num_threads(prev_threads)
    report["results"] = results
    report["ratios"] = onnx_ratios(results)
    from .report import portable

    return portable(report)


def onnx_ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size: every row's images/s over dense eager (``vs_dense_eager``; ratio of medians, and
    ``vs_dense_eager_paired``: the median over rounds of the per-round ratio, robust to load drift on a
    shared machine) and over the dense model in the same variant (``vs_dense_same``);
    ``best_pruned_deployable``: the fastest pruned ``fast`` / ``ort-*`` variant and its ratio over dense eager."""
    import statistics

    out: dict[str, Any] = {}
    for b in sorted({r["batch_size"] for r in results}):
        full = {(r["model"], r["variant"]): r for r in results if r["batch_size"] == b}
        rows = {k: r["images_per_s"] for k, r in full.items()}
        base = rows.get(("dense", "eager"))
        base_t = full.get(("dense", "eager"), {}).get("times_ms")
        entry: dict[str, Any] = {"vs_dense_eager": {}, "vs_dense_eager_paired": {}, "vs_dense_same": {}}
        for (m, v), ips in rows.items():
            if base:
                entry["vs_dense_eager"][f"{m}/{v}"] = ips / base
            t = full[(m, v)].get("times_ms")
            if base_t and t and len(t) == len(base_t):
                entry["vs_dense_eager_paired"][f"{m}/{v}"] = statistics.median(
                    a / c for a, c in zip(base_t, t)
                )
            if m == "pruned":
                same = rows.get(("dense", v), rows.get(("dense", v.split("+")[0])))
                if same:
                    entry["vs_dense_same"][v] = ips / same
        deployable = {v: ips for (m, v), ips in rows.items() if m == "pruned" and v != "eager"}
        if deployable and base:
            best = max(deployable, key=deployable.get)
            entry["best_pruned_deployable"] = {
                "variant": best,
                "images_per_s": deployable[best],
                "vs_dense_eager": deployable[best] / base,
            }
        out[str(b)] = entry
    return out


def format_onnx_table(report: dict[str, Any]) -> str:
    env, s = report["env"], report["settings"]
    lines = [
        f"CPU ({env.get('cpu')}, {env.get('cpu_count')} cores), {env['threads']} thread(s), torch {env['torch']}, "
        f"onnxruntime {env.get('onnxruntime')}, fp32 (int8: dynamic), median of {s['repeats']} repeats",
        f"{'batch':>5} {'model':7} {'variant':22} {'params (M)':>10} {'images/s':>10} {'ms/batch':>9} "
        f"{'x dense eager':>13} {'(paired)':>9} {'x dense same':>12}",
    ]
    for r in report["results"]:
        b, m, v = r["batch_size"], r["model"], r["variant"]
        rat = report["ratios"][str(b)]
        same = rat["vs_dense_same"].get(v) if m == "pruned" else None
        lines.append(
            f"{b:5d} {m:7} {v:22} {report['models'][m]['params'] / 1e6:10.2f} {r['images_per_s']:10.1f} "
            f"{r['median_ms']:9.2f} {rat['vs_dense_eager'].get(f'{m}/{v}', math.nan):13.2f} "
            f"{rat.get('vs_dense_eager_paired', {}).get(f'{m}/{v}', math.nan):9.2f} "
            + (f"{same:12.2f}" if same is not None else "")
        )
    for b, rat in report["ratios"].items():
        best = rat.get("best_pruned_deployable")
        if best:
            lines.append(
                f"batch {b}: best deployable pruned artefact {best['variant']} = {best['vs_dense_eager']:.2f}x "
                "the dense PyTorch eager model"
            )
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------- model card
def _batch_text(batch: Any) -> str:
    """How the export's batch axis reads in the card: any batch size, or the one static size it takes."""
    if batch == "dynamic":
        return "dynamic batch axis (any batch size)"
    if batch is None:
        return "batch axis not recorded"
    return f"static batch of {batch} (exported with --static-batch)"


def card_section(report: dict[str, Any], repo_id: str) -> list[str]:
    """Model-card lines for the ONNX files (``p3b-hf push --with-onnx``)."""
    files = report.get("files", {})
    v = report.get("verification", {})
    fp = v.get("fp32_vs_torch", {})
    lines = [
        "## ONNX (deployable artefact)",
        "",
        f"This repo also holds an ONNX export made with `p3b-hf export` (opset {report.get('opset')}, "
        f"input `pixel_values` {report.get('input', {}).get('shape')}, {_batch_text(report.get('batch'))}, "
        "output `logits`; residual gathers / "
        f"scatter-adds folded: `{report.get('fold')}`), verified in onnxruntime against the PyTorch model "
        "before it was written:",
        "",
        "| file | what | check |",
        "|---|---|---|",
    ]
    if "fp32" in files:
        lines.append(
            f"| `onnx/{files['fp32']['file']}` | fp32 | max abs logit diff vs PyTorch "
            f"{fp.get('max_abs_diff', float('nan')):.1e}, top-1 agreement "
            f"{100 * fp.get('top1_agreement', float('nan')):.1f} % ({v.get('inputs', 'n/a')}) |"
        )
    if "int8" in files:
        q = v.get("int8_vs_fp32", {})
        lines.append(
            f"| `onnx/{files['int8']['file']}` | int8 ({report.get('int8', {}).get('mode')}) | top-1 "
            f"agreement with fp32 {100 * q.get('top1_agreement', float('nan')):.1f} % |"
        )
    acc = report.get("accuracy")
    if acc:
        line = (
            f"\nTop-1 on {acc['eval_split']}: PyTorch {100 * acc['torch']:.2f} %, ONNX fp32 "
            f"{100 * acc['onnx_fp32']:.2f} %"
        )
        if "onnx_int8" in acc:
            line += f", ONNX int8 {100 * acc['onnx_int8']:.2f} % ({acc['int8_minus_fp32_points']:+.2f} points vs fp32)"
        lines.append(line + ".")
    sp = report.get("speed")
    lines.append("")
    if sp:
        ips = sp["images_per_s"]
        lines += [
            f"Speed (CPU, {sp['threads']} thread(s), batch {sp['batch_size']}, fp32, one run; dense = "
            f"{sp.get('dense_source') or 'the dense original'}):",
            "",
            "| | images/s | vs dense |",
            "|---|---|---|",
            f"| dense, PyTorch eager | {ips['dense/eager']:.1f} | 1.00x |",
            f"| this model, PyTorch eager | {ips['pruned/eager']:.1f} | {sp['eager_speed_vs_dense']:.2f}x |",
            f"| dense, deployable ({sp['backend']}) | {ips['dense/deploy']:.1f} | "
            f"{ips['dense/deploy'] / ips['dense/eager']:.2f}x |",
            f"| **this model, deployable ({sp['backend']})** | {ips['pruned/deploy']:.1f} | "
            f"**{sp['deploy_vs_dense_eager']:.2f}x** ({sp['deploy_speed_vs_dense']:.2f}x the dense deployable) |",
        ]
        if "pruned/ort-int8" in ips:
            lines.append(
                f"| this model, ONNX int8 | {ips['pruned/ort-int8']:.1f} | {sp['int8_vs_dense_eager']:.2f}x |"
            )
        lines.append("")
    else:
        lines += ["(Speed not measured for this export: `p3b-hf export --speed` adds it.)", ""]
    lines += [
        "```python",
        "import numpy as np, onnxruntime as ort",
        "from huggingface_hub import hf_hub_download",
        "from PIL import Image",
        "from transformers import AutoImageProcessor",
        f'path = hf_hub_download("{repo_id}", "onnx/{files.get("fp32", {}).get("file", FP32_NAME)}")',
        f'processor = AutoImageProcessor.from_pretrained("{repo_id}")',
        'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
        'image = Image.open("cat.jpg").convert("RGB")',
        'pixels = processor(images=image, return_tensors="np")["pixel_values"].astype(np.float32)',
        'logits = session.run(None, {"pixel_values": pixels})[0]  # labels: config.json id2label',
        "```",
        "",
    ]
    return lines
