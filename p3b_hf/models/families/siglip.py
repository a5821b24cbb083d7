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

from ..configuration_p3b_siglip import P3BSiglipConfig
from ..modeling_p3b_siglip import P3BSiglipForImageClassification, P3BSiglipModel
from .clip_style import CLIP_STYLE_STOCK_LAYOUT, CLIP_STYLE_STOCK_NAMES, from_stock_by_renaming
from .record import PLAIN, PRUNED_VIT_LAYOUT, Family

#: why the NaFlex SigLIP2 classifier is refused, and what to load instead (one line)
SIGLIP2_NAFLEX_REASON = (
    "SigLIP2 NaFlex takes pre-patchified pixel_values with spatial_shapes / pixel_attention_mask, which p3b_hf "
    "does not feed; load the fixed-resolution checkpoint instead, e.g. "
    "AutoModelForImageClassification.from_pretrained('google/siglip2-base-patch16-224'), a "
    "SiglipForImageClassification that p3b_hf prunes"
)


def from_stock(model: Any) -> P3BSiglipForImageClassification:
    """The full-width ``P3BSiglipForImageClassification`` of a stock ``SiglipForImageClassification`` (same
    weights but the unread MAP head, same dtype / device / train mode; the logits are bit-identical)."""
    return from_stock_by_renaming(
        model, P3BSiglipConfig, P3BSiglipForImageClassification, CLIP_STYLE_STOCK_NAMES
    )


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
    stock_layout=replace(CLIP_STYLE_STOCK_LAYOUT, final_norm="post_layernorm"),
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
