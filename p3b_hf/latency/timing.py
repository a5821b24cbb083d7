"""The real clock of the latency model: the grid's block probes and the deployed dense model, timed on the
named backend and device with the project's one timing harness (:func:`p3b_hf.bench.time_round_robin`:
median of round-robin repeats) and its ONNX Runtime session (:func:`p3b_hf.export.session`)."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .model import LatencyError, Probe


class AttnProbe(nn.Module):
    """Self-attention of ``heads`` x ``head_dim`` over ``tokens`` tokens of width ``c`` (qkv, SDPA, output)."""

    def __init__(self, c: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(c, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class MlpProbe(nn.Module):
    """``c -> hidden -> c`` with GELU, plus the residual add."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


class GatedMlpProbe(nn.Module):
    """A gated MLP (SwiGLU) as deployed (:class:`p3b_hf.models.modeling_p3b_layers.P3BGatedMLP`, transformers'
    ``Dinov2SwiGLUFFN``): ``c -> hidden`` gate and up projections, ``silu(gate) * up``, ``hidden -> c`` down
    projection, plus the residual add -- 1.5x the MACs of :class:`MlpProbe` at the same hidden width."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(c, hidden), nn.Linear(c, hidden)
        self.down_proj = nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def probe_module(p: Probe) -> nn.Module:
    """The module a probe times: attention, a plain MLP or a gated one."""
    if p.kind == "attn":
        return AttnProbe(p.c, p.heads, p.width).eval()
    return (GatedMlpProbe(p.c, p.width) if p.gated else MlpProbe(p.c, p.width)).eval()


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class BackendClock:
    """Times probes and whole models on ``backend`` (``onnxruntime``: CPU execution provider of an exported
    graph; ``torch``: the module in PyTorch) on ``device`` with ``threads`` threads and batch ``batch``."""

    def __init__(
        self,
        backend: str,
        device: str,
        threads: int,
        batch: int,
        *,
        repeats: int = 3,
        warmup: int = 2,
        min_repeat_s: float = 0.03,
    ) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise LatencyError(
                "--speed-device cuda was asked for but no CUDA device is visible; use --speed-device cpu."
            )
        if backend == "onnxruntime":
            from ..export import require_onnx

            require_onnx()
        self.backend, self.device, self.threads, self.batch = backend, torch.device(device), threads, batch
        self.repeats, self.warmup, self.min_repeat_s = repeats, warmup, min_repeat_s
        self._tmp = tempfile.TemporaryDirectory(prefix="p3b_hf_latency_")
        self._n = 0

    def _runner(self, module: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        if self.backend == "torch":
            module = module.to(self.device)
            return lambda x: module(x)
        from ..export import session
        from ..export.stack import _quiet

        self._n += 1
        path = Path(self._tmp.name) / f"probe{self._n}.onnx"
        with _quiet(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, input_names=["x"], opset_version=17
            )
        sess = session(path, self.threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x.numpy()})

    def time_probes(self, probes: list[Probe]) -> list[float]:
        """ms per batch of each probe; probes of one input shape are timed round-robin together."""
        from ..bench import time_round_robin

        out: dict[int, float] = {}
        shapes: dict[tuple[int, int, int], list[int]] = {}
        for i, p in enumerate(probes):
            shapes.setdefault((p.c, p.tokens, p.groups), []).append(i)
        with _threads(self.threads):
            for (c, tokens, groups), idx in shapes.items():
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(self.batch * groups, tokens, c, generator=gen)
                runners = {str(i): self._runner(probe_module(probes[i]), x) for i in idx}
                x = x.to(self.device) if self.backend == "torch" else x
                timed = time_round_robin(runners, x, self.repeats, self.warmup, self.min_repeat_s)
                out.update({i: timed[str(i)]["median_ms"] for i in idx})
        return [out[i] for i in range(len(probes))]

    def deployed_runner(self, model: nn.Module, name: str) -> Callable[[torch.Tensor], Any]:
        """The model as deployed: :func:`p3b_hf.export.deploy_module` (residual ops folded), exported to ONNX
        and run in onnxruntime, or run in PyTorch on the device."""
        from ..export import deploy_module, export_onnx, session
        from ..export.speed import _ort_runner

        module = deploy_module(model.cpu().float().eval())
        if self.backend == "torch":
            module = module.to(self.device)
            return lambda x: module(x)
        path = Path(self._tmp.name) / f"{name}.onnx"
        export_onnx(module, path, model.config, batch_size=self.batch)
        return _ort_runner(session(path, self.threads))

    def example(self, config: Any) -> torch.Tensor:
        from ..export.deploy import _image_shape

        channels, size = _image_shape(config)
        x = torch.randn(self.batch, channels, size, size, generator=torch.Generator().manual_seed(0))
        return x.to(self.device) if self.backend == "torch" else x

    def time_models(
        self, models: dict[str, nn.Module], config: Any, repeats: int | None = None
    ) -> dict[str, float]:
        """ms per batch of each deployed model, timed round-robin together (paired: load drift hits all).
        Default: at least 5 repeats of >= 0.2 s each (whole models anchor the fit, so they get more time than
        the probes); ``repeats`` given: that many, of the clock's own ``min_repeat_s``."""
        from ..bench import time_round_robin

        runners = {name: self.deployed_runner(m, name) for name, m in models.items()}
        n, min_s = (max(5, self.repeats), 0.2) if repeats is None else (repeats, self.min_repeat_s)
        with _threads(self.threads):
            timed = time_round_robin(runners, self.example(config), n, self.warmup, min_s)
        return {name: t["median_ms"] for name, t in timed.items()}

    def time_model(self, model: nn.Module) -> float:
        return self.time_models({"dense": model}, model.config)["dense"]

    def close(self) -> None:
        self._tmp.cleanup()
