"""Images/s of a model's deployable artefact against its dense original's (:class:`DeploySpeed`): the number
``p3b-hf compare`` (``deploy_speed_vs_dense``), the demo, latency verification and ``export --speed`` (the
model card) report. Also the eager / onnxruntime runners the timing harnesses share."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import P3BError
from .deploy import _image_shape, deploy_module
from .onnx_export import export_onnx
from .stack import onnx_available, require_onnx
from .verify import session


def _eager_runner(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    model.eval()
    return lambda x: model(pixel_values=x).logits


def _ort_runner(sess: Any) -> Callable[[torch.Tensor], Any]:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x.numpy()})


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
        from ..bench import time_round_robin

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
