# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_beit.py, modeling_p3b_layers.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A BEiT whose every layer may have its own widths.

Parameter names are those of the legacy HF BEiT checkpoints (``beit.encoder.layer.{i}.attention.attention.query``,
``...lambda_1``, ``...attention.attention.relative_position_bias.relative_position_bias_table``,
``beit.encoder.relative_position_bias...`` for a shared table, ``beit.pooler.layernorm``), so a full-width
config loads a stock checkpoint unchanged. Per layer: layer scale ``lambda_1`` / ``lambda_2`` holds the
written residual channels only, the relative position bias table one column per kept head, the key
projection has no bias; a removed sub-block keeps its constant output with the layer scale folded in.
The forward follows ``modeling_beit.py`` operation for operation (relative position bias resized to the
input resolution, mean pooling + pooler LayerNorm or the CLS token), so a full-width model equals the stock
model bit for bit; it honours the same HF contract as ``modeling_p3b_vit.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as _init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_beit import P3BBeitConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
)
from .modeling_p3b_layers import (
    P3BAttention,
    P3BEncoder,
    P3BIntermediate,
    P3BLinear,
    P3BPatchEmbeddings,
    P3BSelfAttention,
    _cls_and_patches,
    _IndexCache,
    _interpolate_positions,
    _layernorm,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BLayerMixin,
    _P3BPreTrainedMixin,
    _Removed,
    _width,
)

_INDEX_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def _relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    """Index into the relative position bias table for every (query, key) token pair incl. CLS (stock BEiT).

    Cached per window, but never a tracer's fake tensor (``torch.export`` / ``torch.compile`` run this under a
    fake mode; a cached fake tensor would break every later eager call)."""
    cached = _INDEX_CACHE.get(window)
    if cached is not None:
        return cached
    num_relative_distance = (2 * window[0] - 1) * (2 * window[1] - 1) + 3
    area = window[0] * window[1]
    coords = torch.flatten(
        torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")),
        start_dim=1,
    )
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window[0] - 1
    rel[:, :, 1] += window[1] - 1
    rel[:, :, 0] *= 2 * window[1] - 1
    index = torch.zeros(size=(area + 1,) * 2, dtype=rel.dtype)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = num_relative_distance - 3  # cls to token
    index[0:, 0] = num_relative_distance - 2  # token to cls
    index[0, 0] = num_relative_distance - 1  # cls to cls
    if type(index) is torch.Tensor:
        _INDEX_CACHE[window] = index
    return index


class P3BBeitRelativePositionBias(nn.Module):
    """A relative position bias table with one column per kept head, resized to the input's patch grid
    exactly as stock BEiT does (bilinear on the table, then gathered per token pair)."""

    def __init__(self, config: P3BBeitConfig, num_heads: int) -> None:
        super().__init__()
        self.window_size = (config.image_size // config.patch_size,) * 2
        self.num_relative_distance = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(self.num_relative_distance, num_heads))

    def forward(
        self,
        window_size: tuple[int, int],
        interpolate_pos_encoding: bool = False,
        dim_size: int | None = None,
    ) -> torch.Tensor:
        old_h, old_w = 2 * self.window_size[0] - 1, 2 * self.window_size[1] - 1
        new_h, new_w = 2 * window_size[0] - 1, 2 * window_size[1] - 1
        table = self.relative_position_bias_table
        old_n, new_n = self.num_relative_distance, new_h * new_w + 3
        sub = table[: old_n - 3].reshape(1, old_w, old_h, -1).permute(0, 3, 1, 2)
        sub = F.interpolate(sub, size=(int(new_h), int(new_w)), mode="bilinear")
        sub = sub.permute(0, 2, 3, 1).reshape(new_n - 3, -1)
        table = torch.cat([sub, table[old_n - 3 :]])
        index = _relative_position_index(tuple(int(w) for w in window_size)).to(table.device)
        bias = table[index.view(-1)]
        n = window_size[0] * window_size[1] + 1
        bias = bias.view(n, n, -1).permute(2, 0, 1).contiguous()
        if interpolate_pos_encoding:
            bias = F.interpolate(
                bias.unsqueeze(1), size=(dim_size, dim_size), mode="bilinear", align_corners=False
            ).squeeze(1)
        return bias.unsqueeze(0)


class P3BBeitPatchEmbeddings(P3BPatchEmbeddings):
    """Any input size: the positions are resized to it."""


class P3BBeitEmbeddings(nn.Module):
    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if config.use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = P3BBeitPatchEmbeddings(config)
        if config.use_absolute_position_embeddings:
            self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, c))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        x = _cls_and_patches(self, pixel_values, bool_masked_pos)
        if hasattr(self, "position_embeddings"):  # BEiT resizes absolute positions for any input size
            x = x + _interpolate_positions(
                self.position_embeddings, 1, height, width, self.patch_embeddings.patch_size
            )
        return self.dropout(x)


class P3BBeitSelfAttention(P3BSelfAttention):
    """q/k/v of the kept heads x head dims; the key has no bias (as in BEiT); optionally this layer's own
    relative position bias table (one column per kept head)."""

    key_bias = False

    def __init__(self, config: P3BBeitConfig, layer: int, in_width: int) -> None:
        super().__init__(config, layer, in_width)
        if config.use_relative_position_bias:
            self.relative_position_bias = P3BBeitRelativePositionBias(config, self.num_heads)


class P3BBeitAttention(P3BAttention):
    self_attention_class = P3BBeitSelfAttention


# the stock module names, for the shared classes (``dense`` Linears)
P3BBeitSelfOutput, P3BBeitIntermediate, P3BBeitOutput = P3BLinear, P3BIntermediate, P3BLinear


class P3BBeitLayer(_P3BLayerMixin, nn.Module):
    """One BEiT layer with per-sub-block read/write subsets; ``lambda_1`` / ``lambda_2`` scale the written
    channels. A removed sub-block adds its constant (layer scale already folded in)."""

    def __init__(self, config: P3BBeitConfig, layer: int) -> None:
        super().__init__()
        a_in, m_in, a_out_w, m_out_w = self._setup_widths(config, layer)
        c, hidden = config.hidden_size, config.layer_intermediate_sizes[layer]
        self.patch_size = config.patch_size
        scaled = config.layer_scale_init_value > 0
        self.bias_heads = _IndexCache(config.layer_bias_heads[layer])
        self.drop_path_rate = config.drop_path_rate * layer / max(config.num_hidden_layers - 1, 1)
        if not self.attn_removed:
            self.layernorm_before = _layernorm(config, a_in)
            self.attention = P3BBeitAttention(config, layer, _width(a_in, c), a_out_w)
            if scaled:
                self.lambda_1 = nn.Parameter(torch.ones(a_out_w))
        if self.mlp_removed:
            if self.mlp_active:
                self.output = _Removed(m_out_w)
        else:
            self.layernorm_after = _layernorm(config, m_in)
            self.intermediate = P3BBeitIntermediate(config, _width(m_in, c), hidden)
            self.output = P3BBeitOutput(hidden, m_out_w)
            if scaled:
                self.lambda_2 = nn.Parameter(torch.ones(m_out_w))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _bias(
        self, shared: torch.Tensor | None, resolution: tuple[int, int], interpolate: bool, n: int
    ) -> torch.Tensor | None:
        """The attention bias of this layer's kept heads: its own table plus its columns of the shared one."""
        if shared is not None:
            idx = self.bias_heads.get(shared.device)
            if idx is not None:
                shared = shared.index_select(1, idx)
        rel = getattr(self.attention.attention, "relative_position_bias", None)
        if rel is None:
            return shared
        window = (resolution[0] // self.patch_size, resolution[1] // self.patch_size)
        own = rel(window, interpolate, dim_size=n)
        return own + shared if shared is not None else own

    def _attend(
        self,
        x: torch.Tensor,
        output_attentions: bool,
        shared_bias: torch.Tensor | None = None,
        resolution: tuple[int, int] = (0, 0),
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``shared_bias``, ``resolution``, ``interpolate_pos_encoding``: the encoder's further arguments to
        ``forward`` (positional, for reentrant checkpointing)."""
        bias = self._bias(shared_bias, resolution, interpolate_pos_encoding, x.shape[1])
        update, weights = self.attention(self.layernorm_before(x), output_attentions, bias)
        update = self.dropout(update)
        return (self.lambda_1 * update if hasattr(self, "lambda_1") else update), weights

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(self.output(self.intermediate(self.layernorm_after(x))))
        return self.lambda_2 * update if hasattr(self, "lambda_2") else update


class P3BBeitEncoder(P3BEncoder):
    """The layers, and the relative position bias table all layers share (``use_shared_relative_position_bias``)."""

    layer_class = P3BBeitLayer

    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__(config)
        self.patch_size = config.patch_size
        if config.use_shared_relative_position_bias:
            heads = config.shared_bias_num_heads
            self.relative_position_bias = P3BBeitRelativePositionBias(
                config, config.num_attention_heads if heads is None else heads
            )

    def forward(
        self,
        x: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        resolution: tuple[int, int] = (0, 0),
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        shared = None
        if hasattr(self, "relative_position_bias"):
            window = (resolution[0] // self.patch_size, resolution[1] // self.patch_size)
            shared = self.relative_position_bias(window, interpolate_pos_encoding, dim_size=x.shape[1])
        return self._run_layers(
            self.layer,
            x,
            output_hidden_states,
            output_attentions,
            shared,
            resolution,
            interpolate_pos_encoding,
        )


class P3BBeitPooler(nn.Module):
    """Mean of the patch tokens + LayerNorm (``use_mean_pooling``), else the CLS token (stock BEiT)."""

    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__()
        if config.use_mean_pooling:
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layernorm(x[:, 1:, :].mean(1)) if hasattr(self, "layernorm") else x[:, 0]


class P3BBeitPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BBeitConfig
    base_model_prefix = "beit"
    _no_split_modules = ["P3BBeitLayer"]
    _keys_to_ignore_on_load_unexpected = [r".*relative_position_index.*"]

    def _init_family_weights(self, module: nn.Module, std: float) -> None:
        if isinstance(module, P3BBeitRelativePositionBias):
            _init.zeros_(module.relative_position_bias_table)
        elif isinstance(module, P3BBeitEmbeddings):
            _init.zeros_(module.cls_token)
            for name in ("mask_token", "position_embeddings"):
                if hasattr(module, name):
                    _init.zeros_(getattr(module, name))
        elif isinstance(module, P3BBeitLayer):
            for name in ("lambda_1", "lambda_2"):
                if hasattr(module, name):
                    _init.constant_(getattr(module, name), self.config.layer_scale_init_value)


class P3BBeitModel(_P3BBackboneMixin, P3BBeitPreTrainedModel):
    """The pruned BEiT backbone with its pooler, like ``BeitModel`` (``AutoModel``, feature extraction):
    ``pooler_output`` is the LayerNorm of the mean patch token (``use_mean_pooling``) or the CLS token."""

    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__(config)
        self.embeddings = P3BBeitEmbeddings(config)
        self.encoder = P3BBeitEncoder(config)
        if not config.use_mean_pooling:
            self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = P3BBeitPooler(config)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        x = self.embeddings(pixel_values, masked)
        encoded = self.encoder(x, *flags, tuple(pixel_values.shape[2:]), interpolate)
        seq = self.layernorm(encoded[0]) if hasattr(self, "layernorm") else encoded[0]
        return seq, self.pooler(seq), encoded


class P3BBeitForImageClassification(_P3BClassifierMixin, P3BBeitPreTrainedModel):
    """Pruned (or full-width) ``BeitForImageClassification`` with legacy parameter names."""

    _backbone_class_name = "P3BBeitModel"

    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BBeitModel(config), config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return base.pooler_output


__all__ = ["P3BBeitForImageClassification", "P3BBeitModel", "P3BBeitPreTrainedModel"]
