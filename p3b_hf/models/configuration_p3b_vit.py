# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned ViT / DeiT with per-layer widths: the stock ``ViTConfig`` plus the
per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (see there for their meaning)."""

from __future__ import annotations

from transformers import ViTConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BDeiTConfig", "P3BViTConfig"]


class P3BViTConfig(P3BLayerWidths, ViTConfig):
    r"""``ViTConfig`` + per-layer widths (``model_type="p3b_vit"``).

    Args beyond the stock ``ViTConfig`` ones and those of ``P3BLayerWidths``:
        distilled: DeiT with a distillation token (two special tokens).
        distillation_head: DeiT-distilled with ``cls_classifier`` + ``distillation_classifier``.
    """

    model_type = "p3b_vit"

    distilled: bool = False
    distillation_head: bool = False

    @property
    def num_special_tokens(self) -> int:
        return 2 if self.distilled else 1


class P3BDeiTConfig(P3BViTConfig):
    """Pruned DeiT (distillation token; optionally the two-headed "with teacher" classifier)."""

    model_type = "p3b_deit"

    distilled: bool = True
