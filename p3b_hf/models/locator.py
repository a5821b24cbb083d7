"""Find the prunable modules of a HF ViT / DeiT / BEiT / DINOv2 classifier without graph tracing.

The architectures are fixed, so a locator is simpler and sturdier than dependency tracing: it
returns, per layer, the pre-attention LayerNorm, q/k/v, the attention output projection, the
post-attention LayerNorm, fc1 and fc2 (+ the layer scales and relative position bias table where the
family has them), plus embeddings, final norm / pooling norm and classifier head(s) and what the
classifier reads. It understands the transformers 5.x module names (``vit.layers[i].attention.q_proj``,
``beit.layers[i].lambda_1``, ``dinov2.encoder.layer[i].layer_scale1`` ...) and p3b_hf's own full-width
``P3B*`` models (legacy names). Where each piece lives is the family record's data
(:class:`~.families.LayerPaths` / :class:`~.families.StagePaths`); this module names no family.

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
    PLAIN,
    Family,
    LayerPaths,
    StagePaths,
    as_int,
    config_subject,
    dense_intermediate_size,
    families,
    family_of,
    get_path,
    is_pruned_config,
    is_supported_config,
    needs_conversion,
    refusal_reason,
    staged_family_of,
    unsupported_model_error,
)


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
    #: a gated MLP's up projection (``fc2(act(fc1(x)) * up(x))``, ``fc1`` the gate); ``None``: ungated
    up: nn.Linear | None = None


def mlp_hidden_of_bias(
    fc1: nn.Linear, act: nn.Module, up: nn.Linear | None, hid: torch.Tensor
) -> torch.Tensor:
    """The hidden units ``hid`` of an MLP that reads nothing (a zero input): ``act(fc1.b)``, times ``up.b`` for a
    gated MLP, in float64 -- what a removed MLP's constant folds through its fc2 / down columns."""
    h = act(fc1.bias.double()[hid])
    return h if up is None else h * up.bias.double()[hid]


@dataclass
class ViTModules:
    """Uniform view of a supported classifier. ``heads`` maps legacy head names to Linears.

    ``pooling`` says what the classifier reads: ``"cls"`` (ViT, DeiT, BEiT without mean pooling),
    ``"mean"`` (BEiT: LayerNorm ``pool_norm`` of the mean patch token), ``"cls+mean"`` (DINOv2: the
    concatenation, so each head has ``2 * hidden_size`` inputs) or ``"patch_mean"`` (a family without a CLS
    token -- ``cls_token`` is ``None`` -- whose classifier reads the mean of the final-normalised tokens).
    """

    family: str  # the record's name (stock model_type)
    model: nn.Module
    cls_token: nn.Parameter | None
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
    embed_norm: nn.LayerNorm | None = None  # a LayerNorm on the embeddings (CLIP's pre_layrnorm)
    pooler_norm: nn.LayerNorm | None = None  # read by pooler_output only, not by the classifier
    pooling: str = "cls"
    layer_norm_eps: float = 1e-12
    #: register tokens ``[1, R, C]`` between the special tokens and the patches (no position embedding)
    register_tokens: nn.Parameter | None = None
    special_tokens: int = 1  # tokens before the patches (the record's ``special_tokens``)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_registers(self) -> int:
        return 0 if self.register_tokens is None else int(self.register_tokens.shape[1])

    @property
    def num_special_tokens(self) -> int:
        """Tokens before the patches in the sequence: the record's special tokens (CLS [+ distillation]; none
        for a family without CLS) + registers."""
        return self.special_tokens + self.num_registers

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

        ``"mean_patches"`` for BEiT with mean pooling (its CLS token is never read by its classifier) and for
        the families without a CLS token (``"patch_mean"``);
        ``"cls"`` otherwise -- for DINOv2 too: its CLS token is the DINO-trained global descriptor and the
        first half of the classifier input, while the patch mean (the other half) is what the BPI patch
        head's global average pool already sees.
        """
        return "mean_patches" if self.pooling in ("mean", "patch_mean") else "cls"


def _unsupported(model: nn.Module, reason: str | None = None) -> UnsupportedModelError:
    return unsupported_model_error(type(model).__name__, reason or refusal_reason(model))


def require_supported_config(config: object) -> None:
    """Raise the one :class:`UnsupportedModelError` (naming every supported class) unless ``config`` is of a
    supported family. Every entry point (prune, finetune, compare, cost, bench, export) calls it on the
    config alone, before loading weights or writing anything."""
    if not is_supported_config(config):
        raise unsupported_model_error(config_subject(config), refusal_reason(config))


def stage_family_of(model: nn.Module) -> Family | None:
    """The record of a staged (Swin / ConvNeXt) classifier (stock or pruned), else ``None``."""
    return staged_family_of(getattr(model, "module", model))


def require_plain_vit(model: nn.Module, what: str) -> None:
    """Raise the one clear error when ``what`` (a method or tool defined on plain ViT blocks) meets a model of
    a staged family; every other unsupported model gets :func:`locate`'s error."""
    if stage_family_of(model) is not None:
        plain = ", ".join(c for f in families(PLAIN) for c in f.classes)
        raise UnsupportedModelError(
            f"{what} is defined for plain ViT blocks (supported: {plain}), but "
            f"{type(getattr(model, 'module', model)).__name__} is a hierarchical model (stages of windowed-attention "
            "/ convolution blocks) whose blocks' MLP hidden units (and Swin's head dims) p3b_hf prunes with "
            "--method vbp or --method global. Use one of those for this model, or load a ViT / DeiT / BEiT / "
            "DINOv2 classifier."
        )


def _refuse_unconverted(model: nn.Module) -> None:
    """A stock classifier whose record converts it first (CLIP: nested ``CLIPConfig``) is refused here, not
    converted: the modules handed out must be the ones the caller runs (hooks, gates, gradients)."""
    if needs_conversion(model):
        raise UnsupportedModelError(
            f"{type(model).__name__} is read in its full-width pruned format: convert it once with "
            "model = p3b_hf.models.families.prunable(model) (the same function, bit for bit; p3b_hf.load_model "
            "and the CLI do this on load), then prune, score or train that model."
        )


def _param(x: object) -> nn.Parameter | None:
    """A layer-scale attribute: a Parameter, or a plain float 1.0 when the family's layer scale is off."""
    return x if isinstance(x, torch.Tensor) else None


def _layer(blk: nn.Module, paths: LayerPaths) -> LayerModules:
    """One layer's pieces, found by the record's attribute paths."""
    return LayerModules(
        blk,
        get_path(blk, paths.ln_before),
        get_path(blk, paths.q),
        get_path(blk, paths.k),
        get_path(blk, paths.v),
        get_path(blk, paths.o),
        get_path(blk, paths.ln_after),
        get_path(blk, paths.fc1),
        get_path(blk, paths.fc2),
        get_path(blk, paths.act),
        ls1=_param(get_path(blk, paths.ls1)),
        ls2=_param(get_path(blk, paths.ls2)),
        rel_bias=_param(get_path(blk, paths.rel_bias)),
        up=get_path(blk, paths.up),
    )


def locate(model: nn.Module) -> ViTModules:
    """Return the :class:`ViTModules` of ``model`` or raise :class:`UnsupportedModelError`."""
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    _refuse_unconverted(model)
    require_plain_vit(model, "This code path (P3B's gates, layer-wise ViT plans, optimize_for_inference)")
    fam = family_of(model)
    if fam is None:
        raise _unsupported(model)
    cfg = model.config
    pruned = is_pruned_config(cfg)
    if pruned and not is_full_width(cfg):
        raise UnsupportedModelError(
            "This P3B model is already pruned; WidthPlans index the *dense* tensors. Prune the dense "
            "original instead (config.base_model_name_or_path="
            f"{getattr(cfg, 'base_model_name_or_path', None)!r})."
        )
    if not pruned:
        reason = fam.refuse(cfg)
        if reason:
            raise _unsupported(model, reason)
    paths = fam.layout(cfg, pruned)
    base = getattr(model, fam.prefix)
    emb = base.embeddings
    final_norm = get_path(base, paths.final_norm)
    pooling = fam.pooling(cfg)
    shared = get_path(base, paths.shared_rel_bias)
    return ViTModules(
        family=fam.name,
        model=model,
        cls_token=getattr(emb, "cls_token", None),
        dist_token=getattr(emb, "distillation_token", None),
        position_embeddings=getattr(emb, "position_embeddings", None),
        patch_projection=emb.patch_embeddings.projection,
        layers=[_layer(blk, paths) for blk in get_path(base, paths.blocks)],
        final_norm=final_norm if isinstance(final_norm, nn.LayerNorm) else None,
        heads=_heads(model),
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        intermediate_size=dense_intermediate_size(cfg),
        image_size=as_int(cfg.image_size),
        patch_size=as_int(cfg.patch_size),
        mask_token=getattr(emb, "mask_token", None),
        shared_rel_bias=_param(shared),
        pool_norm=get_path(base, paths.pool_norm) if pooling == "mean" else None,
        embed_norm=get_path(base, paths.embed_norm),
        pooler_norm=get_path(base, paths.pooler_norm),
        pooling=pooling,
        layer_norm_eps=float(cfg.layer_norm_eps),
        register_tokens=getattr(emb, "register_tokens", None),
        special_tokens=fam.special_tokens(cfg),
    )


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


# ============================================================================ MLP view (every family)
@dataclass
class WindowAttention:
    """A staged block's window attention, found by the record's :class:`~.families.StagePaths`: the q/k/v/o
    Linears, the relative position bias table ``[rows, heads]`` (``None`` without), heads and head dimension."""

    module: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    rel_bias: nn.Parameter | None
    num_attention_heads: int
    head_dim: int


def _window_attention(blk: nn.Module, paths: StagePaths) -> WindowAttention | None:
    module = get_path(blk, paths.attention)
    if module is None:
        return None
    return WindowAttention(
        module,
        get_path(module, paths.attn_q),
        get_path(module, paths.attn_k),
        get_path(module, paths.attn_v),
        get_path(module, paths.attn_o),
        get_path(module, paths.attn_rel_bias),
        int(get_path(module, paths.attn_num_heads)),
        int(get_path(module, paths.attn_head_dim)),
    )


@dataclass
class MLPBlock:
    """One block's MLP: ``fc2(act(fc1(x)))`` -- gated: ``fc2(act(fc1(x)) * up(x))`` with ``fc1`` the gate and
    ``fc2`` the down projection, one hidden unit being a (gate row, up row, down column) triple -- then
    (ConvNeXt, BEiT, DINOv2) a per-channel layer scale ``ls2`` on fc2's outputs *after* its bias (so a bias
    correction of fc2 is scaled with it, as the dense output is). fc2's input is the hidden units in both cases
    (VBP's moments and P3B's MLP gates read / mask it there)."""

    fc1: nn.Linear
    act: nn.Module
    fc2: nn.Linear
    ls2: torch.Tensor | None = None
    #: the block's window attention (Swin); None without attention
    attn: WindowAttention | None = None
    #: a gated MLP's up projection; None: ungated
    up: nn.Linear | None = None

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


def locate_mlps(model: nn.Module) -> MLPView:
    """The :class:`MLPView` of any supported classifier (plain-ViT families via :func:`locate`)."""
    model = getattr(model, "module", model)
    _refuse_unconverted(model)
    fam = stage_family_of(model)
    if fam is None:
        mods = locate(model)
        return MLPView(
            mods.family, model, [MLPBlock(lm.fc1, lm.act, lm.fc2, lm.ls2, up=lm.up) for lm in mods.layers]
        )
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
    paths = fam.stage_paths
    for stage in get_path(getattr(model, fam.prefix), paths.stages):
        stage_blocks = list(get_path(stage, paths.blocks))
        depths.append(len(stage_blocks))
        for blk in stage_blocks:
            ls = get_path(blk, paths.layer_scale)
            blocks.append(
                MLPBlock(
                    get_path(blk, paths.fc1),
                    get_path(blk, paths.act),
                    get_path(blk, paths.fc2),
                    ls if isinstance(ls, torch.Tensor) else None,
                    _window_attention(blk, paths),
                )
            )
    return MLPView(fam.name, model, blocks, depths)


def classifier_heads(model: nn.Module) -> dict[str, nn.Linear]:
    """The classifier head(s) of any supported model by attribute name (two for distilled DeiT with teacher)."""
    model = getattr(model, "module", model)
    if stage_family_of(model) is not None:
        return _heads(model)
    return locate(model).heads
