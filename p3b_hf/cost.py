"""Analytic parameter and MAC counts of dense and pruned ViT/DeiT/BEiT/DINOv2 models, from configs alone.

MAC convention (matches the numbers the P3B and VBP papers report, e.g. DeiT-B 17.58 G and VBP's
DeiT-B p=0.55 -> 11.44 G): per image and over **all tokens** (patches + cls [+ distillation]),
every Linear / patch Conv counts ``out * (in + 1)`` MACs per token when it has a bias (one MAC for
the bias add; ``out * in`` without: BEiT's key), attention counts ``2 * heads * N^2 * head_dim``
(QK^T and AV); LayerNorm, GELU, softmax, layer scale, the relative position bias add, mean pooling,
residual adds and the gathers/scatters of channel subsets are not counted. The classifier head(s)
run on one token each (DINOv2's reads ``[CLS, mean]``, ``2C`` inputs).

``image_size`` (default: ``config.image_size``) sets the token count for MACs only; parameters never
depend on it (position embeddings and relative position tables are sized by ``config.image_size``).
DINOv2's ``config.image_size`` is its 518 px pretraining grid while its image processor feeds 224 px:
pass ``image_size=224`` for the fine-tuning cost.

``params`` is exact: it equals ``sum(p.numel() for p in model.parameters())`` of the model that
:func:`p3b_hf.apply_width_plan` builds, and of the stock model (checked in the tests).

Hierarchical families, same convention (Linear / Conv ``out * (in + 1)`` MACs per output position with a
bias, ``out * in`` without; norms, activations, layer scale, bias adds, pooling and the window
shifts / partitions not counted):

* Swin (``models/families/swin.py``, ``cost``): patch embedding conv; per block q/k/v/o over the tokens of its (padded)
  windows, window attention ``2 * N_tokens * w^2 * heads * head_dim`` (``QK^T`` and ``AV`` in every ``w x w`` window,
  ``w`` clamped to the stage resolution as transformers does), the MLP over every token; patch merging
  ``tokens/4 * 4C * 2C`` (no bias). Swin's own ``flops()`` also counts the norms -- 0.3 % of Swin-T.
* ConvNeXt (``models/families/convnext.py``, ``cost``): stem conv, per block the 7x7 depthwise conv (``49 + 1`` MACs per
  channel and position) and the two pointwise Linears, the 2x2 stride-2 downsampling convs. fvcore (the
  ConvNeXt paper's counter) counts no bias adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .models.families import (
    PLAIN,
    as_int,
    dense_intermediate_size,
    flat_config,
    is_pruned_config,
    prunable,
    require_family,
)


@dataclass
class _Arch:
    c: int
    layers: int
    special: int
    registers: int  # register tokens (no position embedding)
    patches: int  # at the MAC resolution
    positions: int  # rows of the absolute position embedding (0: none)
    patch_in: int  # channels * patch^2
    labels: int
    n_heads_out: int  # classifier heads (1, or 2 for distilled DeiT with teacher)
    head_in: int  # classifier input width (C, or 2C for DINOv2)
    qkv_biases: int  # how many of q, k, v have a bias (ViT 3 or 0, BEiT 2)
    layer_scale: bool
    rel_rows: int  # rows of a relative position bias table (0: none)
    rel_per_layer: bool
    shared_rel_heads: int  # columns of the shared relative position bias table (0: none)
    mask_token: int
    norms: int  # final LayerNorm and/or pooling LayerNorm (each 2C)
    patch_bias: bool  # the patch projection has a bias
    num_heads: list[int]
    head_dims: list[int]
    mlp: list[int]
    attn_in: list[int]
    attn_out: list[int]
    mlp_in: list[int]
    mlp_out: list[int]
    #: Linears reading the MLP input per hidden unit: 1 (fc1), 2 for a gated MLP (gate and up)
    mlp_reads: int = 1


def _arch(obj: Any, image_size: int | None) -> _Arch:
    model = prunable(obj) if isinstance(obj, nn.Module) else None
    cfg = model.config if model is not None else obj
    cfg = flat_config(cfg)  # a nested stock config (CLIP): the flat full-width one
    fam = require_family(cfg, PLAIN)
    lay = fam.pruned_layout
    patch = as_int(cfg.patch_size)
    grid = as_int(cfg.image_size) // patch
    img = image_size or as_int(cfg.image_size)
    c, n = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    k = int(cfg.num_labels)
    qkv_bias = bool(getattr(cfg, "qkv_bias", True))
    special = fam.special_tokens(cfg)
    if is_pruned_config(cfg):
        with_teacher = bool(getattr(cfg, "distillation_head", False))
    else:
        archs = list(getattr(cfg, "architectures", None) or [])
        with_teacher = (model is not None and hasattr(model, "distillation_classifier")) or (
            model is None and any("WithTeacher" in a for a in archs)
        )
    rel = fam.rel_bias
    rel_rows = rel.rows(cfg) if rel is not None else 0
    per_layer = rel is not None and rel.per_layer(cfg)
    shared = rel is not None and rel.shared(cfg)
    shared_heads = (
        (getattr(cfg, "shared_bias_num_heads", None) or int(cfg.num_attention_heads)) if shared else 0
    )
    a = _Arch(
        c=c,
        layers=n,
        special=special,
        registers=fam.register_tokens(cfg),
        patches=(img // patch) ** 2,
        positions=(grid * grid + special) if fam.absolute_positions(cfg) else 0,
        patch_in=int(cfg.num_channels) * patch * patch,
        labels=k,
        n_heads_out=2 if with_teacher else 1,
        head_in=c * fam.classifier_copies(cfg),
        qkv_biases=(3 if qkv_bias else 0) if fam.k_bias else 2,
        layer_scale=fam.layer_scale(cfg),
        rel_rows=rel_rows if per_layer else 0,
        rel_per_layer=per_layer,
        shared_rel_heads=shared_heads * rel_rows,
        mask_token=c if fam.mask_token(cfg) else 0,
        # one final LayerNorm (BEiT with mean pooling: the pooler's LN instead), + one on the embeddings (CLIP)
        norms=2 * c * sum(1 for p in (lay.final_norm or lay.pool_norm, lay.embed_norm, lay.pooler_norm) if p),
        patch_bias=fam.patch_bias,
        num_heads=[],
        head_dims=[],
        mlp=[],
        attn_in=[],
        attn_out=[],
        mlp_in=[],
        mlp_out=[],
        mlp_reads=2 if fam.is_gated(cfg) else 1,
    )
    if is_pruned_config(cfg):

        def w(s: list[int] | None) -> int:
            return c if s is None else len(s)

        a.num_heads, a.head_dims = list(cfg.layer_num_heads), list(cfg.layer_head_dims)
        a.mlp = list(cfg.layer_intermediate_sizes)
        a.attn_in, a.attn_out = [w(s) for s in cfg.layer_attn_in], [w(s) for s in cfg.layer_attn_out]
        a.mlp_in, a.mlp_out = [w(s) for s in cfg.layer_mlp_in], [w(s) for s in cfg.layer_mlp_out]
    else:  # stock config
        h = int(cfg.num_attention_heads)
        a.num_heads, a.head_dims, a.mlp = [h] * n, [c // h] * n, [dense_intermediate_size(cfg)] * n
        a.attn_in = a.attn_out = a.mlp_in = a.mlp_out = [c] * n
    return a


def count_cost(model_or_config: Any, image_size: int | None = None) -> dict[str, int]:
    """Return ``{"params", "macs", "block_params", "non_block_params"}`` (ints).

    Accepts a stock ``ViTConfig`` / ``DeiTConfig`` / ``BeitConfig`` / ``Dinov2Config``, a pruned p3b
    config, or a model (its config is used; for stock DeiT the presence of the distillation head is read
    from the model). ``block_params`` counts the encoder layers (LayerNorms, layer scales and per-layer
    relative position tables included, as the P3B budget does); ``non_block_params`` the embeddings
    (tokens, positions, patch projection), a shared relative position table, final / pooling norm and head(s).
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    fam = require_family(cfg)
    if fam.cost is not None:  # a family with its own count (the staged ones: Family.cost)
        return fam.cost(cfg, image_size)
    a = _arch(model_or_config, image_size)
    n_tok = a.patches + a.special + a.registers
    non_block = (
        (a.c * a.patch_in + (a.c if a.patch_bias else 0))
        + (a.special + a.registers) * a.c
        + a.mask_token
        + a.positions * a.c
        + a.norms
        + a.shared_rel_heads
        + a.n_heads_out * (a.head_in * a.labels + a.labels)
    )
    macs = a.patches * a.c * (a.patch_in + int(a.patch_bias)) + a.n_heads_out * a.labels * (a.head_in + 1)
    block = 0
    ls = 1 if a.layer_scale else 0
    for i in range(a.layers):
        inner = a.num_heads[i] * a.head_dims[i]
        ai, ao, mi, mo, h = a.attn_in[i], a.attn_out[i], a.mlp_in[i], a.mlp_out[i], a.mlp[i]
        if inner and ai and ao:
            block += 2 * ai + 3 * ai * inner + a.qkv_biases * inner + inner * ao + ao + ls * ao
            block += a.rel_rows * a.num_heads[i] if a.rel_per_layer else 0
            macs += (
                n_tok * (3 * inner * ai + a.qkv_biases * inner)
                + 2 * a.num_heads[i] * n_tok * n_tok * a.head_dims[i]
            )
            macs += n_tok * ao * (inner + 1)
        else:
            block += ao  # constant output of a removed sub-block (layer scale folded in)
        if h and mi and mo:
            # one hidden unit: fc1 row + bias (gated: gate and up rows + biases) and an fc2 / down column
            block += 2 * mi + a.mlp_reads * (mi * h + h) + h * mo + mo + ls * mo
            macs += a.mlp_reads * n_tok * h * (mi + 1) + n_tok * mo * (h + 1)
        else:
            block += mo
    return {"params": block + non_block, "macs": macs, "block_params": block, "non_block_params": non_block}


def plan_cost(model: Any, plan: Any) -> dict[str, int]:
    """:func:`count_cost` of the model ``plan`` would make from the dense ``model`` (no weights touched)."""
    from .models.locator import locate
    from .slicing import pruned_config

    if require_family(model.config).staged:
        return count_cost(pruned_config(model.config, plan))
    mods = locate(model)
    return count_cost(
        pruned_config(model.config, plan, distillation_head="distillation_classifier" in mods.heads)
    )
