"""Every supported backbone family as one :class:`Family` record (``vit.py`` ... ``convnext.py``) in ONE registry.

===========  ======  =====================  ==============  ==============================  ==========
family       kind    layer scale            rel. pos. bias  classifier reads                k bias
===========  ======  =====================  ==============  ==============================  ==========
ViT          plain   --                     --              CLS                             ``qkv_bias``
DeiT         plain   --                     --              CLS (+ distillation token)      ``qkv_bias``
BEiT         plain   ``lambda_1/2``         per layer and/  LN(mean of patches) or CLS      none
                                            or shared
DINOv2       plain   ``layer_scale1/2``     --              [CLS, mean of patches] (2C)     ``qkv_bias``
DINOv2+reg   plain   ``layer_scale1/2``     --              [CLS, mean of patches] (2C,     ``qkv_bias``
                                                            registers left out)
CLIP         plain   --                     --              mean of patches (no norm)       yes
SigLIP       plain   --                     --              mean of LN(patches), no CLS     yes
Swin         staged  --                     per block       LN(mean of tokens)              ``qkv_bias``
ConvNeXt     staged  ``gamma``              --              LN(mean of positions)           --
I-JEPA       plain   --                     --              mean of LN(patches), no CLS     ``qkv_bias``
===========  ======  =====================  ==============  ==============================  ==========

Plain families prune every piece of a pre-LN block (heads, head dims, MLP, residual subsets, the embedding);
staged ones the MLP hidden units of each block (and Swin's heads / head dims). Generic code asks
:func:`family_of` (a model or a config) and reads the record; adding a family is a config, a modeling file, a
record and one :func:`register_family` call (docs/architecture.md, "Add a model family").
"""

from __future__ import annotations

from . import beit, clip, convnext, deit, dinov2, dinov2_with_registers, ijepa, siglip, swin, vit
from .record import (
    PLAIN,
    PRUNED_VIT_LAYOUT,
    STAGED,
    STOCK_VIT_LAYOUT,
    Family,
    GatedMLP,
    LayerPaths,
    RelativePositionBias,
    StagePaths,
    as_int,
    get_path,
)
from .registry import (
    REGISTRY,
    config_subject,
    dense_intermediate_size,
    families,
    family_by_name,
    family_of,
    family_of_config,
    flat_config,
    is_pruned_config,
    is_supported_config,
    needs_conversion,
    prunable,
    pruned_configs,
    pruned_model_types,
    refusal_reason,
    register_family,
    require_family,
    stage_family_of_config,
    staged_family_of,
    supported_classes_text,
    unregister_family,
    unsupported_model_error,
)

# THE registry of the built-in families (order: the order errors and tables list them in)
for _module in (vit, deit, beit, dinov2, swin, convnext, dinov2_with_registers):
    register_family(_module.FAMILY)
register_family(ijepa.FAMILY)
del _module
register_family(clip.FAMILY)
register_family(siglip.FAMILY)

#: read-only views of the registry by kind (compatibility: the names of the two former registries)
FAMILIES: dict[str, Family] = {f.name: f for f in families(PLAIN)}
STAGE_FAMILIES: dict[str, Family] = {f.name: f for f in families(STAGED)}
#: the pruned config classes of the built-in families (plain / staged)
P3B_CONFIGS: tuple[type, ...] = tuple(f.config_class for f in families(PLAIN))
STAGE_CONFIGS: tuple[type, ...] = tuple(f.config_class for f in families(STAGED))
StageFamily = Family  # the former name of a staged family's record
#: the family the demo builds its source model of unless told otherwise (``p3b-hf demo --family``)
DEFAULT_DEMO_FAMILY: str = vit.FAMILY.name

__all__ = [
    "PLAIN",
    "STAGED",
    "PRUNED_VIT_LAYOUT",
    "STOCK_VIT_LAYOUT",
    "Family",
    "GatedMLP",
    "LayerPaths",
    "RelativePositionBias",
    "StagePaths",
    "REGISTRY",
    "FAMILIES",
    "STAGE_FAMILIES",
    "P3B_CONFIGS",
    "STAGE_CONFIGS",
    "StageFamily",
    "DEFAULT_DEMO_FAMILY",
    "as_int",
    "get_path",
    "config_subject",
    "dense_intermediate_size",
    "families",
    "family_by_name",
    "flat_config",
    "family_of",
    "family_of_config",
    "is_pruned_config",
    "is_supported_config",
    "needs_conversion",
    "pruned_configs",
    "pruned_model_types",
    "prunable",
    "refusal_reason",
    "register_family",
    "require_family",
    "stage_family_of_config",
    "staged_family_of",
    "supported_classes_text",
    "unregister_family",
    "unsupported_model_error",
]
