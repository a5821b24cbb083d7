# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_clip.py, modeling_p3b_layers.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A CLIP vision classifier whose every layer may have its own widths.

The layers are the shared pre-LN layers under the ViT-style names (``vision_model.encoder.layer.{i}.attention.
attention.query`` ...; quick-GELU from ``config.hidden_act``). What CLIP adds: the embeddings (CLS + patches,
a bias-free patch projection, absolute positions) pass through ``pre_layrnorm`` before the first layer; the
backbone's ``last_hidden_state`` is the raw encoder output and ``pooler_output`` is ``post_layernorm`` of the CLS
token, as in ``CLIPVisionModel``; the classifier reads the mean of the un-normalised patch tokens, as
``CLIPForImageClassification`` does. A full-width model converted from the stock one equals it bit for bit.
Same HF contract as ``modeling_p3b_vit.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_clip import P3BCLIPConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
)
from .modeling_p3b_layers import (
    P3BEncoder,
    P3BPatchEmbeddings,
    P3BPreLNLayer,
    _interpolate_positions,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BPreTrainedMixin,
)


class P3BCLIPPatchEmbeddings(P3BPatchEmbeddings):
    """A bias-free projection; positions are for ``image_size`` (another size needs ``interpolate_pos_encoding``)."""

    fixed_size = True

    def __init__(self, config: P3BCLIPConfig) -> None:
        super().__init__(config)
        p = self.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, p, stride=p, bias=False)


class P3BCLIPEmbeddings(nn.Module):
    def __init__(self, config: P3BCLIPConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.patch_embeddings = P3BCLIPPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, c))

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)
        pos = self.position_embeddings
        if interpolate_pos_encoding:
            h, w = pixel_values.shape[-2:]
            pos = _interpolate_positions(pos, 1, h, w, self.patch_embeddings.patch_size)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos


class P3BCLIPLayer(P3BPreLNLayer):
    """One CLIP encoder layer (ViT-style names): pre-LN attention and quick-GELU MLP, no dropout on the updates."""


class P3BCLIPEncoder(P3BEncoder):
    layer_class = P3BCLIPLayer


class P3BCLIPPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BCLIPConfig
    base_model_prefix = "vision_model"
    _no_split_modules = ["P3BCLIPEmbeddings", "P3BCLIPLayer"]
    _token_embeddings = P3BCLIPEmbeddings


class P3BCLIPModel(_P3BBackboneMixin, P3BCLIPPreTrainedModel):
    """The pruned CLIP vision tower, like ``CLIPVisionModel`` (``AutoModel``, feature extraction):
    ``last_hidden_state`` is the encoder output, ``pooler_output`` the ``post_layernorm`` of the CLS token."""

    def __init__(self, config: P3BCLIPConfig) -> None:
        super().__init__(config)
        self.embeddings = P3BCLIPEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = P3BCLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        encoded = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values, interpolate)), *flags)
        seq = encoded[0]
        return seq, self.post_layernorm(seq[:, 0, :]), encoded


class P3BCLIPForImageClassification(_P3BClassifierMixin, P3BCLIPPreTrainedModel):
    """Pruned (or full-width) ``CLIPForImageClassification``: the classifier reads the mean of the patch tokens."""

    _backbone_class_name = "P3BCLIPModel"

    def __init__(self, config: P3BCLIPConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BCLIPModel(config), config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return torch.mean(base.last_hidden_state[:, 1:, :], dim=1)


__all__ = ["P3BCLIPForImageClassification", "P3BCLIPModel", "P3BCLIPPreTrainedModel"]
