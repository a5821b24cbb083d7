# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (modeling_p3b_dinov2.py and what it imports): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A DINOv2 with registers whose every layer may have its own widths.

The layers are DINOv2's (``modeling_p3b_dinov2.py``: layer scale, the shared pruned attention and layer step);
only the embeddings and the classifier's patch mean differ. ``embeddings.register_tokens`` ``[1, R, C]`` sit
between CLS and the patch tokens, added after the position embeddings (which cover CLS + patches only,
interpolated bicubic with antialias in float32, as ``modeling_dinov2_with_registers.py`` does). Register tokens
are never pruned as tokens; their channels are sliced with the embedding. The classifier reads
``[CLS, mean(patch tokens)]`` -- the mean excludes the registers. A full-width model equals the stock
``Dinov2WithRegistersForImageClassification`` bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as _init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_dinov2_with_registers import P3BDinov2WithRegistersConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
    _register_stock_mlp_key_mapping,
)
from .modeling_p3b_dinov2 import (
    P3BDinov2Attention,
    P3BDinov2Encoder,
    P3BDinov2Layer,
    P3BDinov2LayerScale,
    P3BDinov2PatchEmbeddings,
)
from .modeling_p3b_layers import (
    _cls_and_patches,
    _interpolate_positions,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BPreTrainedMixin,
)

# DINOv2's layers unchanged (the stock registers model's blocks are DINOv2's)
P3BDinov2WithRegistersLayer, P3BDinov2WithRegistersAttention = P3BDinov2Layer, P3BDinov2Attention
# the SwiGLU MLP's Hub layout (fused ``mlp.weights_in``, ``mlp.weights_out``), as for DINOv2
_register_stock_mlp_key_mapping("Dinov2WithRegistersModel", "p3b_dinov2_with_registers")
P3BDinov2WithRegistersEncoder = P3BDinov2Encoder


class P3BDinov2WithRegistersEmbeddings(nn.Module):
    """CLS + patches (+ positions), then the register tokens inserted after CLS (no position embedding)."""

    def __init__(self, config: P3BDinov2WithRegistersConfig) -> None:
        super().__init__()
        c = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))  # the stock checkpoints always carry it
        self.patch_embeddings = P3BDinov2PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, c))
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
            antialias=True,
        )
        x = x + pos
        x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        return self.dropout(x)


class P3BDinov2WithRegistersPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BDinov2WithRegistersConfig
    base_model_prefix = "dinov2_with_registers"
    _no_split_modules = ["P3BDinov2WithRegistersEmbeddings", "P3BDinov2Layer"]

    def _init_family_weights(self, module: nn.Module, std: float) -> None:
        if isinstance(module, P3BDinov2LayerScale):
            _init.constant_(module.lambda1, self.config.layerscale_value)
        elif isinstance(module, P3BDinov2WithRegistersEmbeddings):
            _init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            _init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            _init.zeros_(module.mask_token)
            _init.zeros_(module.register_tokens)


class P3BDinov2WithRegistersModel(_P3BBackboneMixin, P3BDinov2WithRegistersPreTrainedModel):
    """The pruned backbone, like ``Dinov2WithRegistersModel`` (``AutoModel``): ``pooler_output`` is the
    normalised CLS token; ``last_hidden_state`` holds CLS, the registers and the patches."""

    def __init__(self, config: P3BDinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self.embeddings = P3BDinov2WithRegistersEmbeddings(config)
        self.encoder = P3BDinov2WithRegistersEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        """``interpolate`` is accepted for symmetry with ViT; the positions are always interpolated."""
        encoded = self.encoder(self.embeddings(pixel_values, masked), *flags)
        seq = self.layernorm(encoded[0])
        return seq, seq[:, 0, :], encoded


class P3BDinov2WithRegistersForImageClassification(
    _P3BClassifierMixin, P3BDinov2WithRegistersPreTrainedModel
):
    """Pruned (or full-width) ``Dinov2WithRegistersForImageClassification``: the classifier reads
    ``[CLS, mean(patch tokens)]``, the registers left out of the mean."""

    _backbone_class_name = "P3BDinov2WithRegistersModel"

    def __init__(self, config: P3BDinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BDinov2WithRegistersModel(config), 2 * config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        seq = base.last_hidden_state
        return torch.cat([seq[:, 0], seq[:, 1 + self.config.num_register_tokens :].mean(dim=1)], dim=1)


__all__ = [
    "P3BDinov2WithRegistersForImageClassification",
    "P3BDinov2WithRegistersModel",
    "P3BDinov2WithRegistersPreTrainedModel",
]
