# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned I-JEPA with per-layer widths (``model_type="p3b_ijepa"``).

The stock ``IJepaConfig`` plus the per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (same
semantics as ViT's). I-JEPA is a ViT without a CLS token: the sequence is the patch tokens only, and the
classifier reads the mean of the final-normalised patch tokens.
"""

from __future__ import annotations

from transformers import IJepaConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BIJepaConfig"]


class P3BIJepaConfig(P3BLayerWidths, IJepaConfig):
    """``IJepaConfig`` + per-layer widths (no special token before the patches)."""

    model_type = "p3b_ijepa"

    @property
    def num_special_tokens(self) -> int:
        return 0
