# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned BEiT with per-layer widths (``model_type="p3b_beit"``).

The stock ``BeitConfig`` plus the per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (same
semantics as ViT's). BEiT adds layer scale (``lambda_1`` / ``lambda_2``, sliced with the written subsets),
relative position bias tables (one column per kept head; per layer and/or shared by all layers), an
optional absolute position embedding and mask token, a bias-free key projection, and classification from
the mean of the patch tokens + a pooler LayerNorm (``use_mean_pooling``) or from the CLS token.
"""

from __future__ import annotations

from typing import Any

from transformers import BeitConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BBeitConfig"]


class P3BBeitConfig(P3BLayerWidths, BeitConfig):
    r"""``BeitConfig`` + per-layer widths.

    Args beyond the stock ``BeitConfig`` ones and those of ``P3BLayerWidths``:
        layer_bias_heads: per layer, the columns of the *shared* relative position bias table its kept
            heads use (``None`` = all columns in order); only with ``use_shared_relative_position_bias``.
        shared_bias_num_heads: columns of the (sliced) shared relative position bias table (``None``:
            ``num_attention_heads``).
    """

    model_type = "p3b_beit"
    _family_dense_keys = (
        "use_mask_token",
        "use_absolute_position_embeddings",
        "use_relative_position_bias",
        "use_shared_relative_position_bias",
        "layer_scale_init_value",
        "drop_path_rate",
        "use_mean_pooling",
    )

    layer_bias_heads: list[list[int] | None] | None = None
    shared_bias_num_heads: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.image_size = int(
            self.image_size[0] if isinstance(self.image_size, (list, tuple)) else self.image_size
        )
        self.patch_size = int(
            self.patch_size[0] if isinstance(self.patch_size, (list, tuple)) else self.patch_size
        )
        self.layer_bias_heads = self._per_layer("layer_bias_heads", None)
        if self.shared_bias_num_heads is not None:
            self.shared_bias_num_heads = int(self.shared_bias_num_heads)

    @property
    def num_special_tokens(self) -> int:
        return 1
