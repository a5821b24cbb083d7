"""Pruned ViT/DeiT/BEiT/DINOv2 config + model classes, the per-family description and the module locator."""

from .configuration_p3b_beit import P3BBeitConfig
from .configuration_p3b_dinov2 import P3BDinov2Config
from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig
from .families import FAMILIES, P3B_CONFIGS, Family
from .locator import LayerModules, ViTModules, locate
from .modeling_p3b_beit import P3BBeitForImageClassification, P3BBeitModel
from .modeling_p3b_dinov2 import P3BDinov2ForImageClassification, P3BDinov2Model
from .modeling_p3b_vit import (
    P3BDeiTForImageClassification,
    P3BDeiTModel,
    P3BViTForImageClassification,
    P3BViTModel,
)

__all__ = ["P3BViTConfig", "P3BDeiTConfig", "P3BBeitConfig", "P3BDinov2Config", "P3BViTForImageClassification",
           "P3BDeiTForImageClassification", "P3BBeitForImageClassification", "P3BDinov2ForImageClassification",
           "P3BViTModel", "P3BDeiTModel", "P3BBeitModel", "P3BDinov2Model", "FAMILIES", "P3B_CONFIGS", "Family",
           "LayerModules", "ViTModules", "locate"]
