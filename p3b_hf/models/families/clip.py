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

import torch

from ..configuration_p3b_clip import P3BCLIPConfig
from ..modeling_p3b_clip import P3BCLIPForImageClassification, P3BCLIPModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, Family


def _stock_key(key: str) -> str:
    """The stock ``CLIPForImageClassification`` key of a full-width pruned key."""
    pairs = (
        ("embeddings.cls_token", "embeddings.class_embedding"),
        ("embeddings.position_embeddings", "embeddings.position_embedding.weight"),
        ("embeddings.patch_embeddings.projection.", "embeddings.patch_embedding."),
        ("encoder.layer.", "encoder.layers."),
        ("attention.attention.query.", "self_attn.q_proj."),
        ("attention.attention.key.", "self_attn.k_proj."),
        ("attention.attention.value.", "self_attn.v_proj."),
        ("attention.output.dense.", "self_attn.out_proj."),
        ("layernorm_before.", "layer_norm1."),
        ("layernorm_after.", "layer_norm2."),
        ("intermediate.dense.", "mlp.fc1."),
        ("output.dense.", "mlp.fc2."),
    )
    for ours, stock in pairs:
        key = key.replace(ours, stock)
    return key


def from_stock(model: Any) -> P3BCLIPForImageClassification:
    """The full-width ``P3BCLIPForImageClassification`` of a stock ``CLIPForImageClassification`` (same weights,
    same dtype / device / train mode; the logits are bit-identical)."""
    config = P3BCLIPConfig.from_dense_config(model.config)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    stock = model.state_dict()
    ref = next(model.parameters())
    with torch.device("meta"):
        pruned = P3BCLIPForImageClassification(config)
    sd = {}
    for key, value in pruned.state_dict().items():
        src = stock[_stock_key(key)]
        sd[key] = src.detach().reshape(value.shape).clone()
    pruned.load_state_dict(sd, strict=True, assign=True)
    return pruned.to(ref.device).train(model.training)


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
        PRUNED_VIT_LAYOUT,
        blocks="encoder.layers",
        ln_before="layer_norm1",
        q="self_attn.q_proj",
        k="self_attn.k_proj",
        v="self_attn.v_proj",
        o="self_attn.out_proj",
        ln_after="layer_norm2",
        fc1="mlp.fc1",
        act="mlp.activation_fn",
        fc2="mlp.fc2",
        final_norm=None,
        embed_norm="pre_layrnorm",
        pooler_norm="post_layernorm",
    ),
    # the classifier reads the raw encoder output: no final norm; ``post_layernorm`` feeds pooler_output only
    pruned_layout=replace(
        PRUNED_VIT_LAYOUT, final_norm=None, embed_norm="pre_layrnorm", pooler_norm="post_layernorm"
    ),
    pooling=lambda _config: "mean",
    patch_bias=False,
    from_stock=from_stock,
)
