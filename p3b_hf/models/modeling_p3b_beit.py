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
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_p3b_beit import P3BBeitConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
)
from .modeling_p3b_layers import (
    P3BConstantOutput,
    P3BLayerNorm,
    _add_into,
    _attention,
    _drop_path,
    _eager,
    _flag,
    _IndexCache,
    _interpolate_positions,
    _P3BEncoderMixin,
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


class P3BBeitPatchEmbeddings(nn.Module):
    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


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
        x = self.patch_embeddings(pixel_values)
        b, n, _ = x.shape
        if bool_masked_pos is not None:
            mask_tokens = self.mask_token.expand(b, n, -1)
            mask = bool_masked_pos.unsqueeze(-1).type_as(mask_tokens)
            x = x * (1 - mask) + mask_tokens * mask
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        if hasattr(self, "position_embeddings"):  # BEiT resizes absolute positions for any input size
            x = x + _interpolate_positions(
                self.position_embeddings, 1, height, width, self.patch_embeddings.patch_size
            )
        return self.dropout(x)


class P3BBeitSelfAttention(nn.Module):
    """q/k/v of the kept heads x head dims; the key has no bias (as in BEiT)."""

    def __init__(self, config: P3BBeitConfig, layer: int, in_width: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.layer_num_heads[layer]
        self.head_dim = config.layer_head_dims[layer]
        self.scale = config.layer_attention_scales[layer]
        self.dropout = config.attention_probs_dropout_prob
        inner = self.num_heads * self.head_dim
        self.query = nn.Linear(in_width, inner)
        self.key = nn.Linear(in_width, inner, bias=False)
        self.value = nn.Linear(in_width, inner)
        if config.use_relative_position_bias:
            self.relative_position_bias = P3BBeitRelativePositionBias(config, self.num_heads)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, output_attentions: bool = False
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
            bias=bias,
            dropout=self.dropout,
            training=self.training,
            eager=_eager(self.config, output_attentions),
        )


class P3BBeitSelfOutput(nn.Module):
    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class P3BBeitAttention(nn.Module):
    def __init__(self, config: P3BBeitConfig, layer: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.attention = P3BBeitSelfAttention(config, layer, in_width)
        self.output = P3BBeitSelfOutput(
            config.layer_num_heads[layer] * config.layer_head_dims[layer], out_width
        )

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = self.attention(x, bias, output_attentions)
        return self.output(out), weights


class P3BBeitIntermediate(nn.Module):
    def __init__(self, config: P3BBeitConfig, in_width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, hidden)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class P3BBeitOutput(nn.Module):
    def __init__(self, hidden: int, out_width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class P3BBeitLayer(nn.Module):
    """One BEiT layer with per-sub-block read/write subsets; ``lambda_1`` / ``lambda_2`` scale the written
    channels. A removed sub-block adds its constant (layer scale already folded in)."""

    def __init__(self, config: P3BBeitConfig, layer: int) -> None:
        super().__init__()
        c = config.hidden_size
        full_stats = config.layernorm_mode == "full_stats"
        a_in, a_out = config.layer_attn_in[layer], config.layer_attn_out[layer]
        m_in, m_out = config.layer_mlp_in[layer], config.layer_mlp_out[layer]
        self.patch_size = config.patch_size
        self.attn_out_index = _IndexCache(a_out)
        self.mlp_out_index = _IndexCache(m_out)
        self.attn_removed = config.layer_num_heads[layer] * config.layer_head_dims[layer] == 0
        self.mlp_removed = config.layer_intermediate_sizes[layer] == 0
        a_out_w, m_out_w = _width(a_out, c), _width(m_out, c)
        self.attn_active, self.mlp_active = a_out_w > 0, m_out_w > 0
        scaled = config.layer_scale_init_value > 0
        self.bias_heads = _IndexCache(config.layer_bias_heads[layer])
        self.drop_path_rate = config.drop_path_rate * layer / max(config.num_hidden_layers - 1, 1)
        if self.attn_removed:
            if self.attn_active:
                self.attention = nn.Module()
                self.attention.output = _Removed(a_out_w)
        else:
            self.layernorm_before = P3BLayerNorm(a_in, c, config.layer_norm_eps, full_stats)
            self.attention = P3BBeitAttention(config, layer, _width(a_in, c), a_out_w)
            if scaled:
                self.lambda_1 = nn.Parameter(torch.ones(a_out_w))
        if self.mlp_removed:
            if self.mlp_active:
                self.output = _Removed(m_out_w)
        else:
            self.layernorm_after = P3BLayerNorm(m_in, c, config.layer_norm_eps, full_stats)
            self.intermediate = P3BBeitIntermediate(
                config, _width(m_in, c), config.layer_intermediate_sizes[layer]
            )
            self.output = P3BBeitOutput(config.layer_intermediate_sizes[layer], m_out_w)
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

    def forward(
        self,
        x: torch.Tensor,
        output_attentions: bool = False,
        shared_bias: torch.Tensor | None = None,
        resolution: tuple[int, int] = (0, 0),
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None
        if self.attn_active:
            if self.attn_removed:
                update = self.attention.output(x)
            else:
                bias = self._bias(shared_bias, resolution, interpolate_pos_encoding, x.shape[1])
                update, weights = self.attention(self.layernorm_before(x), bias, output_attentions)
                update = self.dropout(update)
                if hasattr(self, "lambda_1"):
                    update = self.lambda_1 * update
            x = _add_into(x, _drop_path(update, self.drop_path_rate, self.training), self.attn_out_index)
        if output_attentions and weights is None:  # removed attention: zero heads
            weights = x.new_zeros(x.shape[0], 0, x.shape[1], x.shape[1])
        if self.mlp_active:
            if self.mlp_removed:
                update = self.output(x)
            else:
                update = self.dropout(self.output(self.intermediate(self.layernorm_after(x))))
                if hasattr(self, "lambda_2"):
                    update = self.lambda_2 * update
            x = _add_into(x, _drop_path(update, self.drop_path_rate, self.training), self.mlp_out_index)
        return x, weights


class P3BBeitEncoder(_P3BEncoderMixin, nn.Module):
    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        if config.use_shared_relative_position_bias:
            heads = config.shared_bias_num_heads
            self.relative_position_bias = P3BBeitRelativePositionBias(
                config, config.num_attention_heads if heads is None else heads
            )
        self.layer = nn.ModuleList([P3BBeitLayer(config, i) for i in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

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


class P3BBeitPreTrainedModel(_P3BStrictLoading, PreTrainedModel):
    config_class = P3BBeitConfig
    base_model_prefix = "beit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["P3BBeitLayer"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True
    _keys_to_ignore_on_load_unexpected = [r".*relative_position_index.*"]

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
        elif isinstance(module, P3BBeitRelativePositionBias):
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


class P3BBeitModel(P3BBeitPreTrainedModel):
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

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

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
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        hidden = _flag(output_hidden_states, self.config, "output_hidden_states")
        attentions = _flag(output_attentions, self.config, "output_attentions")
        x = self.embeddings(pixel_values, bool_masked_pos)
        x, states, weights = self.encoder(
            x, hidden, attentions, tuple(pixel_values.shape[2:]), bool(interpolate_pos_encoding)
        )
        seq = self.layernorm(x) if hasattr(self, "layernorm") else x
        out = BaseModelOutputWithPooling(
            last_hidden_state=seq,
            pooler_output=self.pooler(seq),
            hidden_states=tuple(states) if hidden else None,
            attentions=tuple(weights) if attentions else None,
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


class P3BBeitForImageClassification(P3BBeitPreTrainedModel):
    """Pruned (or full-width) ``BeitForImageClassification`` with legacy parameter names."""

    _backbone_class_name = "P3BBeitModel"

    def __init__(self, config: P3BBeitConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.beit = P3BBeitModel(config)
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
        base = self.beit(
            pixel_values, output_hidden_states, output_attentions, interpolate_pos_encoding, return_dict=True
        )
        logits = self.classifier(base.pooler_output)
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
        out = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=base.hidden_states, attentions=base.attentions
        )
        return out if _flag(return_dict, self.config, "return_dict", True) else out.to_tuple()


__all__ = ["P3BBeitForImageClassification", "P3BBeitModel", "P3BBeitPreTrainedModel"]
