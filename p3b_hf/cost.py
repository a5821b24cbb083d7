"""Analytic parameter and MAC counts of dense and pruned ViT/DeiT models, from configs alone.

MAC convention (matches the numbers the P3B and VBP papers report, e.g. DeiT-B 17.58 G and VBP's
DeiT-B p=0.55 -> 11.44 G): per image and over **all tokens** (patches + cls [+ distillation]),
every Linear / patch Conv counts ``out * (in + 1)`` MACs per token (one MAC for the bias add),
attention counts ``2 * heads * N^2 * head_dim`` (QK^T and AV); LayerNorm, GELU, softmax,
residual adds and the gathers/scatters of channel subsets are not counted.
The classifier head(s) run on one token each.

``params`` is exact: it equals ``sum(p.numel() for p in model.parameters())`` of the model that
:func:`p3b_hf.apply_width_plan` builds (checked in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .models.configuration_p3b_vit import P3BViTConfig


@dataclass
class _Arch:
    c: int
    layers: int
    special: int
    patches: int
    patch_in: int  # channels * patch^2
    labels: int
    n_heads_out: int  # classifier heads (1, or 2 for distilled DeiT with teacher)
    qkv_bias: bool
    num_heads: list[int]
    head_dims: list[int]
    mlp: list[int]
    attn_in: list[int]
    attn_out: list[int]
    mlp_in: list[int]
    mlp_out: list[int]


def _as_int(v: Any) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _arch(obj: Any, image_size: int | None) -> _Arch:
    model = obj if isinstance(obj, nn.Module) else None
    cfg = obj.config if model is not None else obj
    img = image_size or _as_int(cfg.image_size)
    patch = _as_int(cfg.patch_size)
    c, n = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    k = int(cfg.num_labels)
    if isinstance(cfg, P3BViTConfig):
        special = cfg.num_special_tokens
        n_out = 2 if cfg.distillation_head else 1

        def w(s: list[int] | None) -> int:
            return c if s is None else len(s)

        return _Arch(c, n, special, (img // patch) ** 2, cfg.num_channels * patch * patch, k, n_out, cfg.qkv_bias,
                     list(cfg.layer_num_heads), list(cfg.layer_head_dims), list(cfg.layer_intermediate_sizes),
                     [w(s) for s in cfg.layer_attn_in], [w(s) for s in cfg.layer_attn_out],
                     [w(s) for s in cfg.layer_mlp_in], [w(s) for s in cfg.layer_mlp_out])
    # stock ViTConfig / DeiTConfig
    distilled = getattr(cfg, "model_type", "vit") == "deit"
    archs = list(getattr(cfg, "architectures", None) or [])
    with_teacher = (model is not None and hasattr(model, "distillation_classifier")) or (
        model is None and any("WithTeacher" in a for a in archs))
    h = int(cfg.num_attention_heads)
    return _Arch(c, n, 2 if distilled else 1, (img // patch) ** 2, int(cfg.num_channels) * patch * patch, k,
                 2 if with_teacher else 1, bool(getattr(cfg, "qkv_bias", True)), [h] * n, [c // h] * n,
                 [int(cfg.intermediate_size)] * n, [c] * n, [c] * n, [c] * n, [c] * n)


def count_cost(model_or_config: Any, image_size: int | None = None) -> dict[str, int]:
    """Return ``{"params", "macs", "block_params", "non_block_params"}`` (ints).

    Accepts a stock ``ViTConfig``/``DeiTConfig``, a :class:`P3BViTConfig`, or a model (its config is
    used; for stock DeiT the presence of the distillation head is read from the model).
    ``block_params`` counts the encoder layers (LayerNorms included, as the P3B budget does);
    ``non_block_params`` the embeddings, final norm and head(s).
    """
    a = _arch(model_or_config, image_size)
    n_tok = a.patches + a.special
    qb = 1 if a.qkv_bias else 0
    non_block = (a.c * a.patch_in + a.c) + a.special * a.c + n_tok * a.c + 2 * a.c + a.n_heads_out * (a.c * a.labels
                                                                                                     + a.labels)
    macs = a.patches * a.c * (a.patch_in + 1) + a.n_heads_out * a.labels * (a.c + 1)
    block = 0
    for i in range(a.layers):
        inner = a.num_heads[i] * a.head_dims[i]
        ai, ao, mi, mo, h = a.attn_in[i], a.attn_out[i], a.mlp_in[i], a.mlp_out[i], a.mlp[i]
        if inner and ai and ao:
            block += 2 * ai + 3 * (ai * inner + qb * inner) + inner * ao + ao
            macs += n_tok * 3 * inner * (ai + qb) + 2 * a.num_heads[i] * n_tok * n_tok * a.head_dims[i]
            macs += n_tok * ao * (inner + 1)
        else:
            block += ao  # constant output of a removed sub-block
        if h and mi and mo:
            block += 2 * mi + mi * h + h + h * mo + mo
            macs += n_tok * h * (mi + 1) + n_tok * mo * (h + 1)
        else:
            block += mo
    return {"params": block + non_block, "macs": macs, "block_params": block, "non_block_params": non_block}


def plan_cost(model: Any, plan: Any) -> dict[str, int]:
    """:func:`count_cost` of the model ``plan`` would make from the dense ``model`` (no weights touched)."""
    from .models.locator import locate
    from .plan import pruned_config

    mods = locate(model)
    return count_cost(pruned_config(model.config, plan, distillation_head="distillation_classifier" in mods.heads))
