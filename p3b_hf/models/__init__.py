"""Pruned ViT/DeiT/BEiT/DINOv2/Swin/ConvNeXt/I-JEPA/CLIP/SigLIP config + model classes, the family records (``families/``: one
record per family, one registry) and the module locator."""

from .configuration_p3b_beit import P3BBeitConfig
from .configuration_p3b_clip import P3BCLIPConfig
from .configuration_p3b_convnext import P3BConvNextConfig
from .configuration_p3b_dinov2 import P3BDinov2Config
from .configuration_p3b_dinov2_with_registers import P3BDinov2WithRegistersConfig
from .configuration_p3b_ijepa import P3BIJepaConfig
from .configuration_p3b_siglip import P3BSiglipConfig
from .configuration_p3b_swin import P3BSwinConfig
from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig
from .families import FAMILIES, P3B_CONFIGS, STAGE_FAMILIES, Family, StageFamily, family_of, register_family
from .locator import LayerModules, MLPView, ViTModules, locate, locate_mlps
from .modeling_p3b_beit import P3BBeitForImageClassification, P3BBeitModel
from .modeling_p3b_clip import P3BCLIPForImageClassification, P3BCLIPModel
from .modeling_p3b_convnext import P3BConvNextForImageClassification, P3BConvNextModel
from .modeling_p3b_dinov2 import P3BDinov2ForImageClassification, P3BDinov2Model
from .modeling_p3b_dinov2_with_registers import (
    P3BDinov2WithRegistersForImageClassification,
    P3BDinov2WithRegistersModel,
)
from .modeling_p3b_ijepa import P3BIJepaForImageClassification, P3BIJepaModel
from .modeling_p3b_siglip import P3BSiglipForImageClassification, P3BSiglipModel
from .modeling_p3b_swin import P3BSwinForImageClassification, P3BSwinModel
from .modeling_p3b_vit import (
    P3BDeiTForImageClassification,
    P3BDeiTModel,
    P3BViTForImageClassification,
    P3BViTModel,
)

__all__ = [
    "P3BViTConfig",
    "P3BDeiTConfig",
    "P3BBeitConfig",
    "P3BDinov2Config",
    "P3BViTForImageClassification",
    "P3BDeiTForImageClassification",
    "P3BBeitForImageClassification",
    "P3BDinov2ForImageClassification",
    "P3BViTModel",
    "P3BDeiTModel",
    "P3BBeitModel",
    "P3BDinov2Model",
    "FAMILIES",
    "P3B_CONFIGS",
    "Family",
    "family_of",
    "register_family",
    "LayerModules",
    "ViTModules",
    "locate",
    "P3BSwinConfig",
    "P3BSwinForImageClassification",
    "P3BSwinModel",
    "P3BConvNextConfig",
    "P3BConvNextForImageClassification",
    "P3BConvNextModel",
    "STAGE_FAMILIES",
    "StageFamily",
    "MLPView",
    "locate_mlps",
    "P3BCLIPConfig",
    "P3BCLIPForImageClassification",
    "P3BCLIPModel",
    "P3BDinov2WithRegistersConfig",
    "P3BDinov2WithRegistersForImageClassification",
    "P3BDinov2WithRegistersModel",
    "P3BIJepaConfig",
    "P3BIJepaForImageClassification",
    "P3BIJepaModel",
    "P3BSiglipConfig",
    "P3BSiglipForImageClassification",
    "P3BSiglipModel",
]
