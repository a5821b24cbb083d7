"""Pruned ViT/DeiT config + model classes and the module locator."""

from .configuration_p3b_vit import P3BDeiTConfig, P3BViTConfig
from .locator import LayerModules, ViTModules, locate
from .modeling_p3b_vit import (
           P3BDeiTForImageClassification,
           P3BDeiTModel,
           P3BViTForImageClassification,
           P3BViTModel,
)

__all__ = ["P3BViTConfig", "P3BDeiTConfig", "P3BViTForImageClassification", "P3BDeiTForImageClassification",
           "P3BViTModel", "P3BDeiTModel", "LayerModules", "ViTModules", "locate"]
