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

from transformers import SiglipVisionConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BVisionTowerWidths, without_architecture_check

__all__ = ["LAYERNORM_MODES", "P3BSiglipConfig"]


@dataclass(kw_only=True, repr=False)
class _SiglipInit:
    """The init std of newly built modules (``SiglipVisionConfig`` has no ``initializer_range``; the pruned
    format's initialisation reads it, e.g. for a new classifier head)."""

    initializer_range: float = 0.02


class P3BSiglipConfig(P3BVisionTowerWidths, _SiglipInit, SiglipVisionConfig):
    r"""``SiglipVisionConfig`` + labels + per-layer widths (no special token before the patches)."""

    model_type = "p3b_siglip"
    _family_dense_keys = ("attention_dropout",)
    __class_validators__ = without_architecture_check(SiglipVisionConfig)

    @property
    def num_special_tokens(self) -> int:
        return 0
