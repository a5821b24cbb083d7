# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned CLIP vision classifier with per-layer widths (``model_type="p3b_clip"``).

The stock ``CLIPForImageClassification`` takes a nested ``CLIPConfig`` (text and vision towers; only the vision
tower is built); the pruned format is flat: the stock ``CLIPVisionConfig`` (the tower it runs) plus the labels
and the per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (same semantics as ViT's). CLIP
differs from ViT by a LayerNorm on the embeddings (``pre_layrnorm``), quick-GELU (``hidden_act``), no patch
projection bias, and a classifier that reads the mean of the *un-normalised* patch tokens (``post_layernorm``
only normalises the backbone's ``pooler_output``, the CLS token).
"""

from __future__ import annotations

from typing import Any

from transformers import CLIPVisionConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BCLIPConfig"]


class P3BCLIPConfig(P3BLayerWidths, CLIPVisionConfig):
    r"""``CLIPVisionConfig`` + labels + per-layer widths."""

    model_type = "p3b_clip"
    _family_dense_keys = ("attention_dropout", "initializer_factor", "projection_dim")
    # a pruned residual stream need not be a multiple of the head count (heads keep their own per-layer widths),
    # so the stock ``hidden_size % num_attention_heads`` check is left out
    __class_validators__ = [
        v for v in CLIPVisionConfig.__class_validators__ if v.__name__ != "validate_architecture"
    ]

    def validate(self) -> None:
        """The stock class validators but ``validate_architecture`` (the stock ``validate`` reads the stock
        class's list, so it is replaced here)."""
        for validator in self.__class_validators__:
            validator(self)

    @property
    def attention_probs_dropout_prob(self) -> float:
        """The shared attention's name for CLIP's ``attention_dropout``."""
        return float(self.attention_dropout)

    @property
    def num_special_tokens(self) -> int:
        return 1

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> P3BCLIPConfig:
        """Full-width config of a stock ``CLIPConfig`` (the fields of its ``vision_config``, its labels) or of a
        ``CLIPVisionConfig``."""
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
