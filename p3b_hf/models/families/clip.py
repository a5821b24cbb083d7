"""CLIP vision (``CLIPForImageClassification``): a LayerNorm on the embeddings (``pre_layrnorm``), quick-GELU,
a bias-free patch projection, ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` and ``mlp.fc1`` / ``fc2``
module names, and a classifier that reads the mean of the un-normalised patch tokens (``post_layernorm`` only
normalises the vision tower's ``pooler_output``, the CLS token). The stock classifier takes a nested
``CLIPConfig`` (the widths live in its ``vision_config``), which generic code cannot read: :func:`from_stock`
converts it, bit for bit, into the full-width pruned format (flat ``P3BCLIPConfig``), and every method prunes
that (``prunable`` applies it on load and in ``apply_width_plan`` / ``locate`` / ``count_cost``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_clip import P3BCLIPConfig
from ..modeling_p3b_clip import P3BCLIPForImageClassification, P3BCLIPModel
from .clip_style import CLIP_STYLE_STOCK_LAYOUT, CLIP_STYLE_STOCK_NAMES, from_stock_by_renaming
from .record import PLAIN, PRUNED_VIT_LAYOUT, Family

#: CLIP's stock names: the shared CLIP-style ones and its class embedding (the CLS token)
_STOCK_NAMES = (("embeddings.cls_token", "embeddings.class_embedding"), *CLIP_STYLE_STOCK_NAMES)


def from_stock(model: Any) -> P3BCLIPForImageClassification:
    """The full-width ``P3BCLIPForImageClassification`` of a stock ``CLIPForImageClassification`` (same weights,
    same dtype / device / train mode; the logits are bit-identical)."""
    return from_stock_by_renaming(model, P3BCLIPConfig, P3BCLIPForImageClassification, _STOCK_NAMES)


FAMILY = Family(
    name="clip",
    kind=PLAIN,
    prefix="vision_model",
    stock_classes=("CLIPForImageClassification",),
    config_class=P3BCLIPConfig,
    model_class=P3BCLIPForImageClassification,
    backbone_class=P3BCLIPModel,
    pruned_classes=("P3BCLIPForImageClassification",),
    # the stock layout is never located (``from_stock`` converts it first); recorded for the reader
    stock_layout=replace(
        CLIP_STYLE_STOCK_LAYOUT, final_norm=None, embed_norm="pre_layrnorm", pooler_norm="post_layernorm"
    ),
    # the classifier reads the raw encoder output: no final norm; ``post_layernorm`` feeds pooler_output only
    pruned_layout=replace(
        PRUNED_VIT_LAYOUT, final_norm=None, embed_norm="pre_layrnorm", pooler_norm="post_layernorm"
    ),
    pooling=lambda _config: "mean",
    patch_bias=False,
    from_stock=from_stock,
)
