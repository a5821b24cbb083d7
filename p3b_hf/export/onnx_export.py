"""``pixel_values -> logits`` module -> one ``.onnx`` file with the dynamo exporter (a dynamic batch axis or a
static batch, metadata in the file), every exporter failure turned into one :class:`ExportError` naming what
to try instead."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .deploy import _image_shape
from .stack import ExportError, _quiet, require_onnx

DEFAULT_OPSET = 20


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
