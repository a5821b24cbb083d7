"""SigLIP vision (``SiglipForImageClassification``; also the fixed-resolution SigLIP2 checkpoints such as
``google/siglip2-base-patch16-224``, whose config is the same ``siglip`` model type): no CLS token, tanh-GELU,
``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` and ``mlp.fc1`` / ``fc2`` module names, a ``post_layernorm``
on every token, and a classifier that reads the mean of the normalised patch tokens (``"patch_mean"``, as
I-JEPA's). The vision tower's multihead attention-pooling head (``vision_model.head``, the stock
``pooler_output``) is never read by the classifier: the pruned format drops it (``pooler_output`` is ``None``).

The stock classifier takes a nested ``SiglipConfig`` (the widths live in its ``vision_config``): :func:`from_stock`
converts it, bit for bit, into the full-width pruned format (flat ``P3BSiglipConfig``), which every method
prunes (``prunable`` applies it on load and in ``apply_width_plan`` / ``locate`` / ``count_cost``).

``Siglip2ForImageClassification`` (model type ``siglip2``, the NaFlex checkpoints) is refused with one line: it
takes pre-patchified ``pixel_values`` with ``spatial_shapes`` / ``pixel_attention_mask`` and a Linear patch
embedding whose positions are resized per image, an input contract no p3b_hf data path provides.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..configuration_p3b_siglip import P3BSiglipConfig
from ..modeling_p3b_siglip import P3BSiglipForImageClassification, P3BSiglipModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, Family

#: why the NaFlex SigLIP2 classifier is refused, and what to load instead (one line)
SIGLIP2_NAFLEX_REASON = (
    "SigLIP2 NaFlex takes pre-patchified pixel_values with spatial_shapes / pixel_attention_mask, which p3b_hf "
    "does not feed; load the fixed-resolution checkpoint instead, e.g. "
    "AutoModelForImageClassification.from_pretrained('google/siglip2-base-patch16-224'), a "
    "SiglipForImageClassification that p3b_hf prunes"
)


def _stock_key(key: str) -> str:
    """The stock ``SiglipForImageClassification`` key of a full-width pruned key."""
    pairs = (
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


def from_stock(model: Any) -> P3BSiglipForImageClassification:
    """The full-width ``P3BSiglipForImageClassification`` of a stock ``SiglipForImageClassification`` (same
    weights but the unread MAP head, same dtype / device / train mode; the logits are bit-identical)."""
    config = P3BSiglipConfig.from_dense_config(model.config)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    stock = model.state_dict()
    ref = next(model.parameters())
    with torch.device("meta"):
        pruned = P3BSiglipForImageClassification(config)
    sd = {}
    for key, value in pruned.state_dict().items():
        src = stock[_stock_key(key)]
        sd[key] = src.detach().reshape(value.shape).clone()
    pruned.load_state_dict(sd, strict=True, assign=True)
    return pruned.to(ref.device).train(model.training)


FAMILY = Family(
    name="siglip",
    kind=PLAIN,
    prefix="vision_model",
    stock_classes=("SiglipForImageClassification",),
    config_class=P3BSiglipConfig,
    model_class=P3BSiglipForImageClassification,
    backbone_class=P3BSiglipModel,
    pruned_classes=("P3BSiglipForImageClassification",),
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
        final_norm="post_layernorm",
    ),
    # the classifier reads the mean of the post_layernorm-ed patch tokens
    pruned_layout=replace(PRUNED_VIT_LAYOUT, final_norm="post_layernorm"),
    pooling=lambda _config: "patch_mean",
    special_tokens=lambda _config: 0,
    from_stock=from_stock,
    # the stock parameters the classifier never reads, left out of the pruned format and of count_cost
    extras={"unread_stock_params": ("vision_model.head.",)},
    refused_classes={
        "Siglip2ForImageClassification": SIGLIP2_NAFLEX_REASON,
        "siglip2": SIGLIP2_NAFLEX_REASON,
    },
)
