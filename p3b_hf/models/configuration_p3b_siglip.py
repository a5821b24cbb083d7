# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned SigLIP vision classifier with per-layer widths
(``model_type="p3b_siglip"``).

The stock ``SiglipForImageClassification`` takes a nested ``SiglipConfig`` (text and vision towers; only the
vision tower is built); the pruned format is flat: the stock ``SiglipVisionConfig`` (the tower it runs) plus the
labels and the per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (same semantics as ViT's).
SigLIP has no CLS token (the sequence is the patch tokens), tanh-GELU (``hidden_act``), a ``post_layernorm`` on
every token and a classifier that reads the mean of the normalised patch tokens. The fixed-resolution SigLIP2
checkpoints (``google/siglip2-base-patch16-224``) are stored as this same ``siglip`` model type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import SiglipVisionConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BSiglipConfig"]


@dataclass(kw_only=True, repr=False)
class _SiglipInit:
    """The init std of newly built modules (``SiglipVisionConfig`` has no ``initializer_range``; the pruned
    format's initialisation reads it, e.g. for a new classifier head)."""

    initializer_range: float = 0.02


class P3BSiglipConfig(P3BLayerWidths, _SiglipInit, SiglipVisionConfig):
    r"""``SiglipVisionConfig`` + labels + per-layer widths (no special token before the patches)."""

    model_type = "p3b_siglip"
    _family_dense_keys = ("attention_dropout",)
    # a pruned residual stream need not be a multiple of the head count (heads keep their own per-layer widths)
    __class_validators__ = [
        v
        for v in getattr(SiglipVisionConfig, "__class_validators__", [])
        if v.__name__ != "validate_architecture"
    ]

    def validate(self) -> None:
        """The stock class validators but ``validate_architecture`` (the stock ``validate`` reads the stock
        class's list, so it is replaced here)."""
        for validator in self.__class_validators__:
            validator(self)

    @property
    def attention_probs_dropout_prob(self) -> float:
        """The shared attention's name for SigLIP's ``attention_dropout``."""
        return float(self.attention_dropout)

    @property
    def num_special_tokens(self) -> int:
        return 0

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> P3BSiglipConfig:
        """Full-width config of a stock ``SiglipConfig`` (the fields of its ``vision_config``, its labels) or of
        a ``SiglipVisionConfig``."""
        vision = getattr(dense, "vision_config", None)
        if vision is None:
            return super().from_dense_config(dense, **overrides)
        labels = {
            "id2label": dict(dense.id2label),
            "label2id": dict(dense.label2id),
            "problem_type": getattr(dense, "problem_type", None),
            "base_model_name_or_path": getattr(dense, "_name_or_path", None) or None,
        }
        return super().from_dense_config(vision, **{**labels, **overrides})
