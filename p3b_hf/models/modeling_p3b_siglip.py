# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_siglip.py, modeling_p3b_layers.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies
# them, ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A SigLIP vision classifier whose every layer may have its own widths.

The layers are the shared pre-LN layers under the ViT-style names (``vision_model.encoder.layer.{i}.attention.
attention.query`` ...; tanh-GELU from ``config.hidden_act``). What SigLIP has: no CLS token (the sequence is the
patch tokens plus absolute positions), a ``post_layernorm`` on every token (the backbone's
``last_hidden_state``, as in ``SiglipVisionModel``), and a classifier that reads the mean of those normalised
patch tokens, as ``SiglipForImageClassification`` does.

The stock vision tower also carries a multihead attention-pooling head (MAP, ``vision_model.head``) whose
output is the stock ``pooler_output``; the classifier never reads it, so the pruned format drops it and
``pooler_output`` is ``None`` (as for a ViT / I-JEPA classifier's backbone): the features the classifier reads
are ``last_hidden_state.mean(1)``. A full-width model converted from the stock one has bit-identical logits and
``last_hidden_state``. Same HF contract as ``modeling_p3b_vit.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_p3b_siglip import P3BSiglipConfig
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


class P3BSiglipPatchEmbeddings(P3BPatchEmbeddings):
    """Positions are for ``image_size`` (another size needs ``interpolate_pos_encoding``, as in the stock model)."""

    fixed_size = True


class P3BSiglipEmbeddings(nn.Module):
    """Patch tokens + absolute positions (no CLS token; the stock ``nn.Embedding`` rows as ``[1, P, C]``)."""

    def __init__(self, config: P3BSiglipConfig) -> None:
        super().__init__()
        self.patch_embeddings = P3BSiglipPatchEmbeddings(config)
        n = self.patch_embeddings.num_patches
        self.position_embeddings = nn.Parameter(torch.zeros(1, n, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values, interpolate_pos_encoding)
        pos = self.position_embeddings
        if interpolate_pos_encoding:
            h, w = pixel_values.shape[-2:]
            pos = _interpolate_positions(pos, 0, h, w, self.patch_embeddings.patch_size)
        return x + pos


class P3BSiglipLayer(P3BPreLNLayer):
    """One SigLIP encoder layer (ViT-style names): pre-LN attention and tanh-GELU MLP, no dropout on the
    updates."""


class P3BSiglipEncoder(P3BEncoder):
    layer_class = P3BSiglipLayer


class P3BSiglipPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BSiglipConfig
    base_model_prefix = "vision_model"
    _no_split_modules = ["P3BSiglipEmbeddings", "P3BSiglipLayer"]
    _token_embeddings = P3BSiglipEmbeddings


class P3BSiglipModel(_P3BBackboneMixin, P3BSiglipPreTrainedModel):
    """The pruned SigLIP vision tower, like ``SiglipVisionModel`` without its MAP head (``AutoModel``, feature
    extraction): ``last_hidden_state`` is ``post_layernorm`` of every token, ``pooler_output`` is ``None``."""

    def __init__(self, config: P3BSiglipConfig) -> None:
        super().__init__(config)
        self.embeddings = P3BSiglipEmbeddings(config)
        self.encoder = P3BSiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        encoded = self.encoder(self.embeddings(pixel_values, interpolate), *flags)
        return self.post_layernorm(encoded[0]), None, encoded


class P3BSiglipForImageClassification(_P3BClassifierMixin, P3BSiglipPreTrainedModel):
    """Pruned (or full-width) ``SiglipForImageClassification``: the classifier reads the mean of the
    normalised patch tokens."""

    _backbone_class_name = "P3BSiglipModel"

    def __init__(self, config: P3BSiglipConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BSiglipModel(config), config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return torch.mean(base.last_hidden_state, dim=1)


__all__ = ["P3BSiglipForImageClassification", "P3BSiglipModel", "P3BSiglipPreTrainedModel"]
