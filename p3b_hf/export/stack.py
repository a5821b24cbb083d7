"""The ONNX stack as an optional dependency: one :class:`ExportError` with the install hint when onnx /
onnxscript / onnxruntime are missing (the base install has none of them), and a context that silences the
exporter's and quantizer's warning noise."""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import P3BError

INSTALL_HINT = 'pip install -e ".[onnx]" in your p3b_hf checkout (p3b_hf is not on PyPI)'


class ExportError(P3BError):
    """An export could not be made, verified or written (nothing was left behind)."""


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
