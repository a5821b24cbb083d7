"""Find the prunable modules of a HF ViT / DeiT / BEiT / DINOv2 classifier without graph tracing.

The architectures are fixed, so a locator is simpler and sturdier than dependency tracing: it
returns, per layer, the pre-attention LayerNorm, q/k/v, the attention output projection, the
post-attention LayerNorm, fc1 and fc2 (+ the layer scales and relative position bias table where the
family has them), plus embeddings, final norm / pooling norm and classifier head(s) and what the
classifier reads. It understands the transformers 5.x module names (``vit.layers[i].attention.q_proj``,
``beit.layers[i].lambda_1``, ``dinov2.encoder.layer[i].layer_scale1`` ...) and p3b_hf's own full-width
``P3B*`` models (legacy names). See :mod:`.families` for the per-family differences.

Hierarchical Swin / ConvNeXt classifiers have no such layer: :func:`locate` refuses them with one clear
error, and :func:`locate_mlps` -- what VBP and grouped global pruning use -- returns every block's MLP
(``fc1 -> act -> fc2 [-> layer scale]``) for those and for the plain-ViT families alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .families import (
    FAMILIES,
    P3B_CONFIGS,
    STAGE_FAMILIES,
    StageFamily,
    config_subject,
    dense_intermediate_size,
    is_supported_config,
    unsupported_model_error,
)

SUPPORTED = tuple(c for f in FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes))
_FAMILY_OF_CLASS = {c: f.name for f in FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes)}
#: hierarchical classifiers whose MLP hidden units VBP / grouped global pruning prune
STAGE_SUPPORTED = tuple(c for f in STAGE_FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes))
_STAGE_OF_CLASS = {c: f for f in STAGE_FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes)}


@dataclass
class LayerModules:
    """The eight prunable pieces of one encoder layer (the layer module itself is ``block``), and the
    per-channel / per-head tensors coupled to them: ``ls1`` / ``ls2`` scale the attention / MLP output
    channels (layer scale; ``None`` without), ``rel_bias`` is the layer's relative position bias table
    ``[R, heads]`` (BEiT)."""

    block: nn.Module
    ln_before: nn.LayerNorm
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    ln_after: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    act: nn.Module
    ls1: nn.Parameter | None = None
    ls2: nn.Parameter | None = None
    rel_bias: nn.Parameter | None = None


@dataclass
class ViTModules:
    """Uniform view of a supported classifier. ``heads`` maps legacy head names to Linears.

    ``pooling`` says what the classifier reads: ``"cls"`` (ViT, DeiT, BEiT without mean pooling),
    ``"mean"`` (BEiT: LayerNorm ``pool_norm`` of the mean patch token) or ``"cls+mean"`` (DINOv2: the
    concatenation, so each head has ``2 * hidden_size`` inputs).
    """

    family: str  # "vit", "deit", "beit" or "dinov2" (= base_model_prefix of the legacy checkpoint)
    model: nn.Module
    cls_token: nn.Parameter
    dist_token: nn.Parameter | None
    position_embeddings: nn.Parameter | None
    patch_projection: nn.Conv2d
    layers: list[LayerModules]
    final_norm: nn.LayerNorm | None
    heads: dict[str, nn.Linear] = field(default_factory=dict)
    hidden_size: int = 0
    num_heads: int = 0
    head_dim: int = 0
    intermediate_size: int = 0
    image_size: int = 0
    patch_size: int = 0
    mask_token: nn.Parameter | None = None
    shared_rel_bias: nn.Parameter | None = None  # BEiT's shared relative position bias table [R, heads]
    pool_norm: nn.LayerNorm | None = None
    pooling: str = "cls"
    layer_norm_eps: float = 1e-12

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_special_tokens(self) -> int:
        return 2 if self.dist_token is not None else 1

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def classifier_copies(self) -> int:
        """How many copies of the residual stream a classifier head reads (DINOv2: CLS and patch mean)."""
        return 2 if self.pooling == "cls+mean" else 1

    @property
    def bpi_class_input(self) -> str:
        """What P3B's BPI class heads score (docs/p3b.md §2): the token the family classifies from.

        ``"mean_patches"`` for BEiT with mean pooling (its CLS token is never read by its classifier);
        ``"cls"`` otherwise -- for DINOv2 too: its CLS token is the DINO-trained global descriptor and the
        first half of the classifier input, while the patch mean (the other half) is what the BPI patch
        head's global average pool already sees.
        """
        return "mean_patches" if self.pooling == "mean" else "cls"


def _unsupported(model: nn.Module, reason: str | None = None) -> UnsupportedModelError:
    return unsupported_model_error(type(model).__name__, reason)


def require_supported_config(config: object) -> None:
    """Raise the one :class:`UnsupportedModelError` (naming every supported class) unless ``config`` is of a
    supported family. Every entry point (prune, finetune, compare, cost, bench, export) calls it on the
    config alone, before loading weights or writing anything."""
    if not is_supported_config(config):
        raise unsupported_model_error(config_subject(config))


def stage_family_of(model: nn.Module) -> StageFamily | None:
    """The :class:`~.families.StageFamily` of a Swin / ConvNeXt classifier (stock or pruned), else ``None``."""
    model = getattr(model, "module", model)
    for cls in type(model).__mro__:
        if cls.__name__ in _STAGE_OF_CLASS:
            return _STAGE_OF_CLASS[cls.__name__]
    return None


def require_plain_vit(model: nn.Module, what: str) -> None:
    """Raise the one clear error when ``what`` (a method or tool defined on plain ViT blocks) meets a Swin /
    ConvNeXt model; every other unsupported model gets :func:`locate`'s error."""
    if stage_family_of(model) is not None:
        raise UnsupportedModelError(
            f"{what} is defined for plain ViT blocks (supported: {', '.join(SUPPORTED)}), but "
            f"{type(getattr(model, 'module', model)).__name__} is a hierarchical model (stages of windowed-attention "
            "/ convolution blocks) whose blocks' MLP hidden units (and Swin's head dims) p3b_hf prunes with "
            "--method vbp or --method global. Use one of those for this model, or load a ViT / DeiT / BEiT / "
            "DINOv2 classifier."
        )


def _as_int(v: int | tuple | list) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def _family_of(model: nn.Module) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILY_OF_CLASS:
            return _FAMILY_OF_CLASS[cls.__name__]
    raise _unsupported(model)


def _param(x: object) -> nn.Parameter | None:
    """A layer-scale attribute: a Parameter, or a plain float 1.0 when the family's layer scale is off."""
    return x if isinstance(x, torch.Tensor) else None


def locate(model: nn.Module) -> ViTModules:
    """Return the :class:`ViTModules` of ``model`` or raise :class:`UnsupportedModelError`."""
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    require_plain_vit(model, "This code path (P3B's gates, layer-wise ViT plans, optimize_for_inference)")
    family = _family_of(model)
    cfg = model.config
    if isinstance(cfg, P3B_CONFIGS):
        return _locate_p3b(model, family)
    if family == "dinov2" and getattr(cfg, "use_swiglu_ffn", False):
        raise _unsupported(
            model,
            "config.use_swiglu_ffn=True: the SwiGLU MLP of DINOv2-giant is not supported; "
            "use facebook/dinov2-small, -base or -large",
        )
    base = getattr(model, family)
    emb = base.embeddings
    layers = []
    blocks = base.encoder.layer if family == "dinov2" else base.layers
    for blk in blocks:
        att = blk.attention
        if family == "dinov2":
            lm = LayerModules(
                blk,
                blk.norm1,
                att.q_proj,
                att.k_proj,
                att.v_proj,
                att.o_proj,
                blk.norm2,
                blk.mlp.fc1,
                blk.mlp.fc2,
                blk.mlp.activation_fn,
                ls1=blk.layer_scale1.lambda1,
                ls2=blk.layer_scale2.lambda1,
            )
        else:
            lm = LayerModules(
                blk,
                blk.layernorm_before,
                att.q_proj,
                att.k_proj,
                att.v_proj,
                att.o_proj,
                blk.layernorm_after,
                blk.mlp.fc1,
                blk.mlp.fc2,
                blk.mlp.activation_fn,
            )
            if family == "beit":
                lm.ls1, lm.ls2 = _param(blk.lambda_1), _param(blk.lambda_2)
                rel = blk.relative_position_bias
                lm.rel_bias = rel.relative_position_bias_table if rel is not None else None
        layers.append(lm)
    mods = ViTModules(
        family=family,
        model=model,
        cls_token=emb.cls_token,
        dist_token=getattr(emb, "distillation_token", None),
        position_embeddings=emb.position_embeddings,
        patch_projection=emb.patch_embeddings.projection,
        layers=layers,
        final_norm=base.layernorm if isinstance(base.layernorm, nn.LayerNorm) else None,
        heads=_heads(model),
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        intermediate_size=dense_intermediate_size(cfg),
        image_size=_as_int(cfg.image_size),
        patch_size=_as_int(cfg.patch_size),
        mask_token=getattr(emb, "mask_token", None),
        layer_norm_eps=float(cfg.layer_norm_eps),
    )
    _family_extras(mods, base, cfg)
    return mods


def _family_extras(mods: ViTModules, base: nn.Module, cfg: object) -> None:
    """Pooling, pooling norm and shared relative position bias (stock and P3B models alike)."""
    if mods.family == "beit":
        pool_norm = getattr(getattr(base, "pooler", None), "layernorm", None)
        if getattr(cfg, "use_mean_pooling", False):
            mods.pooling, mods.pool_norm = "mean", pool_norm
        shared = getattr(
            base, "shared_position_bias", None
        )  # stock name; P3B: encoder.relative_position_bias
        if shared is None:
            shared = getattr(getattr(base, "encoder", None), "relative_position_bias", None)
        mods.shared_rel_bias = shared.relative_position_bias_table if shared is not None else None
    elif mods.family == "dinov2":
        mods.pooling = "cls+mean"


def _heads(model: nn.Module) -> dict[str, nn.Linear]:
    """Classifier head(s) by legacy name (two for distilled DeiT with teacher)."""
    names = (
        ("cls_classifier", "distillation_classifier") if hasattr(model, "cls_classifier") else ("classifier",)
    )
    return {n: getattr(model, n) for n in names if isinstance(getattr(model, n), nn.Linear)}


def is_full_width(config) -> bool:
    """True if a P3B config has every width of its dense original (and no channel subsets)."""
    d = config.hidden_size // config.num_attention_heads
    return (
        all(h == config.num_attention_heads for h in config.layer_num_heads)
        and all(x == d for x in config.layer_head_dims)
        and all(x == config.intermediate_size for x in config.layer_intermediate_sizes)
        and all(
            s is None
            for key in ("layer_attn_in", "layer_attn_out", "layer_mlp_in", "layer_mlp_out")
            for s in getattr(config, key)
        )
        and all(s is None for s in getattr(config, "layer_bias_heads", []) or [])
        and getattr(config, "shared_bias_num_heads", None) in (None, config.num_attention_heads)
    )


def _locate_p3b(model: nn.Module, family: str) -> ViTModules:
    cfg = model.config
    if not is_full_width(cfg):
        raise UnsupportedModelError(
            "This P3B model is already pruned; WidthPlans index the *dense* tensors. Prune the dense "
            "original instead (config.base_model_name_or_path="
            f"{getattr(cfg, 'base_model_name_or_path', None)!r})."
        )
    base = getattr(model, family)
    emb = base.embeddings
    layers = []
    for blk in base.encoder.layer:
        sa = blk.attention.attention
        if family == "dinov2":
            lm = LayerModules(
                blk,
                blk.norm1,
                sa.query,
                sa.key,
                sa.value,
                blk.attention.output.dense,
                blk.norm2,
                blk.mlp.fc1,
                blk.mlp.fc2,
                blk.mlp.activation_fn,
                ls1=blk.layer_scale1.lambda1,
                ls2=blk.layer_scale2.lambda1,
            )
        else:
            lm = LayerModules(
                blk,
                blk.layernorm_before,
                sa.query,
                sa.key,
                sa.value,
                blk.attention.output.dense,
                blk.layernorm_after,
                blk.intermediate.dense,
                blk.output.dense,
                blk.intermediate.intermediate_act_fn,
                ls1=getattr(blk, "lambda_1", None),
                ls2=getattr(blk, "lambda_2", None),
            )
            rel = getattr(sa, "relative_position_bias", None)
            lm.rel_bias = rel.relative_position_bias_table if rel is not None else None
        layers.append(lm)
    final_norm = getattr(base, "layernorm", None)
    mods = ViTModules(
        family=family,
        model=model,
        cls_token=emb.cls_token,
        dist_token=getattr(emb, "distillation_token", None),
        position_embeddings=getattr(emb, "position_embeddings", None),
        patch_projection=emb.patch_embeddings.projection,
        layers=layers,
        final_norm=final_norm if isinstance(final_norm, nn.LayerNorm) else None,
        heads=_heads(model),
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        image_size=_as_int(cfg.image_size),
        patch_size=_as_int(cfg.patch_size),
        mask_token=getattr(emb, "mask_token", None),
        layer_norm_eps=float(cfg.layer_norm_eps),
    )
    _family_extras(mods, base, cfg)
    return mods


# ============================================================================ MLP view (every family)
@dataclass
class MLPBlock:
    """One block's MLP: ``fc2(act(fc1(x)))``, then (ConvNeXt, BEiT, DINOv2) a per-channel layer scale ``ls2``
    on fc2's outputs *after* its bias (so a bias correction of fc2 is scaled with it, as the dense output is)."""

    fc1: nn.Linear
    act: nn.Module
    fc2: nn.Linear
    ls2: torch.Tensor | None = None
    #: Swin: the block's window attention (``q_proj``/``k_proj``/``v_proj``/``o_proj``, ``num_attention_heads``,
    #: ``head_dim``, ``relative_position_bias.relative_position_bias_table``); None without attention
    attn: nn.Module | None = None

    @property
    def dim(self) -> int:
        """Residual width the block reads and writes."""
        return int(self.fc1.in_features)

    @property
    def width(self) -> int:
        """MLP hidden units."""
        return int(self.fc1.out_features)


@dataclass
class MLPView:
    """Every block's MLP in forward order (stage-major for Swin / ConvNeXt, whose ``stage_depths`` say how
    many blocks each stage has; ``None`` for the plain-ViT families)."""

    family: str
    model: nn.Module
    blocks: list[MLPBlock]
    stage_depths: list[int] | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


def _get_path(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def locate_mlps(model: nn.Module) -> MLPView:
    """The :class:`MLPView` of any supported classifier (plain-ViT families via :func:`locate`)."""
    model = getattr(model, "module", model)
    fam = stage_family_of(model)
    if fam is None:
        mods = locate(model)
        return MLPView(mods.family, model, [MLPBlock(lm.fc1, lm.act, lm.fc2, lm.ls2) for lm in mods.layers])
    cfg = model.config
    dense_heads = fam.dense_heads(cfg) if fam.dense_heads is not None else None
    if isinstance(cfg, fam.config_class) and (
        cfg.block_intermediate_sizes != fam.dense_widths(cfg)
        or (dense_heads is not None and (cfg.block_num_heads, cfg.block_head_dims) != dense_heads)
    ):
        raise UnsupportedModelError(
            "This P3B model is already pruned; WidthPlans index the *dense* tensors. Prune the dense original "
            f"instead (config.base_model_name_or_path={getattr(cfg, 'base_model_name_or_path', None)!r})."
        )
    blocks, depths = [], []
    for stage in _get_path(getattr(model, fam.name), fam.stages):
        stage_blocks = list(_get_path(stage, fam.blocks))
        depths.append(len(stage_blocks))
        for blk in stage_blocks:
            ls = _get_path(blk, fam.layer_scale) if fam.layer_scale else None
            blocks.append(
                MLPBlock(
                    _get_path(blk, fam.fc1),
                    _get_path(blk, fam.act),
                    _get_path(blk, fam.fc2),
                    ls if isinstance(ls, torch.Tensor) else None,
                    _get_path(blk, fam.attention) if fam.attention else None,
                )
            )
    return MLPView(fam.name, model, blocks, depths)


def classifier_heads(model: nn.Module) -> dict[str, nn.Linear]:
    """The classifier head(s) of any supported model by attribute name (two for distilled DeiT with teacher)."""
    model = getattr(model, "module", model)
    if stage_family_of(model) is not None:
        return _heads(model)
    return locate(model).heads
