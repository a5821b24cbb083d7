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

from transformers import CLIPVisionConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BVisionTowerWidths, without_architecture_check

__all__ = ["LAYERNORM_MODES", "P3BCLIPConfig"]


class P3BCLIPConfig(P3BVisionTowerWidths, CLIPVisionConfig):
    r"""``CLIPVisionConfig`` + labels + per-layer widths."""

    model_type = "p3b_clip"
    _family_dense_keys = ("attention_dropout", "initializer_factor", "projection_dim")
    __class_validators__ = without_architecture_check(CLIPVisionConfig)

    @property
    def num_special_tokens(self) -> int:
        return 1
