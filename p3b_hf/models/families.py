"""What differs between the supported backbone families, in one place.

Every family is a pre-LN transformer encoder with the same six prunable pieces per layer (read-LN, q/k/v,
attention output, read-LN, fc1, fc2). What the plan slicer, cost model and methods need beyond that:

===========  ==========  =====================  ==============  =============================  ==================
family       prefix      layer scale            rel. pos. bias  classifier reads               k bias
===========  ==========  =====================  ==============  =============================  ==================
ViT          ``vit``     --                     --              CLS                            ``qkv_bias``
DeiT         ``deit``    --                     --              CLS (+ distillation token)     ``qkv_bias``
BEiT         ``beit``    ``lambda_1/2``         per layer and/  LN(mean of patches) or CLS     none (q, v only)
                                                or shared
DINOv2       ``dinov2``  ``layer_scale1/2``     --              [CLS, mean of patches] (2C)    ``qkv_bias``
===========  ==========  =====================  ==============  =============================  ==================

:data:`FAMILIES` maps a family name to its :class:`Family`: the legacy checkpoint key names of one
layer (what :func:`p3b_hf.apply_width_plan` writes), and the pruned config / classifier / backbone
classes (self-contained files in this package, pushed as remote code).

Hierarchical families (:data:`STAGE_FAMILIES`) -- Swin and ConvNeXt -- are stages of blocks whose width grows
stage by stage. Only the MLP hidden units of each block are pruned there (VBP, grouped global pruning): the
pruned format is the stock model with narrower ``fc1`` / ``fc2`` Linears. A :class:`StageFamily` says where
each block's MLP lives:

===========  ============  ======================  =====================  ===========================
family       prefix        stages / blocks         fc1, act, fc2          layer scale (on fc2's output)
===========  ============  ======================  =====================  ===========================
Swin         ``swin``      ``encoder.layers`` /    ``mlp.fc1``,           --
                           ``blocks``              ``mlp.activation_fn``,
                                                   ``mlp.fc2``
ConvNeXt     ``convnext``  ``encoder.stages`` /    ``pwconv1``, ``act``,  ``layer_scale_parameter``
                           ``layers``              ``pwconv2``
===========  ============  ======================  =====================  ===========================

Swin's window attention (``attention.q_proj`` ... ``o_proj``, ``relative_position_bias`` table) may also keep
fewer heads / head dimensions per block; ConvNeXt has no attention (its depthwise conv stays whole).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UnsupportedModelError
from .configuration_p3b_beit import P3BBeitConfig
from .configuration_p3b_convnext import P3BConvNextConfig, dense_convnext_mlp_widths
from .configuration_p3b_dinov2 import P3BDinov2Config
from .configuration_p3b_swin import P3BSwinConfig, dense_swin_heads, dense_swin_mlp_widths
from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig
from .modeling_p3b_beit import P3BBeitForImageClassification, P3BBeitModel
from .modeling_p3b_convnext import P3BConvNextForImageClassification, P3BConvNextModel
from .modeling_p3b_dinov2 import P3BDinov2ForImageClassification, P3BDinov2Model
from .modeling_p3b_swin import P3BSwinForImageClassification, P3BSwinModel
from .modeling_p3b_vit import (
    P3BDeiTForImageClassification,
    P3BDeiTModel,
    P3BViTForImageClassification,
    P3BViTModel,
)


@dataclass(frozen=True)
class LayerKeys:
    """Legacy state-dict names of one encoder layer's pieces, relative to ``{prefix}.encoder.layer.{i}``."""

    ln_before: str
    q: str
    k: str
    v: str
    o: str
    ln_after: str
    fc1: str
    fc2: str
    ls1: str | None = None  # layer scale of the attention output
    ls2: str | None = None  # layer scale of the MLP output
    rel_bias: str | None = None  # per-layer relative position bias table [R, heads]


VIT_KEYS = LayerKeys(
    "layernorm_before",
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "layernorm_after",
    "intermediate.dense",
    "output.dense",
)
BEIT_KEYS = replace(
    VIT_KEYS,
    ls1="lambda_1",
    ls2="lambda_2",
    rel_bias="attention.attention.relative_position_bias.relative_position_bias_table",
)
DINOV2_KEYS = replace(
    VIT_KEYS,
    ln_before="norm1",
    ln_after="norm2",
    fc1="mlp.fc1",
    fc2="mlp.fc2",
    ls1="layer_scale1.lambda1",
    ls2="layer_scale2.lambda1",
)


@dataclass(frozen=True)
class Family:
    """One supported family: stock classifier classes, legacy key names, pruned classes."""

    name: str  # = base_model_prefix of the legacy checkpoints
    stock_classes: tuple[str, ...]
    keys: LayerKeys
    config_class: type
    model_class: type
    backbone_class: type
    #: pruned classes that need this family's config subclass (DeiT's is a P3BViTConfig subclass)
    pruned_classes: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "vit": Family(
        "vit",
        ("ViTForImageClassification",),
        VIT_KEYS,
        P3BViTConfig,
        P3BViTForImageClassification,
        P3BViTModel,
        ("P3BViTForImageClassification",),
    ),
    "deit": Family(
        "deit",
        ("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
        VIT_KEYS,
        P3BDeiTConfig,
        P3BDeiTForImageClassification,
        P3BDeiTModel,
        ("P3BDeiTForImageClassification",),
    ),
    "beit": Family(
        "beit",
        ("BeitForImageClassification",),
        BEIT_KEYS,
        P3BBeitConfig,
        P3BBeitForImageClassification,
        P3BBeitModel,
        ("P3BBeitForImageClassification",),
    ),
    "dinov2": Family(
        "dinov2",
        ("Dinov2ForImageClassification",),
        DINOV2_KEYS,
        P3BDinov2Config,
        P3BDinov2ForImageClassification,
        P3BDinov2Model,
        ("P3BDinov2ForImageClassification",),
    ),
}

#: every pruned config class (``isinstance(cfg, P3B_CONFIGS)``: a p3b_hf pruned / full-width model)
P3B_CONFIGS: tuple[type, ...] = (P3BViTConfig, P3BBeitConfig, P3BDinov2Config)


@dataclass(frozen=True)
class StageFamily:
    """One hierarchical family: stock / pruned classes and where each block's MLP lives (attribute paths)."""

    name: str  # = base_model_prefix
    stock_classes: tuple[str, ...]
    config_class: type
    model_class: type
    backbone_class: type
    pruned_classes: tuple[str, ...]
    stages: str  # from the base model to the list of stages
    blocks: str  # from a stage to its list of blocks
    fc1: str
    act: str
    fc2: str
    layer_scale: str | None  # per-channel scale of fc2's output (ConvNeXt's gamma), applied after fc2's bias
    dense_widths: Callable[[Any], list[list[int]]]  # config -> dense MLP width per stage and block
    stage_dims: Callable[[Any], list[int]]  # config -> residual width of each stage
    #: the block's attention module (q_proj / k_proj / v_proj / o_proj, relative_position_bias table), if any
    attention: str | None = None
    #: config -> dense (heads, head_dim) per stage and block
    dense_heads: Callable[[Any], tuple[list[list[int]], list[list[int]]]] | None = None


def _swin_dims(config: Any) -> list[int]:
    return [int(config.embed_dim * 2**s) for s in range(len(config.depths))]


def _convnext_dims(config: Any) -> list[int]:
    return [int(c) for c in config.hidden_sizes][: len(config.depths)]


STAGE_FAMILIES: dict[str, StageFamily] = {
    "swin": StageFamily(
        "swin",
        ("SwinForImageClassification",),
        P3BSwinConfig,
        P3BSwinForImageClassification,
        P3BSwinModel,
        ("P3BSwinForImageClassification",),
        "encoder.layers",
        "blocks",
        "mlp.fc1",
        "mlp.activation_fn",
        "mlp.fc2",
        None,
        dense_swin_mlp_widths,
        _swin_dims,
        "attention",
        dense_swin_heads,
    ),
    "convnext": StageFamily(
        "convnext",
        ("ConvNextForImageClassification",),
        P3BConvNextConfig,
        P3BConvNextForImageClassification,
        P3BConvNextModel,
        ("P3BConvNextForImageClassification",),
        "encoder.stages",
        "layers",
        "pwconv1",
        "act",
        "pwconv2",
        "layer_scale_parameter",
        dense_convnext_mlp_widths,
        _convnext_dims,
    ),
}

#: pruned config classes of the hierarchical families
STAGE_CONFIGS: tuple[type, ...] = (P3BSwinConfig, P3BConvNextConfig)


def stage_family_of_config(config: Any) -> StageFamily | None:
    """The :class:`StageFamily` of a stock or pruned Swin / ConvNeXt config, else ``None``."""
    mt = str(getattr(config, "model_type", "") or "")
    return STAGE_FAMILIES.get(mt[4:] if mt.startswith("p3b_") else mt)


def supported_classes_text() -> str:
    """Every supported classifier class, generated from :data:`FAMILIES` and :data:`STAGE_FAMILIES` (so a new
    family is named in every error without editing it)."""
    plain = [c for f in FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes)]
    stage = [c for f in STAGE_FAMILIES.values() for c in (*f.stock_classes, *f.pruned_classes)]
    return (
        f"{', '.join(plain)} (all methods) and {', '.join(stage)} (MLP hidden units, --method vbp / global)"
    )


def unsupported_model_error(subject: str, reason: str | None = None) -> UnsupportedModelError:
    """The one error for a model p3b_hf does not handle (every entry point raises it): ``subject`` names the
    model (its class, or its ``model_type`` when only the config was read), ``reason`` why, if known."""
    why = f" ({reason})" if reason else ""
    return UnsupportedModelError(
        f"p3b_hf cannot prune a {subject}{why}: supported classes are {supported_classes_text()}. Load one of "
        "these image classifiers, e.g. AutoModelForImageClassification.from_pretrained("
        "'facebook/deit-small-patch16-224'), 'microsoft/beit-base-patch16-224', 'facebook/dinov2-small' or "
        "'microsoft/swin-tiny-patch4-window7-224'."
    )


def config_subject(config: Any) -> str:
    """How an error names the model of a config: its class (``architectures``) and ``model_type``."""
    mt = str(getattr(config, "model_type", "") or "")
    arch = getattr(config, "architectures", None) or []
    return f"{arch[0]} (model_type {mt!r})" if arch else f"model of model_type {mt!r}"


def is_supported_config(config: Any) -> bool:
    """Whether a stock or pruned config belongs to a supported family (``model_type`` only)."""
    mt = str(getattr(config, "model_type", "") or "")
    name = mt[4:] if mt.startswith("p3b_") else mt
    return name in FAMILIES or name in STAGE_FAMILIES


def family_of_config(config: Any) -> str:
    """The family of a stock or pruned config (``model_type``: vit, deit, beit, dinov2, p3b_*)."""
    mt = str(getattr(config, "model_type", "") or "")
    name = mt[4:] if mt.startswith("p3b_") else mt
    if name not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        if name in STAGE_FAMILIES:
            raise UnsupportedModelError(
                f"model_type {mt!r} is a hierarchical family: only its MLP hidden units are pruned "
                f"(--method vbp / global); this code path needs a plain ViT block ({supported})."
            )
        raise unsupported_model_error(config_subject(config))
    return name


def dense_intermediate_size(config: Any) -> int:
    """MLP width of a stock or pruned config (DINOv2 stores ``mlp_ratio`` instead of ``intermediate_size``)."""
    f = getattr(config, "intermediate_size", None)
    if f is None:
        f = int(int(config.hidden_size) * config.mlp_ratio)
    return int(f)
