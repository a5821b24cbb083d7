"""DINOv2 with registers: DINOv2's layers (layer scale, ``mlp_ratio``, ``[CLS, mean of patches]`` classifier, a
processor that decides the resolution) plus ``num_register_tokens`` register tokens between CLS and the patches
(no position embedding, always a mask token). The registers are never pruned as tokens; their channels are
sliced with the embedding, and neither the classifier's patch mean nor BPI's patch heads read them. The SwiGLU
MLP (``use_swiglu_ffn``) is DINOv2's :class:`~.record.GatedMLP`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_dinov2_with_registers import P3BDinov2WithRegistersConfig
from ..modeling_p3b_dinov2_with_registers import (
    P3BDinov2WithRegistersForImageClassification,
    P3BDinov2WithRegistersModel,
)
from . import dinov2
from .record import PLAIN, Family


def demo_model(common: dict[str, Any], mlp_dim: int) -> Any:
    """A random DINOv2-with-registers classifier (an integer MLP ratio, 4 registers)."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

    if mlp_dim % common["hidden_size"]:
        raise ValueError(
            f"DINOv2 needs an integer MLP ratio; mlp_dim {mlp_dim} / hidden {common['hidden_size']}."
        )
    cfg = Dinov2WithRegistersConfig(mlp_ratio=mlp_dim // common["hidden_size"], **common)
    return Dinov2WithRegistersForImageClassification(cfg)


FAMILY = Family(
    name="dinov2_with_registers",
    kind=PLAIN,
    prefix="dinov2_with_registers",
    stock_classes=("Dinov2WithRegistersForImageClassification",),
    config_class=P3BDinov2WithRegistersConfig,
    model_class=P3BDinov2WithRegistersForImageClassification,
    backbone_class=P3BDinov2WithRegistersModel,
    pruned_classes=("P3BDinov2WithRegistersForImageClassification",),
    stock_layout=replace(dinov2.FAMILY.stock_layout),
    pruned_layout=replace(dinov2.FAMILY.pruned_layout),
    pooling=lambda _config: "cls+mean",
    layer_scale=lambda _config: True,
    register_tokens=lambda config: int(getattr(config, "num_register_tokens", 0)),
    mask_token=lambda _config: True,
    gated_mlp=dinov2.SWIGLU,
    feeds_config_image_size=False,
    demo_model=demo_model,
)
