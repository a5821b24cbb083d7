# Remote code: copied next to pruned checkpoints (``auto_map``) with its relative import
# (configuration_p3b_widths.py), so stock transformers loads it with ``trust_remote_code=True``; it imports only
# transformers and that file.
"""Configuration of a structurally pruned DINOv2 with per-layer widths (``model_type="p3b_dinov2"``).

The stock ``Dinov2Config`` plus the per-layer widths of :class:`~configuration_p3b_widths.P3BLayerWidths` (same
semantics as ViT's). DINOv2 adds layer scale (``layer_scale1/2.lambda1``, sliced with the written subsets), a
mask token, position embeddings for ``image_size`` that are interpolated to any input resolution, and a
classifier that reads ``[CLS, mean(patch tokens)]`` (``2 * hidden_size`` inputs). The MLP width is stored
as ``intermediate_size`` (stock: ``hidden_size * mlp_ratio``); with the SwiGLU MLP (``use_swiglu_ffn``, the giant
model) it is the gate / up / down width (stock: two thirds of that, rounded up to a multiple of 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import Dinov2Config

from .configuration_p3b_widths import LAYERNORM_MODES, P3BLayerWidths

__all__ = ["LAYERNORM_MODES", "P3BDinov2Config", "P3BDinov2Widths"]


@dataclass(kw_only=True, repr=False)
class P3BDinov2Widths(P3BLayerWidths):
    r"""The per-layer widths of the DINOv2 families (DINOv2, DINOv2 with registers), placed before their stock
    config: the MLP width stored as ``intermediate_size`` (stock: ``hidden_size * mlp_ratio``; the SwiGLU MLP's
    gate / up / down width), ``mlp_ratio`` kept as the informational ``intermediate_size / hidden_size``.

    Args beyond those of ``P3BLayerWidths``:
        intermediate_size: the dense MLP width (the per-layer widths default to it).
        mlp_ratio: informational, always ``intermediate_size / hidden_size`` (the stock field, so the config
            reads like the stock one).
    """

    #: the DINOv2 stock fields a full-width config copies (each family adds its own)
    _family_dense_keys = ("layerscale_value", "drop_path_rate", "use_swiglu_ffn", "mlp_ratio")

    intermediate_size: int = 3072

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.mlp_ratio = self.intermediate_size / max(self.hidden_size, 1)

    @property
    def num_special_tokens(self) -> int:
        return 1

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> Any:
        """Full-width config equivalent to the stock one (MLP width ``int(hidden_size * mlp_ratio)``)."""
        width = getattr(dense, "intermediate_size", None) or int(dense.hidden_size * dense.mlp_ratio)
        if getattr(dense, "use_swiglu_ffn", False) and getattr(dense, "intermediate_size", None) is None:
            # the stock SwiGLU MLP keeps two thirds of that, rounded up to a multiple of 8 (gate/up/down)
            width = (int(width * 2 / 3) + 7) // 8 * 8
        return super().from_dense_config(dense, **{"intermediate_size": width, **overrides})


def without_mlp_ratio_check(validators: dict[str, Any]) -> dict[str, Any]:
    """The stock config's ``__validators__`` less the ``mlp_ratio`` one: the stock field is an ``int``; here it
    is ``intermediate_size / hidden_size`` (configs written before these classes subclassed the stock config
    hold e.g. ``4.0``), so its strict int check is left out."""
    return {k: v for k, v in validators.items() if k != "mlp_ratio"}


class P3BDinov2Config(P3BDinov2Widths, Dinov2Config):
    r"""``Dinov2Config`` + per-layer widths (:class:`P3BDinov2Widths`)."""

    model_type = "p3b_dinov2"
    _family_dense_keys = (*P3BDinov2Widths._family_dense_keys, "use_mask_token")
    __validators__ = without_mlp_ratio_check(Dinov2Config.__validators__)
