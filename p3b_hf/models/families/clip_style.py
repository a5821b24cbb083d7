"""What the CLIP-style stock vision towers (CLIP, SigLIP) share, written once: their module names and the
converter of their stock classifier into the full-width pruned format.

The stock classifiers take a nested config (text and vision towers; the widths live in its ``vision_config``)
and name their modules ``encoder.layers.{i}.self_attn.q_proj`` / ``layer_norm1`` / ``mlp.fc1`` ..., which
generic code does not read. :func:`from_stock_by_renaming` builds the flat full-width pruned twin (ViT-style
names) and copies every weight it holds under its stock name, bit for bit. Like :mod:`.record`, this imports
nothing of p3b_hf's cost / plan code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .record import PRUNED_VIT_LAYOUT

#: (pruned name, stock name) substitutions shared by CLIP and SigLIP, applied in order to a pruned key
CLIP_STYLE_STOCK_NAMES = (
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

#: the stock CLIP-style layer paths (never located: ``from_stock`` converts first; recorded for the reader)
CLIP_STYLE_STOCK_LAYOUT = replace(
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
)


def stock_key(key: str, names: tuple[tuple[str, str], ...]) -> str:
    """The stock key of a full-width pruned ``key`` (each ``(ours, stock)`` substitution of ``names`` in order)."""
    for ours, stock in names:
        key = key.replace(ours, stock)
    return key


def from_stock_by_renaming(
    model: Any, config_class: type, model_class: type, names: tuple[tuple[str, str], ...]
) -> Any:
    """The full-width ``model_class`` of a stock nested-config classifier: ``config_class.from_dense_config``
    flattens its config, and each pruned weight is the stock one under :func:`stock_key` (same values, dtype,
    device and train mode; stock weights the pruned format has no key for are left out)."""
    config = config_class.from_dense_config(model.config)
    config._attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    stock = model.state_dict()
    ref = next(model.parameters())
    with torch.device("meta"):
        pruned = model_class(config)
    sd = {}
    for key, value in pruned.state_dict().items():
        sd[key] = stock[stock_key(key, names)].detach().reshape(value.shape).clone()
    pruned.load_state_dict(sd, strict=True, assign=True)
    return pruned.to(ref.device).train(model.training)
