"""I-JEPA: a ViT without a CLS token (no special token before the patches; absolute positions, q/k/v biases,
no layer scale) whose classifier reads the mean of the final-normalised patch tokens (``"patch_mean"``). Its
checkpoints hold the legacy ViT names, so the pruned format is the ViT one under the ``ijepa`` prefix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_ijepa import P3BIJepaConfig
from ..modeling_p3b_ijepa import P3BIJepaForImageClassification, P3BIJepaModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family


def demo_model(common: dict[str, Any], mlp_dim: int) -> Any:
    """A random I-JEPA classifier with the demo's widths."""
    from transformers import IJepaConfig, IJepaForImageClassification

    return IJepaForImageClassification(IJepaConfig(intermediate_size=mlp_dim, **common))


FAMILY = Family(
    name="ijepa",
    kind=PLAIN,
    prefix="ijepa",
    stock_classes=("IJepaForImageClassification",),
    config_class=P3BIJepaConfig,
    model_class=P3BIJepaForImageClassification,
    backbone_class=P3BIJepaModel,
    pruned_classes=("P3BIJepaForImageClassification",),
    stock_layout=STOCK_VIT_LAYOUT,
    pruned_layout=replace(PRUNED_VIT_LAYOUT),
    pooling=lambda _config: "patch_mean",
    special_tokens=lambda _config: 0,
    demo_model=demo_model,
)
