# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (modeling_p3b_dinov2.py and what it imports): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A DINOv2 with registers whose every layer may have its own widths.

The layers are DINOv2's (``modeling_p3b_dinov2.py``: layer scale, the shared pruned attention and layer step);
its classes subclass DINOv2's and hold only what differs: the register tokens in the embeddings (and their
initialisation), and the classifier's patch mean that leaves them out. ``embeddings.register_tokens`` ``[1, R, C]`` sit
between CLS and the patch tokens, added after the position embeddings (which cover CLS + patches only,
interpolated bicubic with antialias in float32, as ``modeling_dinov2_with_registers.py`` does). Register tokens
are never pruned as tokens; their channels are sliced with the embedding. The classifier reads
``[CLS, mean(patch tokens)]`` -- the mean excludes the registers. A full-width model equals the stock
``Dinov2WithRegistersForImageClassification`` bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as _init

from .configuration_p3b_dinov2_with_registers import P3BDinov2WithRegistersConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _register_stock_mlp_key_mapping,
)
from .modeling_p3b_dinov2 import (
    P3BDinov2Attention,
    P3BDinov2Embeddings,
    P3BDinov2Encoder,
    P3BDinov2ForImageClassification,
    P3BDinov2Layer,
    P3BDinov2Model,
    P3BDinov2PreTrainedModel,
)

# DINOv2's layers unchanged (the stock registers model's blocks are DINOv2's)
P3BDinov2WithRegistersLayer, P3BDinov2WithRegistersAttention = P3BDinov2Layer, P3BDinov2Attention
# the SwiGLU MLP's Hub layout (fused ``mlp.weights_in``, ``mlp.weights_out``), as for DINOv2
_register_stock_mlp_key_mapping("Dinov2WithRegistersModel", "p3b_dinov2_with_registers")
P3BDinov2WithRegistersEncoder = P3BDinov2Encoder


class P3BDinov2WithRegistersEmbeddings(P3BDinov2Embeddings):
    """CLS + patches (+ positions, interpolated with antialias), then the register tokens inserted after CLS
    (no position embedding)."""

    antialias = True

    def __init__(self, config: P3BDinov2WithRegistersConfig) -> None:
        super().__init__(config)
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))

    @staticmethod
    def _has_mask_token(config: P3BDinov2WithRegistersConfig) -> bool:
        return True  # the stock checkpoints always carry it

    def _insert_registers(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)


class P3BDinov2WithRegistersPreTrainedModel(P3BDinov2PreTrainedModel):
    config_class = P3BDinov2WithRegistersConfig
    base_model_prefix = "dinov2_with_registers"
    _no_split_modules = ["P3BDinov2WithRegistersEmbeddings", "P3BDinov2Layer"]

    def _init_family_weights(self, module: nn.Module, std: float) -> None:
        super()._init_family_weights(module, std)  # layer scale; CLS, positions, mask token
        if isinstance(module, P3BDinov2WithRegistersEmbeddings):
            _init.zeros_(module.register_tokens)


class P3BDinov2WithRegistersModel(P3BDinov2Model, P3BDinov2WithRegistersPreTrainedModel):
    """The pruned backbone, like ``Dinov2WithRegistersModel`` (``AutoModel``): ``pooler_output`` is the
    normalised CLS token; ``last_hidden_state`` holds CLS, the registers and the patches."""

    config_class = P3BDinov2WithRegistersConfig  # (transformers pins DINOv2's on each DINOv2 class)
    embeddings_class = P3BDinov2WithRegistersEmbeddings


class P3BDinov2WithRegistersForImageClassification(
    P3BDinov2ForImageClassification, P3BDinov2WithRegistersPreTrainedModel
):
    """Pruned (or full-width) ``Dinov2WithRegistersForImageClassification``: the classifier reads
    ``[CLS, mean(patch tokens)]``, the registers left out of the mean."""

    config_class = P3BDinov2WithRegistersConfig
    _backbone_class_name = "P3BDinov2WithRegistersModel"
    _backbone_class = P3BDinov2WithRegistersModel

    @property
    def _first_patch(self) -> int:
        return 1 + self.config.num_register_tokens


__all__ = [
    "P3BDinov2WithRegistersForImageClassification",
    "P3BDinov2WithRegistersModel",
    "P3BDinov2WithRegistersPreTrainedModel",
]
