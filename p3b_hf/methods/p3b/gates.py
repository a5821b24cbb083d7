"""P3B's six structured soft masks per encoder layer, the hooks that apply them, and the
parameter counting the budget and threshold search rely on (docs/p3b.md §1.1-§1.2).

The masks live in a :class:`GateSet` that is attached to the HF model as ``model.p3b_gates``: that way
DDP averages their gradients (the Taylor scores are then identical on every rank, as in the reference)
and the Trainer moves them with the model. They are applied by forward hooks at exactly the places the
reference multiplies them (see :data:`GATES`), so the stock HF forward is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...cost import count_cost
from ...models.families import PLAIN, dense_intermediate_size, require_family
from ...models.locator import ViTModules, locate

#: gate name -> (sub-block, what it multiplies in the HF forward)
GATES: dict[str, tuple[str, str]] = {
    "attn_in": ("attn", "output of layernorm_before (LN computed over all C)"),
    "attn_qkv": ("attn", "outputs of q/k/v, the head-dim mask tiled over the H heads"),
    "attn_out": ("attn", "output of the attention output projection (after its bias)"),
    "mlp_in": ("mlp", "output of layernorm_after"),
    "mlp_hid": ("mlp", "input of fc2 = GELU(fc1(x)) output"),
    "mlp_out": ("mlp", "output of fc2 (after its bias, before the residual add)"),
}
#: order in which a block's gates are concatenated before sorting (the reference's order)
BLOCK_GATES: dict[str, tuple[str, str, str]] = {
    "attn": ("attn_in", "attn_out", "attn_qkv"),
    "mlp": ("mlp_in", "mlp_out", "mlp_hid"),
}
HARD_THRESHOLD = 0.5


@dataclass(frozen=True)
class Dims:
    """The architecture numbers P3B needs; built from a config alone (no weights).

    ``k_bias``: whether the key projection has a bias (BEiT's has none). ``attn_extra`` / ``mlp_extra``:
    parameters of a sub-block outside its Linears and LayerNorm -- layer scale (BEiT, DINOv2: ``C`` per
    sub-block) and BEiT's per-layer relative position bias table (``R x heads``) -- counted at full size
    like the LayerNorm, so the block sizes ``|W_b|`` add up to the model's parameters.
    """

    hidden: int
    heads: int
    head_dim: int
    mlp: int
    layers: int
    qkv_bias: bool
    k_bias: bool = True
    attn_extra: int = 0
    mlp_extra: int = 0
    #: Linears reading the MLP input per hidden unit: 1 (fc1), 2 for a gated MLP (gate + up, the record's
    #: ``Family.gated_mlp``): a hidden unit then costs two rows and a column
    mlp_reads: int = 1

    @classmethod
    def from_config(cls, config: Any) -> Dims:
        h = int(config.num_attention_heads)
        c = int(config.hidden_size)
        fam = require_family(config, PLAIN)
        layer_scale = fam.layer_scale(config)
        rel = 0
        if fam.rel_bias is not None and fam.rel_bias.per_layer(config):
            rel = fam.rel_bias.rows(config) * h
        ls = c if layer_scale else 0
        return cls(
            c,
            h,
            c // h,
            dense_intermediate_size(config),
            int(config.num_hidden_layers),
            bool(getattr(config, "qkv_bias", True)),
            k_bias=fam.k_bias,
            attn_extra=ls + rel,
            mlp_extra=ls,
            mlp_reads=2 if fam.is_gated(config) else 1,
        )

    def gate_size(self, gate: str) -> int:
        return {
            "attn_in": self.hidden,
            "attn_qkv": self.head_dim,
            "attn_out": self.hidden,
            "mlp_in": self.hidden,
            "mlp_hid": self.mlp,
            "mlp_out": self.hidden,
        }[gate]

    @property
    def num_blocks(self) -> int:
        return 2 * self.layers


# ---------------------------------------------------------------------------------- counting (docs/p3b.md §1.2)
def attn_linear_params(d: Dims, a: Any, q: Any, o: Any) -> Any:
    """Kept parameters of qkv + proj with ``a`` read channels, ``q`` head dims, ``o`` written channels.

    Works elementwise on tensors too (the threshold search evaluates every cut at once).
    """
    inner = d.heads * q
    biases = (3 if d.k_bias else 2) if d.qkv_bias else 0
    return a * 3 * inner + biases * inner + inner * o + o


def mlp_linear_params(d: Dims, i: Any, h: Any, o: Any) -> Any:
    """Kept parameters of fc1 + fc2 (gated: gate + up + down) with ``i`` read channels, ``h`` hidden neurons,
    ``o`` written channels."""
    return d.mlp_reads * (i * h + h) + h * o + o


def full_linear_params(d: Dims) -> tuple[int, int]:
    """Unpruned Linear counts of one (attn, mlp) pair: what the threshold search's goal is relative to."""
    return (
        int(attn_linear_params(d, d.hidden, d.head_dim, d.hidden)),
        int(mlp_linear_params(d, d.hidden, d.mlp, d.hidden)),
    )


def block_params(d: Dims, widths: list[dict[str, int]] | None = None) -> torch.Tensor:
    """Per sub-block parameter counts ``|w_b|`` (order attn0, mlp0, attn1, ...), LayerNorm (and the
    :class:`Dims` extras: layer scale, relative position table) counted full.

    ``widths[l]`` holds the kept counts per gate of layer ``l``; ``None`` = the full ``|W_b|``.
    DeiT-S: attn 592,128, mlp 1,182,336.
    """
    ln = 2 * d.hidden
    out = []
    for layer in range(d.layers):
        w = widths[layer] if widths is not None else {g: d.gate_size(g) for g in GATES}
        out.append(attn_linear_params(d, w["attn_in"], w["attn_qkv"], w["attn_out"]) + ln + d.attn_extra)
        out.append(mlp_linear_params(d, w["mlp_in"], w["mlp_hid"], w["mlp_out"]) + ln + d.mlp_extra)
    return torch.tensor(out, dtype=torch.float64)


def non_block_params(model_or_config: Any, reference: bool = False) -> int:
    """Parameters outside the encoder blocks (embeddings, final norm, head(s)).

    Clean: the exact count of :func:`p3b_hf.count_cost`. ``reference=True`` reproduces the reference's
    ``count_non_block_param``, which ignores the distillation token and distillation head.
    DeiT-S (ViT config) with K=100: 410,596.
    """
    cost = count_cost(model_or_config)
    n = cost["non_block_params"]
    if reference:
        cfg = getattr(model_or_config, "config", model_or_config)
        c, k = int(cfg.hidden_size), int(cfg.num_labels)
        model = model_or_config if isinstance(model_or_config, nn.Module) else None
        if require_family(cfg, PLAIN).special_tokens(cfg) == 2:
            n -= c  # distillation token
        if (model is not None and hasattr(model, "distillation_classifier")) or getattr(
            cfg, "distillation_head", False
        ):
            n -= c * k + k
    return int(n)


def param_per_element(d: Dims, gate: str, w: dict[str, int]) -> int:
    """What pruning one element of ``gate`` removes given the other gates' kept counts ``w`` (docs/p3b.md §1.2;
    biases ignored, +1 for the LayerNorm in front of an input gate)."""
    h = d.heads
    return {
        "attn_in": 1 + 3 * h * w["attn_qkv"],
        "attn_qkv": 3 * h * w["attn_in"] + h * w["attn_out"],
        "attn_out": h * w["attn_qkv"],
        "mlp_in": 1 + d.mlp_reads * w["mlp_hid"],
        "mlp_hid": d.mlp_reads * w["mlp_in"] + w["mlp_out"],
        "mlp_out": w["mlp_hid"],
    }[gate]


# ---------------------------------------------------------------------------------- the mask module
class GateSet(nn.Module):
    """The soft masks ``m`` of every layer, one ``nn.Parameter`` per (gate, layer), initialised to 1.

    ``hard=True`` makes the hooks apply ``(m >= 0.5)`` instead of ``m`` (the "hard-masked model" that
    physical pruning must reproduce exactly).
    """

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        for g in GATES:
            setattr(
                self,
                g,
                nn.ParameterList([nn.Parameter(torch.ones(dims.gate_size(g))) for _ in range(dims.layers)]),
            )
        self.hard = False
        self.keep_in_graph = False  # see freeze()

    def mask(self, gate: str, layer: int) -> nn.Parameter:
        return getattr(self, gate)[layer]

    def effective(self, gate: str, layer: int) -> torch.Tensor:
        m = self.mask(gate, layer)
        if self.hard:
            hard = (m.detach() >= HARD_THRESHOLD).to(m.dtype)
            # frozen under DDP: the value is the hard mask, the (discarded) gradient keeps m in the graph
            return m + (hard - m).detach() if self.keep_in_graph else hard
        return m

    def named_masks(self) -> list[tuple[str, int, nn.Parameter]]:
        return [(g, layer, self.mask(g, layer)) for layer in range(self.dims.layers) for g in GATES]

    def kept_widths(self) -> list[dict[str, int]]:
        """Hard kept count per gate and layer (M >= 0.5)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            return [
                {g: int((self.mask(g, layer) >= HARD_THRESHOLD).sum()) for g in GATES}
                for layer in range(self.dims.layers)
            ]

    def kept_indices(self, gate: str, layer: int) -> list[int] | None:
        """Sorted kept indices of one gate, ``None`` when all are kept (WidthPlan convention)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            keep = (self.mask(gate, layer) >= HARD_THRESHOLD).nonzero().flatten().tolist()
            return None if len(keep) == self.dims.gate_size(gate) else [int(i) for i in keep]

    def harden(self) -> None:
        """Replace every mask by its hard version (finalisation)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            for _, _, m in self.named_masks():
                m.copy_((m >= HARD_THRESHOLD).to(m.dtype))

    def freeze(self, keep_in_graph: bool = False) -> None:
        """Finalisation: hard masks that never change again -- applied as hard 0/1 values, no gradient,
        no optimizer update. ``keep_in_graph`` (DDP): the masks keep ``requires_grad`` so DDP's reducer,
        built when they were trainable, still sees a gradient for every parameter; the value is the hard
        mask all the same, and :meth:`drop_grads` discards those gradients before each optimizer step."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            self.harden()
            self.hard, self.keep_in_graph = True, keep_in_graph
            for _, _, m in self.named_masks():
                m.requires_grad_(keep_in_graph)
                m.grad = None

    def drop_grads(self) -> None:
        """Forget the mask gradients (frozen masks must not be moved by an optimizer)."""
        for _, _, m in self.named_masks():
            m.grad = None

    def flat_grad(self) -> torch.Tensor | None:
        """All mask gradients concatenated (``None`` if no backward reached them)."""
        grads = [m.grad for _, _, m in self.named_masks()]
        if any(g is None for g in grads):
            return None
        return torch.cat([g.reshape(-1) for g in grads])


def _mul_out(gates: GateSet, gate: str, layer: int, tile: int = 1) -> Callable:
    def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        m = gates.effective(gate, layer)
        if tile > 1:
            m = m.repeat(tile)
        return out * m.to(out.dtype)

    return hook


def _mul_in(gates: GateSet, gate: str, layer: int) -> Callable:
    def hook(_mod: nn.Module, inp: tuple) -> tuple:
        m = gates.effective(gate, layer)
        return (inp[0] * m.to(inp[0].dtype), *inp[1:])

    return hook


def install_gates(model: nn.Module, gates: GateSet, mods: ViTModules | None = None) -> list[Any]:
    """Register the hooks that multiply the masks into the forward (docs/p3b.md §1.1).

    q/k/v outputs are head-major (H, d) in HF, so the head-dim mask is tiled H times.
    Returns the hook handles (``handle.remove()`` restores the plain model).
    """
    mods = mods or locate(model)
    handles = []
    for layer, lm in enumerate(mods.layers):
        handles.append(lm.ln_before.register_forward_hook(_mul_out(gates, "attn_in", layer)))
        for lin in (lm.q, lm.k, lm.v):
            handles.append(lin.register_forward_hook(_mul_out(gates, "attn_qkv", layer, tile=mods.num_heads)))
        handles.append(lm.o.register_forward_hook(_mul_out(gates, "attn_out", layer)))
        handles.append(lm.ln_after.register_forward_hook(_mul_out(gates, "mlp_in", layer)))
        handles.append(lm.fc2.register_forward_pre_hook(_mul_in(gates, "mlp_hid", layer)))
        handles.append(lm.fc2.register_forward_hook(_mul_out(gates, "mlp_out", layer)))
    return handles
