# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_ijepa.py, modeling_p3b_vit.py and its imports): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""An I-JEPA whose every layer may have its own widths.

I-JEPA is a ViT without a CLS token (``modeling_ijepa.py``): the sequence is the patch tokens plus absolute
positions, the layers are ViT layers (the same legacy checkpoint names ``ijepa.encoder.layer.{i}.attention.
attention.query`` ... that facebook/ijepa_* checkpoints hold, so a full-width config loads them unchanged), and
the classifier reads the mean of the final-normalised patch tokens. Only the embeddings and the pooling differ
from ``modeling_p3b_vit.py``; a full-width model equals the stock model bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_ijepa import P3BIJepaConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
)
from .modeling_p3b_layers import (
    P3BEncoder,
    _interpolate_positions,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BPreTrainedMixin,
)
from .modeling_p3b_vit import P3BViTAttention, P3BViTLayer, P3BViTPatchEmbeddings

# the stock module names: I-JEPA's layers are ViT's
P3BIJepaLayer, P3BIJepaAttention = P3BViTLayer, P3BViTAttention


class P3BIJepaEmbeddings(nn.Module):
    """Patch tokens + absolute positions (no CLS token); the optional mask token of masked image modelling."""

    def __init__(self, config: P3BIJepaConfig, use_mask_token: bool = False) -> None:
        super().__init__()
        c = config.hidden_size
        if use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = P3BViTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches, c))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, masked: Any = None
    ) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)
        if masked is not None:
            mask = masked.unsqueeze(-1).type_as(self.mask_token)
            x = x * (1.0 - mask) + self.mask_token.expand(*x.shape[:2], -1) * mask
        pos = self.position_embeddings
        if interpolate_pos_encoding:
            h, w = pixel_values.shape[-2:]
            pos = _interpolate_positions(pos, 0, h, w, self.patch_embeddings.patch_size)
        return self.dropout(x + pos)


class P3BIJepaEncoder(P3BEncoder):
    layer_class = P3BIJepaLayer


class P3BIJepaPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BIJepaConfig
    base_model_prefix = "ijepa"
    _no_split_modules = ["P3BIJepaEmbeddings", "P3BViTLayer"]
    _token_embeddings = P3BIJepaEmbeddings


class P3BIJepaModel(_P3BBackboneMixin, P3BIJepaPreTrainedModel):
    """The pruned I-JEPA backbone, like ``IJepaModel(add_pooling_layer=False)`` (``AutoModel``, feature
    extraction): ``pooler_output`` is ``None`` (a classifier checkpoint holds no trained pooler)."""

    def __init__(self, config: P3BIJepaConfig, use_mask_token: bool = False) -> None:
        super().__init__(config)
        self.embeddings = P3BIJepaEmbeddings(config, use_mask_token)
        self.encoder = P3BIJepaEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        encoded = self.encoder(self.embeddings(pixel_values, interpolate, masked), *flags)
        return self.layernorm(encoded[0]), None, encoded


class P3BIJepaForImageClassification(_P3BClassifierMixin, P3BIJepaPreTrainedModel):
    """Pruned (or full-width) ``IJepaForImageClassification``: the classifier reads the mean of the patch
    tokens."""

    _backbone_class_name = "P3BIJepaModel"

    def __init__(self, config: P3BIJepaConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BIJepaModel(config), config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return base.last_hidden_state.mean(dim=1)


__all__ = ["P3BIJepaForImageClassification", "P3BIJepaModel", "P3BIJepaPreTrainedModel"]
