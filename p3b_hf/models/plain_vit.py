"""The "ideal" plain ViT of a pruned model: the same Linear / LayerNorm shapes, no gathers/scatters.

A P3B-pruned layer reads a *subset* of the residual channels (a gather) and writes its output into
another subset (a scatter-add). The ideal model that speed is judged against does exactly the same
matrix work but reads and writes *contiguous prefixes* of the residual stream (``x[..., :a]``,
a view, and ``x[..., :o] += u``), i.e. what a hand-written ViT with these widths would cost.
Its LayerNorm normalises the prefix it reads (no full-width statistics).

It is built from a :class:`P3BViTConfig` and reuses the P3B modules, so parameter names, counts
and every Linear shape are identical to the pruned model (``load_state_dict`` of the pruned
weights works); only the encoder layers' forward differs. It computes a *different function* than
the pruned model -- it exists to be timed, not to be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_p3b_vit import P3BViTConfig
from .modeling_p3b_vit import P3BDeiTForImageClassification, P3BViTForImageClassification, P3BViTLayer


def _prefix_width(subset: list[int] | None, full: int) -> int:
    return full if subset is None else len(subset)


def _prefix_add(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x`` with ``update`` added to its first ``update.shape[-1]`` channels (a view, no index);
    out of place, like the pruned layer's ``index_add``."""
    width = update.shape[-1]
    if width == x.shape[-1]:
        return x + update
    out = x.clone()
    out[..., :width] += update.to(out.dtype)
    return out


class PlainViTLayer(nn.Module):
    """Adopts the children of a :class:`P3BViTLayer` (same names, same tensors) and runs them on
    channel prefixes instead of index subsets."""

    def __init__(self, layer: P3BViTLayer, config: P3BViTConfig, index: int) -> None:
        super().__init__()
        for name, child in layer.named_children():
            self.add_module(name, child)
        c = config.hidden_size
        self.attn_in = _prefix_width(config.layer_attn_in[index], c)
        self.mlp_in = _prefix_width(config.layer_mlp_in[index], c)
        self.attn_removed, self.mlp_removed = layer.attn_removed, layer.mlp_removed
        self.attn_active, self.mlp_active = layer.attn_active, layer.mlp_active
        self.eps = config.layer_norm_eps

    def _norm(self, x: torch.Tensor, ln: nn.Module, width: int) -> torch.Tensor:
        return F.layer_norm(x[..., :width], (width,), ln.weight, ln.bias, self.eps)

    def forward(self, x: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, None]:
        if self.attn_active:
            if self.attn_removed:
                update = self.attention.output(x[..., :1])
            else:
                update = self.attention(self._norm(x, self.layernorm_before, self.attn_in))[0]
            x = _prefix_add(x, update)
        if self.mlp_active:
            if self.mlp_removed:
                update = self.output(x[..., :1])
            else:
                update = self.output(self.intermediate(self._norm(x, self.layernorm_after, self.mlp_in)))
            x = _prefix_add(x, update)
        return x, None  # (hidden states, attention weights): the P3B layer protocol; no weights here


def build_plain_vit(config: P3BViTConfig) -> nn.Module:
    """A randomly initialised ideal plain ViT with the widths of ``config`` (a pruned config)."""
    cls = P3BDeiTForImageClassification if config.distilled else P3BViTForImageClassification
    model = cls(config)
    base = getattr(model, model.base_model_prefix)
    base.encoder.layer = nn.ModuleList(
        PlainViTLayer(layer, config, i) for i, layer in enumerate(base.encoder.layer)
    )
    return model.eval()


def plain_like(pruned: nn.Module) -> nn.Module:
    """The ideal plain ViT of a pruned P3B model, holding a copy of the same weights."""
    plain = build_plain_vit(pruned.config)
    plain.load_state_dict(pruned.state_dict(), strict=True)
    ref = next(pruned.parameters())
    return plain.to(device=ref.device, dtype=ref.dtype).train(pruned.training)


def is_plain_vit(model: nn.Module) -> bool:
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return bool(layers) and isinstance(layers[0], PlainViTLayer)
