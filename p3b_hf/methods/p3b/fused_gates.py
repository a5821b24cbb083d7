"""Fused P3B gates: the six soft masks folded into the weights of the modules they follow.

The reference-style gates (:func:`.gates.install_gates`) multiply every gated *activation* in a forward
hook: 8 extra elementwise kernels per layer over ``B x N x C`` tensors, each of which also saves that
activation for the mask gradient (≈1.5x peak memory, 1.4-1.8x wall time on a GPU). A gate on the output
of ``y = x W^T + b`` is the same as using ``W * m[:, None]`` and ``b * m``; a gate on its input is
``W * m[None, :]``; a gate on a LayerNorm output scales its affine ``weight`` and ``bias``. Those
products are on parameter-sized tensors (C x C, not B x N x C), so the gated forward costs a few tiny
kernels per layer, and autograd saves only the weights and masks. The mask gradients (Taylor scores) are
mathematically identical; numerically they differ only by float rounding order.

Installed by replacing ``forward`` on the module *instances* (the class and the ``state_dict`` are
untouched, so checkpoints, DDP and ``apply_width_plan`` see a stock HF model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.locator import ViTModules, locate
from .gates import GateSet


class ForwardOverride:
    """Handle that restores a module's class ``forward`` (same interface as a hook handle)."""

    def __init__(self, module: nn.Module, forward: Callable) -> None:
        self.module = module
        module.forward = forward

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


def _layernorm(ln: nn.LayerNorm, gates: GateSet, gate: str, layer: int) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        m = gates.effective(gate, layer)
        w = m if ln.weight is None else ln.weight * m
        b = None if ln.bias is None else ln.bias * m
        # (a full-width pruned-format model's P3BLayerNorm normalises its whole input, like nn.LayerNorm)
        return F.layer_norm(x, getattr(ln, "normalized_shape", (x.shape[-1],)), w, b, ln.eps)

    return forward


def _head_linear(lin: nn.Linear, gates: GateSet, layer: int, heads: int) -> Callable:
    """q/k/v: the head-dim mask broadcast over the H heads (head-major rows) -- no tiled copy."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        m = gates.effective("attn_qkv", layer)
        d = m.numel()
        w = (lin.weight.view(heads, d, -1) * m.view(1, d, 1)).view_as(lin.weight)
        b = None if lin.bias is None else (lin.bias.view(heads, d) * m).view(-1)
        return F.linear(x, w, b)

    return forward


def _out_linear(
    lin: nn.Linear, gates: GateSet, layer: int, gate_out: str, gate_in: str | None = None
) -> Callable:
    """A Linear whose output (rows + bias) and optionally input (columns) are gated."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        m_out = gates.effective(gate_out, layer)
        if gate_in is None:
            w = lin.weight * m_out[:, None]
        else:
            w = lin.weight * torch.outer(m_out, gates.effective(gate_in, layer))
        b = None if lin.bias is None else lin.bias * m_out
        return F.linear(x, w, b)

    return forward


def install_fused_gates(model: nn.Module, gates: GateSet, mods: ViTModules | None = None) -> list[Any]:
    """Fold the masks into LayerNorm affines and Linear weights (same function as
    :func:`.gates.install_gates`, fewer and smaller kernels). Returns handles with ``remove()``."""
    mods = mods or locate(model)
    handles: list[Any] = []
    for layer, lm in enumerate(mods.layers):
        for mod, fwd in (
            (lm.ln_before, _layernorm(lm.ln_before, gates, "attn_in", layer)),
            (lm.q, _head_linear(lm.q, gates, layer, mods.num_heads)),
            (lm.k, _head_linear(lm.k, gates, layer, mods.num_heads)),
            (lm.v, _head_linear(lm.v, gates, layer, mods.num_heads)),
            (lm.o, _out_linear(lm.o, gates, layer, "attn_out")),
            (lm.ln_after, _layernorm(lm.ln_after, gates, "mlp_in", layer)),
            (lm.fc2, _out_linear(lm.fc2, gates, layer, "mlp_out", gate_in="mlp_hid")),
        ):
            if "forward" in mod.__dict__:
                raise RuntimeError(
                    f"{type(mod).__name__} already has an instance forward (gates installed twice?)"
                )
            handles.append(ForwardOverride(mod, fwd))
    return handles
