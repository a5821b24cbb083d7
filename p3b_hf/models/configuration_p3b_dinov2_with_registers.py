# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned DINOv2 with registers (``model_type="p3b_dinov2_with_registers"``).

The stock ``Dinov2WithRegistersConfig`` plus the per-layer widths of
:class:`~configuration_p3b_widths.P3BLayerWidths` (same semantics as ViT's). Beyond DINOv2 it has
``num_register_tokens`` register tokens between CLS and the patches (no position embedding; never pruned as
tokens, their channels sliced with the embedding) and always a mask token. The MLP width is stored as
``intermediate_size`` (stock: ``hidden_size * mlp_ratio``); with the SwiGLU MLP (``use_swiglu_ffn``) it is the
gate / up / down width.
"""

from __future__ import annotations

from typing import Any

from transformers import Dinov2WithRegistersConfig

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BDinov2WithRegistersConfig"]


class P3BDinov2WithRegistersConfig(P3BLayerWidths, Dinov2WithRegistersConfig):
    r"""``Dinov2WithRegistersConfig`` + per-layer widths.

    Args beyond the stock ``Dinov2WithRegistersConfig`` ones and those of ``P3BLayerWidths``:
        intermediate_size: the dense MLP width (the per-layer widths default to it).
        mlp_ratio: informational, always ``intermediate_size / hidden_size``.
    """

    model_type = "p3b_dinov2_with_registers"
    _family_dense_keys = (
        "layerscale_value",
        "drop_path_rate",
        "use_swiglu_ffn",
        "num_register_tokens",
        "mlp_ratio",
    )

    intermediate_size: int = 3072
    # the stock field is an ``int``; here it is ``intermediate_size / hidden_size``
    __validators__ = {k: v for k, v in Dinov2WithRegistersConfig.__validators__.items() if k != "mlp_ratio"}

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.mlp_ratio = self.intermediate_size / max(self.hidden_size, 1)

    @property
    def num_special_tokens(self) -> int:
        return 1

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> P3BDinov2WithRegistersConfig:
        """Full-width config equivalent to a stock ``Dinov2WithRegistersConfig`` (MLP width
        ``int(hidden_size * mlp_ratio)``)."""
        width = getattr(dense, "intermediate_size", None) or int(dense.hidden_size * dense.mlp_ratio)
        if getattr(dense, "use_swiglu_ffn", False) and getattr(dense, "intermediate_size", None) is None:
            # the stock SwiGLU MLP keeps two thirds of that, rounded up to a multiple of 8 (gate/up/down)
            width = (int(width * 2 / 3) + 7) // 8 * 8
        return super().from_dense_config(dense, **{"intermediate_size": width, **overrides})
