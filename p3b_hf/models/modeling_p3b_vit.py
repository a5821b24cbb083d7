# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_vit.py, modeling_p3b_layers.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
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

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig
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
    P3BPreLNLayer,
    P3BSelfAttention,
    _flag,
    _interpolate_positions,
    _P3BBackboneMixin,
    _P3BClassifierMixin,
    _P3BPreTrainedMixin,
)


class P3BViTPatchEmbeddings(P3BPatchEmbeddings):
    """ViT/DeiT positions are for ``image_size``: another size needs ``interpolate_pos_encoding=True``."""

    fixed_size = True


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


# the stock module names, for the shared classes (q/k/v with ``qkv_bias`` from the config; ``dense`` Linears)
P3BViTSelfAttention, P3BViTAttention, P3BViTSelfOutput = P3BSelfAttention, P3BAttention, P3BLinear
P3BViTIntermediate, P3BViTOutput = P3BIntermediate, P3BLinear


class P3BViTLayer(P3BPreLNLayer):
    """One encoder layer. Each sub-block reads ``in`` channels and writes ``out`` channels of
    the full-width residual stream; a removed sub-block only adds its constant output."""

    update_dropout = True


class P3BViTEncoder(P3BEncoder):
    layer_class = P3BViTLayer


class P3BViTPreTrainedModel(_P3BStrictLoading, _P3BPreTrainedMixin, PreTrainedModel):
    config_class = P3BViTConfig
    base_model_prefix = "vit"
    _no_split_modules = ["P3BViTEmbeddings", "P3BViTLayer"]
    _token_embeddings = P3BViTEmbeddings


class P3BViTModel(_P3BBackboneMixin, P3BViTPreTrainedModel):
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

    def _encode(self, pixel_values: torch.Tensor, flags: Any, interpolate: bool, masked: Any) -> tuple:
        encoded = self.encoder(self.embeddings(pixel_values, interpolate), *flags)
        return self.layernorm(encoded[0]), None, encoded


class P3BViTForImageClassification(_P3BClassifierMixin, P3BViTPreTrainedModel):
    """Pruned (or full-width) ``ViTForImageClassification`` with legacy parameter names."""

    _backbone_class_name = "P3BViTModel"

    def __init__(self, config: P3BViTConfig) -> None:
        super().__init__(config)
        self._init_head(config, P3BViTModel(config), config.hidden_size)

    def _features(self, base: BaseModelOutputWithPooling) -> torch.Tensor:
        return base.last_hidden_state[:, 0, :]


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


class P3BDeiTForImageClassification(_P3BClassifierMixin, P3BViTPreTrainedModel):
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

    def _head(
        self,
        base: BaseModelOutputWithPooling,
        labels: torch.Tensor | None,
        return_dict: bool | None,
        **kwargs: Any,
    ) -> P3BDeiTForImageClassificationOutput | tuple:
        seq = base.last_hidden_state
        cls_logits = dist_logits = None
        if self.config.distillation_head:
            cls_logits = self.cls_classifier(seq[:, 0, :])
            dist_logits = self.distillation_classifier(seq[:, 1, :])
            logits = (cls_logits + dist_logits) / 2
        else:
            logits = self.classifier(seq[:, 0, :])
        loss = None if labels is None else self.loss_function(labels, logits, self.config, **kwargs)
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
