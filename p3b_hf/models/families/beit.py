"""BEiT: layer scale (``lambda_1`` / ``lambda_2``), relative position bias tables (per layer and / or one
shared table), no key bias, optional absolute positions, and a classifier that reads the LayerNorm of the
mean patch token (``use_mean_pooling``) or the CLS token."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_beit import P3BBeitConfig
from ..modeling_p3b_beit import P3BBeitForImageClassification, P3BBeitModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family, RelativePositionBias, as_int


def _rows(config: Any) -> int:
    """``(2 * grid - 1)^2`` relative offsets + 3 (cls-to-token, token-to-cls, cls-to-cls)."""
    grid = as_int(config.image_size) // as_int(config.patch_size)
    return (2 * grid - 1) ** 2 + 3


def _layer_scale(config: Any) -> bool:
    return float(getattr(config, "layer_scale_init_value", 0.1)) > 0


def _pooling(config: Any) -> str:
    return "mean" if getattr(config, "use_mean_pooling", False) else "cls"


def demo_model(common: dict[str, Any], mlp_dim: int) -> Any:
    """The microsoft/beit-base-patch16-224 layout, random, no stochastic depth."""
    from transformers import BeitConfig, BeitForImageClassification

    return BeitForImageClassification(
        BeitConfig(
            intermediate_size=mlp_dim,
            use_relative_position_bias=True,
            use_mean_pooling=True,
            layer_scale_init_value=0.1,
            drop_path_rate=0.0,
            **common,
        )
    )


FAMILY = Family(
    name="beit",
    kind=PLAIN,
    prefix="beit",
    stock_classes=("BeitForImageClassification",),
    config_class=P3BBeitConfig,
    model_class=P3BBeitForImageClassification,
    backbone_class=P3BBeitModel,
    pruned_classes=("P3BBeitForImageClassification",),
    stock_layout=replace(
        STOCK_VIT_LAYOUT,
        ls1="lambda_1",
        ls2="lambda_2",
        rel_bias="relative_position_bias.relative_position_bias_table",
        pool_norm="pooler.layernorm",
        shared_rel_bias="shared_position_bias.relative_position_bias_table",
    ),
    pruned_layout=replace(
        PRUNED_VIT_LAYOUT,
        ls1="lambda_1",
        ls2="lambda_2",
        rel_bias="attention.attention.relative_position_bias.relative_position_bias_table",
        pool_norm="pooler.layernorm",
        shared_rel_bias="encoder.relative_position_bias.relative_position_bias_table",
    ),
    pooling=_pooling,
    k_bias=False,
    layer_scale=_layer_scale,
    absolute_positions=lambda config: bool(getattr(config, "use_absolute_position_embeddings", False)),
    rel_bias=RelativePositionBias(
        rows=_rows,
        per_layer=lambda config: bool(getattr(config, "use_relative_position_bias", False)),
        shared=lambda config: bool(getattr(config, "use_shared_relative_position_bias", False)),
    ),
    demo_model=demo_model,
)
