# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_dinov2.py, modeling_p3b_layers.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A DINOv2 whose every layer may have its own widths.

Parameter names are those of the legacy HF DINOv2 checkpoints (``dinov2.encoder.layer.{i}.norm1``,
``...attention.attention.query``, ``...attention.output.dense``, ``...layer_scale1.lambda1``, ``...mlp.fc1``),
so a full-width config loads a stock checkpoint (facebook/dinov2-small, -base, -large) unchanged. With
``use_swiglu_ffn`` (the giant model) the MLP is the shared ``P3BGatedMLP`` (``mlp.gate_proj`` / ``up_proj`` /
``down_proj``, as transformers 5.x names them). Layer
scale holds the written residual channels only; a removed sub-block keeps its constant output with the
layer scale folded in. As in ``modeling_dinov2.py`` the position embeddings are interpolated (bicubic, in
float32) to any input resolution, and the classifier reads ``[CLS, mean(patch tokens)]``; a full-width model
equals the stock model bit for bit. Same HF contract as ``modeling_p3b_vit.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as _init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_dinov2 import P3BDinov2Config
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
    _register_stock_mlp_key_mapping,
)
from .modeling_p3b_layers import (
    P3BAttention,
    P3BEncoder,
    P3BGatedMLP,
    P3BLinear,
    P3BPatchEmbeddings,
    P3BSelfAttention,
    _cls_and_patches,
    _interpolate_positions,
    _layernorm,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BLayerMixin,
    _P3BPreTrainedMixin,
    _Removed,
    _width,
)


class P3BDinov2PatchEmbeddings(P3BPatchEmbeddings):
    """Any input size: the positions are resized to it."""


class P3BDinov2Embeddings(nn.Module):
    """CLS + patches (+ positions interpolated in float32 to the input size). DINOv2 with registers extends it
    (:meth:`_insert_registers`, ``antialias``)."""

    #: interpolate the positions with antialias (the stock DINOv2-with-registers code does)
    antialias = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if self._has_mask_token(config):
            self.mask_token = nn.Parameter(torch.zeros(1, c))
        self.patch_embeddings = P3BDinov2PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, c))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        x = _cls_and_patches(self, pixel_values, bool_masked_pos)
        pos = _interpolate_positions(
            self.position_embeddings,
            1,
            height,
            width,
            self.patch_embeddings.patch_size,
            fp32=True,
            antialias=self.antialias,
        )
        return self.dropout(self._insert_registers(x + pos))

    @staticmethod
    def _has_mask_token(config: Any) -> bool:
        return bool(config.use_mask_token)

    def _insert_registers(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens added after the positions (none in DINOv2)."""
        return x


# the stock module names, for the shared classes (q/k/v with ``qkv_bias`` from the config; ``dense`` Linears)
P3BDinov2SelfAttention, P3BDinov2Attention, P3BDinov2SelfOutput = P3BSelfAttention, P3BAttention, P3BLinear


class P3BDinov2LayerScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class P3BDinov2MLP(nn.Module):
    def __init__(self, config: P3BDinov2Config, in_width: int, hidden: int, out_width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_width, hidden)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class P3BDinov2Layer(_P3BLayerMixin, nn.Module):
    """One DINOv2 layer with per-sub-block read/write subsets; ``layer_scale1/2`` scale the written
    channels. A removed sub-block adds its constant (layer scale already folded in)."""

    removed_mlp_attr = "mlp"

    def __init__(self, config: P3BDinov2Config, layer: int) -> None:
        super().__init__()
        a_in, m_in, a_out_w, m_out_w = self._setup_widths(config, layer)
        c, hidden = config.hidden_size, config.layer_intermediate_sizes[layer]
        self.drop_path_rate = config.drop_path_rate
        if not self.attn_removed:
            self.norm1 = _layernorm(config, a_in)
            self.attention = P3BDinov2Attention(config, layer, _width(a_in, c), a_out_w)
            self.layer_scale1 = P3BDinov2LayerScale(a_out_w)
        gated = bool(getattr(config, "use_swiglu_ffn", False))  # the SwiGLU MLP (gate / up / down)
        if self.mlp_removed:
            if self.mlp_active:
                self.mlp = _Removed(m_out_w, attr=P3BGatedMLP.out_attr if gated else "fc2")
        else:
            self.norm2 = _layernorm(config, m_in)
            if gated:
                self.mlp = P3BGatedMLP(_width(m_in, c), hidden, m_out_w, act="silu")
            else:
                self.mlp = P3BDinov2MLP(config, _width(m_in, c), hidden, m_out_w)
            self.layer_scale2 = P3BDinov2LayerScale(m_out_w)

    def _attend(self, x: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        update, weights = self.attention(self.norm1(x), output_attentions)
        return self.layer_scale1(update), weights

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_scale2(self.mlp(self.norm2(x)))


# the SwiGLU MLP's Hub layout (fused ``mlp.weights_in``, ``mlp.weights_out``): split / renamed on load as for stock
_register_stock_mlp_key_mapping("Dinov2Model", "p3b_dinov2")


class P3BDinov2Encoder(P3BEncoder):
    layer_class = P3BDinov2Layer


class P3BDinov2PreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BDinov2Config
    base_model_prefix = "dinov2"
    _no_split_modules = ["P3BDinov2Embeddings", "P3BDinov2Layer"]
    _token_embeddings = P3BDinov2Embeddings

    def _init_family_weights(self, module: nn.Module, std: float) -> None:
        if isinstance(module, P3BDinov2LayerScale):
            _init.constant_(module.lambda1, self.config.layerscale_value)
        else:  # CLS, positions, mask token
            super()._init_family_weights(module, std)


class P3BDinov2Model(_P3BBackboneMixin, P3BDinov2PreTrainedModel):
    """The pruned DINOv2 backbone, like ``Dinov2Model`` (``AutoModel``, feature extraction):
    ``pooler_output`` is the normalised CLS token."""

    embeddings_class: type[nn.Module] = P3BDinov2Embeddings

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = P3BDinov2Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        """``interpolate`` is accepted for symmetry with ViT; the positions are always interpolated."""
        encoded = self.encoder(self.embeddings(pixel_values, masked), *flags)
        seq = self.layernorm(encoded[0])
        return seq, seq[:, 0, :], encoded


class P3BDinov2ForImageClassification(_P3BClassifierMixin, P3BDinov2PreTrainedModel):
    """Pruned (or full-width) ``Dinov2ForImageClassification``: the classifier reads ``[CLS, mean(patches)]``."""

    _backbone_class_name = "P3BDinov2Model"
    _backbone_class: type[nn.Module] = P3BDinov2Model

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._init_head(config, self._backbone_class(config), 2 * config.hidden_size)

    @property
    def _first_patch(self) -> int:
        """Index of the first patch token in the sequence (after CLS)."""
        return 1

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        seq = base.last_hidden_state
        return torch.cat([seq[:, 0], seq[:, self._first_patch :].mean(dim=1)], dim=1)


__all__ = ["P3BDinov2ForImageClassification", "P3BDinov2Model", "P3BDinov2PreTrainedModel"]
