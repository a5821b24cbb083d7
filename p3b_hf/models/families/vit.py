"""ViT: CLS token, absolute positions, q/k/v with biases, no layer scale. The reference family: the only one
(with DeiT) that ``optimize_for_inference`` rewrites and ``pad_widths`` pads."""

from __future__ import annotations

from typing import Any

from ..configuration_p3b_vit import P3BViTConfig
from ..modeling_p3b_vit import P3BViTForImageClassification, P3BViTModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family


def demo_model(common: dict[str, Any], mlp_dim: int) -> Any:
    """A random ViT classifier with the demo's widths."""
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(intermediate_size=mlp_dim, **common))


FAMILY = Family(
    name="vit",
    kind=PLAIN,
    prefix="vit",
    stock_classes=("ViTForImageClassification",),
    config_class=P3BViTConfig,
    model_class=P3BViTForImageClassification,
    backbone_class=P3BViTModel,
    pruned_classes=("P3BViTForImageClassification",),
    stock_layout=STOCK_VIT_LAYOUT,
    pruned_layout=PRUNED_VIT_LAYOUT,
    fast_path=True,
    paddable=True,
    demo_model=demo_model,
)
