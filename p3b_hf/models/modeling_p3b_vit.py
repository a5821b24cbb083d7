# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API (plus the sibling configuration file), so that stock transformers
# loads it with ``trust_remote_code=True`` on a machine without p3b_hf.
"""A ViT / DeiT whose every layer may have its own widths.

Parameter names are those of the legacy HF ViT/DeiT checkpoints
(``vit.encoder.layer.{i}.attention.attention.query`` ...), so a full-width config loads a stock
checkpoint unchanged, and a pruned checkpoint is just a smaller safetensors file with the same keys.

Written in the style of ``modeling_vit.py``: explicit modules, no hooks, SDPA attention with an
explicit softmax scale (kept at the dense value after head-dimension pruning). It honours the HF model
contract of the stock classes: ``P3BViTModel`` (``AutoModel``, image feature extraction), hidden states,
attention weights (``output_attentions=True`` computes them eagerly), ``attn_implementation`` "eager" /
"sdpa", gradient checkpointing, ``interpolate_pos_encoding`` and ``return_dict=False``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import ModelOutput

from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig

try:  # transformers >= 5: initialisers that respect already-loaded tensors
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    _init = nn.init


# ---- shared core: the same text in modeling_p3b_vit.py, modeling_p3b_beit.py and modeling_p3b_dinov2.py
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
    pos: torch.Tensor, num_special: int, height: int, width: int, patch: int, fp32: bool = False
) -> torch.Tensor:
    """Bicubic resize of the patch part of ``pos`` ``[1, S+P, C]`` to an ``height x width`` image (stock
    ``interpolate_pos_encoding``; ``fp32`` interpolates in float32 as DINOv2 does). Returns ``pos`` itself
    when the grid already matches."""
    num_positions = pos.shape[1] - num_special
    new_h, new_w = height // patch, width // patch
    if not torch.jit.is_tracing() and new_h * new_w == num_positions and height == width:
        return pos
    side = int(num_positions**0.5)
    dim = pos.shape[-1]
    grid = pos[:, num_special:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    dtype = grid.dtype
    grid = F.interpolate(
        grid.to(torch.float32) if fp32 else grid, size=(new_h, new_w), mode="bicubic", align_corners=False
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


# ---- end of shared core ----


# ---- strict loading: the same text in every modeling_p3b_*.py (tests/test_remote_code.py checks the copies) ----
class P3BCheckpointMismatchError(ValueError):
    """The weights do not fit the config: tensors are missing, or have other widths than the config implies.

    Stock ``from_pretrained`` would give such tensors random values (a log line only) or stop with a long
    load report and a ``RuntimeError``; a pruned checkpoint is only meaningful whole, so it is refused."""


def _safetensors_shapes(directory: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from the safetensors header(s) of a local model dir (no tensor data is read); ``None``
    when there is no ``model.safetensors`` (or index) or a header is unreadable (transformers reports that)."""
    index = os.path.join(directory, "model.safetensors.index.json")
    try:
        if os.path.isfile(index):
            with open(index) as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        elif os.path.isfile(os.path.join(directory, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            return None
        shapes: dict[str, tuple[int, ...]] = {}
        for name in files:
            with open(os.path.join(directory, name), "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        return shapes
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _refuse_misfit(
    model: nn.Module,
    source: Any,
    missing: Any,
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ignore_mismatched_sizes: bool,
) -> None:
    """Raise :class:`P3BCheckpointMismatchError` naming the missing / mismatched tensors and the fix. With
    ``ignore_mismatched_sizes=True`` the classifier head (the keys outside the backbone) may be re-initialised
    -- a new head on purpose -- but nothing else."""
    prefix = f"{model.base_model_prefix}."
    has_head = isinstance(getattr(model, model.base_model_prefix, None), nn.Module)
    head = {k for k in [*missing, *mismatched] if has_head and not k.startswith(prefix)}
    if ignore_mismatched_sizes:
        missing = [k for k in missing if k not in head]
        mismatched = {k: v for k, v in mismatched.items() if k not in head}
    missing = sorted(missing)
    if not missing and not mismatched:
        return
    parts = []
    if missing:
        more = ", ..." if len(missing) > 4 else ""
        parts.append(f"{len(missing)} tensor(s) missing from the weights ({', '.join(missing[:4])}{more})")
    if mismatched:
        shown = "; ".join(
            f"{k}: file {list(f)}, config {list(c)}" for k, (f, c) in sorted(mismatched.items())[:4]
        )
        parts.append(f"{len(mismatched)} tensor(s) whose shape is not the one the config implies ({shown})")
    if set(missing) | set(mismatched) <= head:
        fix = (
            "To train a new classifier head on purpose, pass ignore_mismatched_sizes=True (and num_labels=...): "
            "only the head is then re-initialised. Otherwise re-save the model with save_pretrained."
        )
    else:
        fix = (
            "config.json and the weights come from different runs, or one of them was edited or truncated: "
            "re-save the model with save_pretrained (p3b-hf prune / finetune write both together)."
        )
    raise P3BCheckpointMismatchError(
        f"{source}: the weights do not fit {type(model).__name__}'s config: {'; '.join(parts)}. transformers "
        f"would load this with random values in their place. {fix}"
    )


def _check_before_loading(cls: Any, source: Any, kwargs: dict[str, Any], ignore: bool) -> None:
    """Compare a local dir's safetensors header with the shapes its config implies before transformers builds
    the model, so different widths give one message. Hub ids, variants and config overrides in ``kwargs`` are
    left to the check after loading (same rules)."""
    if not isinstance(source, (str, os.PathLike)) or kwargs.get("variant") or kwargs.get("gguf_file"):
        return
    directory = os.path.join(os.fspath(source), kwargs.get("subfolder") or "")
    shapes = _safetensors_shapes(directory) if os.path.isdir(directory) else None
    if shapes is None:
        return
    config = kwargs.get("config")
    if config is None:
        config = cls.config_class.from_pretrained(directory)
        if any(
            hasattr(config, k) for k in kwargs if k not in ("dtype", "torch_dtype", "attn_implementation")
        ):
            return
    elif not isinstance(config, PretrainedConfig):
        return
    try:
        with torch.device("meta"):
            model = cls(copy.deepcopy(config))
    except Exception:  # noqa: BLE001 - let transformers build it and report; the check after loading still runs
        return
    state = model.state_dict()
    try:  # transformers 5 renames some checkpoint keys on load (Swin); compare under the names on disk
        from transformers.core_model_loading import revert_weight_conversion

        state = revert_weight_conversion(model, state)
    except Exception:  # noqa: BLE001 - older transformers: module names are the checkpoint names
        pass
    expected = {k: tuple(v.shape) for k, v in state.items()}
    prefix, has_head = (
        model.base_model_prefix,
        isinstance(getattr(model, model.base_model_prefix, None), nn.Module),
    )
    matched: set[str] = set()
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    complete = True  # every tensor on disk has a place in the model: then missing ones can be named too
    head_file = not has_head and any(k.startswith(f"{prefix}.") for k in shapes)  # backbone from a classifier
    for key, shape in shapes.items():
        if head_file and not key.startswith(f"{prefix}."):
            continue  # the classifier of the checkpoint: not part of the backbone (transformers drops it too)
        name = key if key in expected else (f"{prefix}.{key}" if has_head else key.removeprefix(f"{prefix}."))
        if name not in expected:
            complete = False
            continue
        matched.add(name)
        if expected[name] != shape:
            mismatched[name] = (shape, expected[name])
    ignored = [re.compile(p) for p in (getattr(cls, "_keys_to_ignore_on_load_missing", None) or [])]
    missing = (
        [k for k in expected if k not in matched and not any(p.search(k) for p in ignored)]
        if complete
        else []
    )
    _refuse_misfit(model, source, missing, mismatched, ignore)


class _P3BStrictLoading:
    """``from_pretrained`` that refuses a checkpoint with missing tensors or other widths than its config (see
    :class:`P3BCheckpointMismatchError`), with p3b_hf installed and as remote code alike."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        ignore = bool(kwargs.pop("ignore_mismatched_sizes", False))
        want_info = bool(kwargs.pop("output_loading_info", False))
        _check_before_loading(cls, pretrained_model_name_or_path, kwargs, ignore)
        # transformers re-initialises what does not fit (instead of raising its RuntimeError); refused below
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *model_args,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **kwargs,
        )
        mismatched = {m[0]: (tuple(m[1]), tuple(m[2])) for m in info.get("mismatched_keys") or ()}
        _refuse_misfit(
            model, pretrained_model_name_or_path, info.get("missing_keys") or (), mismatched, ignore
        )
        return (model, info) if want_info else model


# ---- end of strict loading ----


class P3BViTPatchEmbeddings(nn.Module):
    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__()
        self.image_size = int(config.image_size)
        self.patch_size = int(config.patch_size)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        h, w = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (h != self.image_size or w != self.image_size):
            raise ValueError(
                f"Input image size ({h}*{w}) doesn't match model ({self.image_size}*{self.image_size}). "
                "Pass interpolate_pos_encoding=True to run at another resolution."
            )
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class P3BViTEmbeddings(nn.Module):
    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if config.distilled:
            self.distillation_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = P3BViTPatchEmbeddings(config)
        self.num_special = config.num_special_tokens
        num_tokens = self.patch_embeddings.num_patches + self.num_special
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_tokens, c))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)
        b = x.shape[0]
        special = [self.cls_token.expand(b, -1, -1)]
        if hasattr(self, "distillation_token"):
            special.append(self.distillation_token.expand(b, -1, -1))
        pos = self.position_embeddings
        if interpolate_pos_encoding:
            h, w = pixel_values.shape[-2:]
            pos = _interpolate_positions(pos, self.num_special, h, w, self.patch_embeddings.patch_size)
        x = torch.cat([*special, x], dim=1) + pos
        return self.dropout(x)


class P3BViTSelfAttention(nn.Module):
    def __init__(self, config: P3BViTConfig, layer: int, in_width: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.layer_num_heads[layer]
        self.head_dim = config.layer_head_dims[layer]
        self.scale = config.layer_attention_scales[layer]
        self.dropout = config.attention_probs_dropout_prob
        inner = self.num_heads * self.head_dim
        self.query = nn.Linear(in_width, inner, bias=config.qkv_bias)
        self.key = nn.Linear(in_width, inner, bias=config.qkv_bias)
        self.value = nn.Linear(in_width, inner, bias=config.qkv_bias)

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, _ = x.shape
        shape = (b, n, self.num_heads, self.head_dim)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        return _attention(
            q,
            k,
            v,
            scale=self.scale,
            bias=None,
            dropout=self.dropout,
            training=self.training,
            eager=_eager(self.config, output_attentions),
        )


class P3BViTSelfOutput(nn.Module):
    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class P3BViTAttention(nn.Module):
    def __init__(self, config: P3BViTConfig, layer: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.attention = P3BViTSelfAttention(config, layer, in_width)
        inner = config.layer_num_heads[layer] * config.layer_head_dims[layer]
        self.output = P3BViTSelfOutput(inner, out_width)

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = self.attention(x, output_attentions)
        return self.output(out), weights


class P3BViTIntermediate(nn.Module):
    def __init__(self, config: P3BViTConfig, in_width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class P3BViTOutput(nn.Module):
    def __init__(self, hidden: int, out_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class P3BViTLayer(nn.Module):
    """One encoder layer. Each sub-block reads ``in`` channels and writes ``out`` channels of
    the full-width residual stream; a removed sub-block only adds its constant output."""

    def __init__(self, config: P3BViTConfig, layer: int) -> None:
        super().__init__()
        c = config.hidden_size
        full_stats = config.layernorm_mode == "full_stats"
        a_in, a_out = config.layer_attn_in[layer], config.layer_attn_out[layer]
        m_in, m_out = config.layer_mlp_in[layer], config.layer_mlp_out[layer]
        self.attn_out_index = _IndexCache(a_out)
        self.mlp_out_index = _IndexCache(m_out)
        self.attn_removed = config.layer_num_heads[layer] * config.layer_head_dims[layer] == 0
        self.mlp_removed = config.layer_intermediate_sizes[layer] == 0
        a_out_w, m_out_w = _width(a_out, c), _width(m_out, c)
        # a removed sub-block that writes no channel contributes nothing at all
        self.attn_active = a_out_w > 0
        self.mlp_active = m_out_w > 0
        if self.attn_removed:
            if self.attn_active:
                self.attention = nn.Module()
                self.attention.output = _Removed(a_out_w)
        else:
            self.layernorm_before = P3BLayerNorm(a_in, c, config.layer_norm_eps, full_stats)
            self.attention = P3BViTAttention(config, layer, _width(a_in, c), a_out_w)
        if self.mlp_removed:
            if self.mlp_active:
                self.output = _Removed(m_out_w)
        else:
            self.layernorm_after = P3BLayerNorm(m_in, c, config.layer_norm_eps, full_stats)
            self.intermediate = P3BViTIntermediate(
                config, _width(m_in, c), config.layer_intermediate_sizes[layer]
            )
            self.output = P3BViTOutput(config.layer_intermediate_sizes[layer], m_out_w)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None
        if self.attn_active:
            if self.attn_removed:
                update = self.attention.output(x)
            else:
                update, weights = self.attention(self.layernorm_before(x), output_attentions)
                update = self.dropout(update)
            x = _add_into(x, update, self.attn_out_index)
        if output_attentions and weights is None:  # removed attention: zero heads
            weights = x.new_zeros(x.shape[0], 0, x.shape[1], x.shape[1])
        if self.mlp_active:
            if self.mlp_removed:
                update = self.output(x)
            else:
                update = self.dropout(self.output(self.intermediate(self.layernorm_after(x))))
            x = _add_into(x, update, self.mlp_out_index)
        return x, weights


class P3BViTEncoder(_P3BEncoderMixin, nn.Module):
    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([P3BViTLayer(config, i) for i in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        return self._run_layers(self.layer, x, output_hidden_states, output_attentions)


class P3BViTPreTrainedModel(_P3BStrictLoading, PreTrainedModel):
    config_class = P3BViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["P3BViTEmbeddings", "P3BViTLayer"]
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
        elif isinstance(module, P3BViTEmbeddings):
            _init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            _init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if hasattr(module, "distillation_token"):
                _init.trunc_normal_(module.distillation_token, mean=0.0, std=std)

    def _loss(self, labels: torch.Tensor | None, logits: torch.Tensor, **kwargs: Any) -> torch.Tensor | None:
        if labels is None:
            return None
        return self.loss_function(labels, logits, self.config, **kwargs)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Also name the backbone class in ``auto_map`` when the code files are saved, so that
        ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works on a classifier checkpoint."""
        base = getattr(type(self), "_backbone_class_name", None)
        if type(self)._auto_class is not None and base:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", f"{type(self).__module__.split('.')[-1]}.{base}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class P3BViTModel(P3BViTPreTrainedModel):
    """The pruned (or full-width) backbone without its head, like ``ViTModel(add_pooling_layer=False)``:
    ``AutoModel.from_pretrained(pruned_dir)`` and ``pipeline("image-feature-extraction")`` load it.

    ``pooler_output`` is ``None``: a ViT/DeiT *classifier* checkpoint holds no trained pooler (stock
    ``ViTModel`` would initialise one at random)."""

    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__(config)
        self.embeddings = P3BViTEmbeddings(config)
        self.encoder = P3BViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        hidden = _flag(output_hidden_states, self.config, "output_hidden_states")
        attentions = _flag(output_attentions, self.config, "output_attentions")
        x = self.embeddings(pixel_values, bool(interpolate_pos_encoding))
        x, states, weights = self.encoder(x, hidden, attentions)
        out = BaseModelOutputWithPooling(
            last_hidden_state=self.layernorm(x),
            pooler_output=None,
            hidden_states=tuple(states) if hidden else None,
            attentions=tuple(weights) if attentions else None,
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


class P3BViTForImageClassification(P3BViTPreTrainedModel):
    """Pruned (or full-width) ``ViTForImageClassification`` with legacy parameter names."""

    _backbone_class_name = "P3BViTModel"

    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = P3BViTModel(config)
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
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
        base = self.vit(
            pixel_values, output_hidden_states, output_attentions, interpolate_pos_encoding, return_dict=True
        )
        logits = self.classifier(base.last_hidden_state[:, 0, :])
        loss = self._loss(labels, logits, **kwargs)
        out = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=base.hidden_states, attentions=base.attentions
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


@dataclass
class P3BDeiTForImageClassificationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None
    distillation_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class P3BDeiTModel(P3BViTModel):
    """The pruned DeiT backbone (cls + distillation token), like ``DeiTModel(add_pooling_layer=False)``."""

    config_class = P3BDeiTConfig
    base_model_prefix = "deit"


class P3BDeiTForImageClassification(P3BViTPreTrainedModel):
    """Pruned DeiT (distillation token). With ``config.distillation_head`` it mirrors
    ``DeiTForImageClassificationWithTeacher``: ``logits = (cls_logits + distillation_logits) / 2``;
    unlike the stock class it accepts ``labels`` and then returns the cross-entropy of ``logits``."""

    config_class = P3BDeiTConfig
    base_model_prefix = "deit"
    _backbone_class_name = "P3BDeiTModel"

    def __init__(self, config: P3BDeiTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.deit = P3BDeiTModel(config)
        k = config.num_labels
        c = config.hidden_size
        if config.distillation_head:
            self.cls_classifier = nn.Linear(c, k) if k > 0 else nn.Identity()
            self.distillation_classifier = nn.Linear(c, k) if k > 0 else nn.Identity()
        else:
            self.classifier = nn.Linear(c, k) if k > 0 else nn.Identity()
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
    ) -> P3BDeiTForImageClassificationOutput | tuple:
        base = self.deit(
            pixel_values, output_hidden_states, output_attentions, interpolate_pos_encoding, return_dict=True
        )
        seq = base.last_hidden_state
        cls_logits = dist_logits = None
        if self.config.distillation_head:
            cls_logits = self.cls_classifier(seq[:, 0, :])
            dist_logits = self.distillation_classifier(seq[:, 1, :])
            logits = (cls_logits + dist_logits) / 2
        else:
            logits = self.classifier(seq[:, 0, :])
        loss = self._loss(labels, logits, **kwargs)
        out = P3BDeiTForImageClassificationOutput(
            loss=loss,
            logits=logits,
            cls_logits=cls_logits,
            distillation_logits=dist_logits,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


__all__ = [
    "P3BViTForImageClassification",
    "P3BDeiTForImageClassification",
    "P3BViTModel",
    "P3BDeiTModel",
    "P3BViTPreTrainedModel",
]
