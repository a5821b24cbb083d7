# Remote code: shipped next to pruned checkpoints as a relative import of modeling_p3b_vit.py /
# modeling_p3b_beit.py / modeling_p3b_dinov2.py (``save_pretrained`` copies a code file's relative imports,
# ``from_pretrained(trust_remote_code=True)`` fetches them), so it imports only torch / transformers.
"""The pruned building blocks the plain-ViT families share (ViT/DeiT, BEiT, DINOv2), written once.

A layer of any of those families keeps the full-width residual stream and lets every sub-block read a channel
subset (:class:`P3BLayerNorm`), write a channel subset (:func:`_add_into`), or be removed down to its constant
output (:class:`P3BConstantOutput`); attention, position-embedding interpolation, stochastic depth and the
layer loop with gradient checkpointing are the same code in all three. The family files hold only what
differs (their parameter names, embeddings, layer scale, relative position bias).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as _init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput


# (each file must stand alone on the Hub; tests/test_families.py checks the copies are identical) ----
class _IndexCache:
    """Holds a channel subset as a Python list and hands out device tensors lazily.

    Index tensors are *not* buffers: transformers 5 builds models on the meta device and would
    leave buffers created in ``__init__`` uninitialised; the indices live in the config anyway.
    """

    def __init__(self, indices: list[int] | None) -> None:
        self.indices = None if indices is None else [int(i) for i in indices]
        self._cache: dict[torch.device, torch.Tensor] = {}

    def get(self, device: torch.device) -> torch.Tensor | None:
        if self.indices is None:
            return None
        t = self._cache.get(device)
        if t is None:
            t = torch.tensor(self.indices, dtype=torch.long, device=device)
            if type(t) is torch.Tensor:  # never keep a tracer's fake tensor (torch.export, compile)
                self._cache[device] = t
        return t


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[..., idx]``: on CPU ``index_select`` on dim 1 of the 2-D view (1.6-1.8x faster than
    ``torch.gather`` on the last dim), elsewhere ``torch.gather`` (coalesced on CUDA)."""
    if x.device.type == "cpu" and x.is_contiguous():
        return x.view(-1, x.shape[-1]).index_select(1, idx).view(*x.shape[:-1], idx.numel())
    return torch.gather(x, -1, idx.expand(*x.shape[:-1], -1))


class P3BLayerNorm(nn.Module):
    """LayerNorm whose affine part (and output) covers a subset of the residual channels.

    ``full_stats=True``: statistics over all input channels, then only the kept channels are
    produced -- identical to ``LayerNorm(C)`` followed by a gather, but with ``2*len(subset)``
    parameters. ``full_stats=False``: an ordinary LayerNorm over the gathered subset.
    """

    def __init__(self, subset: list[int] | None, width: int, eps: float, full_stats: bool = True) -> None:
        super().__init__()
        self.subset = _IndexCache(subset)
        n = width if subset is None else len(subset)
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.eps = eps
        self.full_stats = full_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.subset.get(x.device)
        if idx is None:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        if not self.full_stats:
            sub = _take(x, idx)
            return F.layer_norm(sub, (sub.shape[-1],), self.weight, self.bias, self.eps)
        # LayerNorm(C) with the affine scattered to full width, then the gather: one normalisation
        # pass and one gather (not gather + scale + shift passes over the subset).
        c = x.shape[-1]
        weight = self.weight.new_zeros(c).index_copy(0, idx, self.weight)
        bias = self.bias.new_zeros(c).index_copy(0, idx, self.bias)
        return _take(F.layer_norm(x, (c,), weight, bias, self.eps), idx)


class P3BConstantOutput(nn.Linear):
    """What is left of a removed sub-block: its output Linear with zero inputs, i.e. the constant ``bias``
    added to its output channels.

    It *is* an ``nn.Linear`` (``in_features=0``) so that tools matching Linears by name -- ``peft``'s
    ``target_modules=["dense"]``, quantizers -- meet the Linear type they expect instead of failing on a
    foreign module: a LoRA adapter on it has a ``[r, 0]`` A matrix and adds exactly zero. The ``[out, 0]``
    weight is not a parameter (checkpoints hold only ``bias``, the legacy key); it is made on access.
    The input only gives the output's leading shape (callers pass ``x[..., :0]``).
    """

    def __init__(self, width: int) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = 0, width
        self.bias = nn.Parameter(torch.zeros(width))

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.bias.new_zeros(self.out_features, 0)

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        return self.bias.to(reference.dtype).expand(*reference.shape[:-1], -1)


class _Removed(nn.Module):
    """Container keeping the legacy key path ``<...>.<attr>.bias`` of a removed sub-block's output Linear."""

    def __init__(self, out_width: int, attr: str = "dense") -> None:
        super().__init__()
        self.attr = attr
        self.add_module(attr, P3BConstantOutput(out_width))

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attr)(reference[..., :0])


class P3BGatedMLP(nn.Module):
    """A gated MLP at per-layer widths, ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` (SwiGLU with
    ``act="silu"``; the transformers 5.x module names). One hidden unit is a (``gate_proj`` row, ``up_proj`` row,
    ``down_proj`` column) triple, so a pruned layer is this module at the kept width; a removed one is
    ``_Removed(out_width, attr=P3BGatedMLP.out_attr)``. Any family whose config says its MLP is gated builds it."""

    out_attr = "down_proj"

    def __init__(self, in_width: int, hidden: int, out_width: int, act: str = "silu") -> None:
        super().__init__()
        self.gate_proj = nn.Linear(in_width, hidden)
        self.up_proj = nn.Linear(in_width, hidden)
        self.down_proj = nn.Linear(hidden, out_width)
        self.act_fn = ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _add_into(residual: torch.Tensor, update: torch.Tensor, out_index: _IndexCache) -> torch.Tensor:
    # Out of place on purpose: hooks may hold the residual (an in-place index_add_ would save one
    # copy, but silently change tensors captured under no_grad). p3b_hf.optimize owns its stream
    # and does it in place.
    idx = out_index.get(residual.device)
    if idx is None:
        return residual + update
    return residual.index_add(-1, idx, update.to(residual.dtype))


def _width(subset: list[int] | None, full: int) -> int:
    return full if subset is None else len(subset)


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    dropout: float,
    training: bool,
    eager: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention on ``[B, H, N, d]`` tensors -> (``[B, N, H*d]``, weights or ``None``).

    ``eager`` spells the softmax out (the stock eager path, float32 softmax) and returns the attention
    weights; otherwise one ``scaled_dot_product_attention`` call with the same arguments as the stock
    sdpa path (so a full-width model equals the stock model bit for bit).
    """
    if eager:
        weights = torch.matmul(q, k.transpose(2, 3)) * scale
        if bias is not None:
            weights = weights + bias
        weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        weights = F.dropout(weights, p=dropout, training=training)
        out = torch.matmul(weights, v)
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout if training else 0.0, scale=scale
        )
        weights = None
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d), weights


def _interpolate_positions(
    pos: torch.Tensor,
    num_special: int,
    height: int,
    width: int,
    patch: int,
    fp32: bool = False,
    antialias: bool = False,
) -> torch.Tensor:
    """Bicubic resize of the patch part of ``pos`` ``[1, S+P, C]`` to an ``height x width`` image (stock
    ``interpolate_pos_encoding``; ``fp32`` interpolates in float32 as DINOv2 does, ``antialias`` as the
    DINOv2-with-registers code does). Returns ``pos`` itself when the grid already matches."""
    num_positions = pos.shape[1] - num_special
    new_h, new_w = height // patch, width // patch
    if not torch.jit.is_tracing() and new_h * new_w == num_positions and height == width:
        return pos
    side = int(num_positions**0.5)
    dim = pos.shape[-1]
    grid = pos[:, num_special:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    dtype = grid.dtype
    grid = F.interpolate(
        grid.to(torch.float32) if fp32 else grid,
        size=(new_h, new_w),
        mode="bicubic",
        align_corners=False,
        antialias=antialias,
    ).to(dtype)
    return torch.cat((pos[:, :num_special], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (identity at p = 0 or in eval), as the stock ``DropPath``."""
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = torch.floor(torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device) + keep)
    return x.div(keep) * mask


def _flag(value: bool | None, config: Any, name: str, default: bool = False) -> bool:
    """A forward flag, defaulting to the config's value like the stock models."""
    return bool(getattr(config, name, default)) if value is None else bool(value)


def _eager(config: Any, output_attentions: bool) -> bool:
    """Eager attention when asked for weights or when the config selects it (``attn_implementation``)."""
    return output_attentions or getattr(config, "_attn_implementation", None) == "eager"


class _P3BEncoderMixin:
    """Runs the layers with optional gradient checkpointing, collecting hidden states and attentions.

    ``gradient_checkpointing`` / ``_gradient_checkpointing_func`` are set by
    ``PreTrainedModel.gradient_checkpointing_enable`` (the transformers >= 4.35 protocol)."""

    gradient_checkpointing = False

    def _run_layers(
        self, layers: nn.ModuleList, x: torch.Tensor, hidden: bool, attentions: bool, *extra: Any
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        # ``extra``: the layer's further arguments, positional -- reentrant checkpointing
        # (``use_reentrant=True``) takes no keyword arguments and only gives gradients to tensor arguments
        # passed positionally (BEiT's shared relative position bias).
        states, weights = ([x] if hidden else []), []
        for layer in layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, w = self._gradient_checkpointing_func(layer.__call__, x, attentions, *extra)
            else:
                x, w = layer(x, attentions, *extra)
            if hidden:
                states.append(x)
            if attentions:
                weights.append(w)
        return x, states, weights


def _layernorm(config: Any, subset: list[int] | None) -> P3BLayerNorm:
    """The LayerNorm in front of a sub-block that reads ``subset`` (``config.layernorm_mode`` decides the stats)."""
    return P3BLayerNorm(
        subset, config.hidden_size, config.layer_norm_eps, config.layernorm_mode == "full_stats"
    )


class P3BPatchEmbeddings(nn.Module):
    """The patch projection (``projection``, a strided Conv2d) -> ``[B, patches, C]``. ``fixed_size``: refuse
    another input size unless ``interpolate_pos_encoding`` (ViT/DeiT; BEiT and DINOv2 resize their positions)."""

    fixed_size = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.image_size = int(config.image_size)
        self.patch_size = int(config.patch_size)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        if (
            self.fixed_size
            and not interpolate_pos_encoding
            and (h != self.image_size or w != self.image_size)
        ):
            raise ValueError(
                f"Input image size ({h}*{w}) doesn't match model ({self.image_size}*{self.image_size}). "
                "Pass interpolate_pos_encoding=True to run at another resolution."
            )
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


def _cls_and_patches(
    embeddings: nn.Module, pixel_values: torch.Tensor, masked: torch.Tensor | None
) -> torch.Tensor:
    """CLS token + patch tokens, the ``masked`` ones (``bool_masked_pos``) replaced by ``embeddings.mask_token``
    (BEiT / DINOv2 masked image modelling)."""
    x = embeddings.patch_embeddings(pixel_values)
    b, n, _ = x.shape
    if masked is not None:
        mask_tokens = embeddings.mask_token.expand(b, n, -1)
        mask = masked.unsqueeze(-1).type_as(mask_tokens)
        x = x * (1 - mask) + mask_tokens * mask
    return torch.cat((embeddings.cls_token.expand(b, -1, -1), x), dim=1)


class P3BSelfAttention(nn.Module):
    """q/k/v of the kept heads x head dims under the legacy names ``query`` / ``key`` / ``value``, then
    :func:`_attention` with the config's per-layer softmax scale. ``key_bias``: ``None`` follows
    ``config.qkv_bias`` like query and value (ViT, DINOv2); BEiT's key has none."""

    key_bias: bool | None = None

    def __init__(self, config: Any, layer: int, in_width: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.layer_num_heads[layer]
        self.head_dim = config.layer_head_dims[layer]
        self.scale = config.layer_attention_scales[layer]
        self.dropout = config.attention_probs_dropout_prob
        inner = self.num_heads * self.head_dim
        qv_bias = bool(getattr(config, "qkv_bias", True))
        self.query = nn.Linear(in_width, inner, bias=qv_bias)
        self.key = nn.Linear(in_width, inner, bias=qv_bias if self.key_bias is None else self.key_bias)
        self.value = nn.Linear(in_width, inner, bias=qv_bias)

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        shape = (b, n, self.num_heads, self.head_dim)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        eager = _eager(self.config, output_attentions)
        return _attention(
            q, k, v, scale=self.scale, bias=bias, dropout=self.dropout, training=self.training, eager=eager
        )


class P3BLinear(nn.Module):
    """A sub-block's output Linear under the legacy name ``dense`` (the stock ``SelfOutput`` / ``Output``)."""

    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class P3BIntermediate(nn.Module):
    """The MLP's first Linear (``dense``, kept neurons only) and activation (the stock ``Intermediate``)."""

    def __init__(self, config: Any, in_width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class P3BAttention(nn.Module):
    """``attention`` (q/k/v, :attr:`self_attention_class`) + ``output`` (the kept heads -> written channels)."""

    self_attention_class: type = P3BSelfAttention
    output_class: type = P3BLinear

    def __init__(self, config: Any, layer: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.attention = self.self_attention_class(config, layer, in_width)
        self.output = self.output_class(
            config.layer_num_heads[layer] * config.layer_head_dims[layer], out_width
        )

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = self.attention(x, output_attentions, bias)
        return self.output(out), weights


class _P3BLayerMixin:
    """The residual step of every plain-ViT layer: each sub-block reads its ``in`` channels and adds its update
    into its ``out`` channels of the full-width stream (stochastic depth per sub-block); a removed sub-block only
    adds its constant output, and one that writes no channel adds nothing. The family supplies ``_attend``
    (normalise, attend, scale) and ``_feed_forward`` (the MLP) and names where a removed MLP's constant lives
    (``removed_mlp_attr``)."""

    drop_path_rate = 0.0
    removed_mlp_attr = "output"

    def _setup_widths(self, config: Any, layer: int) -> tuple[list[int] | None, list[int] | None, int, int]:
        """Set the index caches and removed / active flags; return ``(attn_in, mlp_in, attn_out_w, mlp_out_w)``.
        A removed attention becomes ``attention.output`` = its constant (the legacy key path)."""
        c = config.hidden_size
        a_in, a_out = config.layer_attn_in[layer], config.layer_attn_out[layer]
        m_in, m_out = config.layer_mlp_in[layer], config.layer_mlp_out[layer]
        self.attn_out_index = _IndexCache(a_out)
        self.mlp_out_index = _IndexCache(m_out)
        self.attn_removed = config.layer_num_heads[layer] * config.layer_head_dims[layer] == 0
        self.mlp_removed = config.layer_intermediate_sizes[layer] == 0
        a_out_w, m_out_w = _width(a_out, c), _width(m_out, c)
        self.attn_active, self.mlp_active = a_out_w > 0, m_out_w > 0
        if self.attn_removed and self.attn_active:
            self.attention = nn.Module()
            self.attention.output = _Removed(a_out_w)
        return a_in, m_in, a_out_w, m_out_w

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False, *extra: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None
        if self.attn_active:
            if self.attn_removed:
                update = self.attention.output(x)
            else:
                update, weights = self._attend(x, output_attentions, *extra)
            x = _add_into(x, _drop_path(update, self.drop_path_rate, self.training), self.attn_out_index)
        if output_attentions and weights is None:  # removed attention: zero heads
            weights = x.new_zeros(x.shape[0], 0, x.shape[1], x.shape[1])
        if self.mlp_active:
            update = getattr(self, self.removed_mlp_attr)(x) if self.mlp_removed else self._feed_forward(x)
            x = _add_into(x, _drop_path(update, self.drop_path_rate, self.training), self.mlp_out_index)
        return x, weights


class P3BPreLNLayer(_P3BLayerMixin, nn.Module):
    """The pre-LN layer under the ViT-style names (``layernorm_before`` / ``attention`` / ``layernorm_after`` /
    ``intermediate`` / ``output``) that ViT/DeiT, I-JEPA, CLIP and SigLIP run, written once. Each sub-block reads
    ``in`` channels and writes ``out`` channels of the full-width residual stream; a removed sub-block only adds
    its constant output. ``update_dropout``: the updates pass through ``dropout`` (``hidden_dropout_prob``, as
    in ViT); CLIP and SigLIP have none."""

    update_dropout = False

    def __init__(self, config: Any, layer: int) -> None:
        super().__init__()
        a_in, m_in, a_out_w, m_out_w = self._setup_widths(config, layer)
        c, hidden = config.hidden_size, config.layer_intermediate_sizes[layer]
        if not self.attn_removed:
            self.layernorm_before = _layernorm(config, a_in)
            self.attention = P3BAttention(config, layer, _width(a_in, c), a_out_w)
        if self.mlp_removed:
            if self.mlp_active:
                self.output = _Removed(m_out_w)
        else:
            self.layernorm_after = _layernorm(config, m_in)
            self.intermediate = P3BIntermediate(config, _width(m_in, c), hidden)
            self.output = P3BLinear(hidden, m_out_w)
        if self.update_dropout:
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _drop(self, update: torch.Tensor) -> torch.Tensor:
        return self.dropout(update) if self.update_dropout else update

    def _attend(self, x: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        update, weights = self.attention(self.layernorm_before(x), output_attentions)
        return self._drop(update), weights

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._drop(self.output(self.intermediate(self.layernorm_after(x))))


class _P3BPreTrainedMixin:
    """What the plain-ViT families' ``PreTrainedModel`` classes share: the HF class attributes, the initialisation
    of the shared modules (the family initialises its own in ``_init_family_weights``) and the output assembly."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, P3BConstantOutput):  # an nn.Linear with no inputs: only its bias
            _init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            _init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, P3BLayerNorm)):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)
        else:
            self._init_family_weights(module, std)

    #: the family's embeddings class whose tokens :meth:`_init_family_weights` initialises (``None``: none)
    _token_embeddings: type[nn.Module] | None = None

    def _init_family_weights(self, module: nn.Module, std: float) -> None:
        """The family's own parameters. By default those of its ``_token_embeddings`` as the stock ViT-style
        models do: positions, then the CLS and distillation tokens present, truncated normal; a mask token zero."""
        if self._token_embeddings is not None and isinstance(module, self._token_embeddings):
            _init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            for name in ("cls_token", "distillation_token"):
                if hasattr(module, name):
                    _init.trunc_normal_(getattr(module, name), mean=0.0, std=std)
            if hasattr(module, "mask_token"):
                _init.zeros_(module.mask_token)

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def _flags(
        self,
        pixel_values: torch.Tensor | None,
        output_hidden_states: bool | None,
        output_attentions: bool | None,
    ) -> tuple[bool, bool]:
        """``(hidden, attentions)`` of a backbone forward, defaulting to the config like the stock models."""
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        return (
            _flag(output_hidden_states, self.config, "output_hidden_states"),
            _flag(output_attentions, self.config, "output_attentions"),
        )

    def _backbone_output(
        self,
        seq: torch.Tensor,
        pooled: torch.Tensor | None,
        encoded: tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]],
        flags: tuple[bool, bool],
        return_dict: bool | None,
    ) -> BaseModelOutputWithPooling | tuple:
        """``encoded``: the encoder's ``(x, states, weights)``; ``flags``: ``(hidden, attentions)``."""
        (_, states, weights), (hidden, attentions) = encoded, flags
        out = BaseModelOutputWithPooling(
            last_hidden_state=seq,
            pooler_output=pooled,
            hidden_states=tuple(states) if hidden else None,
            attentions=tuple(weights) if attentions else None,
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()

    def _classifier_output(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        base: Any,
        return_dict: bool | None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
        out = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=base.hidden_states, attentions=base.attentions
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


class _P3BClassifierMixin:
    """The image classifier of a plain-ViT family: the backbone under ``base_model_prefix`` and a ``classifier``
    Linear (``Identity`` without labels) on the family's features (``_features``)."""

    def _init_head(self, config: Any, backbone: nn.Module, in_features: int) -> None:
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, backbone)
        k = config.num_labels
        self.classifier = nn.Linear(in_features, k) if k > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput | tuple:
        base = getattr(self, self.base_model_prefix)(
            pixel_values, output_hidden_states, output_attentions, interpolate_pos_encoding, return_dict=True
        )
        return self._head(base, labels, return_dict, **kwargs)

    def _head(self, base: Any, labels: torch.Tensor | None, return_dict: bool | None, **kwargs: Any) -> Any:
        logits = self.classifier(self._features(base))
        return self._classifier_output(logits, labels, base, return_dict, **kwargs)


class P3BEncoder(_P3BEncoderMixin, nn.Module):
    """``layer``: one :attr:`layer_class` per config layer, run by :meth:`_P3BEncoderMixin._run_layers`."""

    layer_class: type = nn.Module

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.layer = nn.ModuleList([self.layer_class(config, i) for i in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        return self._run_layers(self.layer, x, output_hidden_states, output_attentions)


class _P3BBackboneMixin:
    """The backbone ``forward`` of the plain-ViT families (the stock signature and outputs); the family encodes
    in ``_encode(pixel_values, flags, interpolate_pos_encoding, bool_masked_pos) -> (seq, pooled, encoded)``."""

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple:
        flags = self._flags(pixel_values, output_hidden_states, output_attentions)
        seq, pooled, encoded = self._encode(
            pixel_values, flags, bool(interpolate_pos_encoding), bool_masked_pos
        )
        return self._backbone_output(seq, pooled, encoded, flags, return_dict)
