"""p3b_hf: prune HuggingFace ViT/DeiT structurally while fine-tuning (P3B), with VBP and grouped
global pruning as baselines on the same WidthPlan -> slice path.

Importing the package registers ``p3b_vit`` / ``p3b_deit`` with ``AutoConfig``, ``AutoModel`` (the
backbone, for feature extraction) and ``AutoModelForImageClassification``, so pruned checkpoints load
without ``trust_remote_code``.
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .cost import count_cost
from .errors import BudgetError, CheckpointError, DataError, P3BError, PlanError, UnsupportedModelError
from .models import (
    P3BDeiTConfig,
    P3BDeiTForImageClassification,
    P3BDeiTModel,
    P3BViTConfig,
    P3BViTForImageClassification,
    P3BViTModel,
    locate,
)
from .plan import LayerPlan, WidthPlan, apply_width_plan

AutoConfig.register("p3b_vit", P3BViTConfig, exist_ok=True)
AutoConfig.register("p3b_deit", P3BDeiTConfig, exist_ok=True)
AutoModelForImageClassification.register(P3BViTConfig, P3BViTForImageClassification, exist_ok=True)
AutoModelForImageClassification.register(P3BDeiTConfig, P3BDeiTForImageClassification, exist_ok=True)
AutoModel.register(P3BViTConfig, P3BViTModel, exist_ok=True)
AutoModel.register(P3BDeiTConfig, P3BDeiTModel, exist_ok=True)
# save_pretrained / push_to_hub then write the two code files and ``auto_map`` for stock transformers
P3BViTConfig.register_for_auto_class()
P3BDeiTConfig.register_for_auto_class()
P3BViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
P3BDeiTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
P3BViTModel.register_for_auto_class("AutoModel")
P3BDeiTModel.register_for_auto_class("AutoModel")

__all__ = [
    "__version__", "WidthPlan", "LayerPlan", "apply_width_plan", "count_cost", "locate",
    "P3BViTConfig", "P3BDeiTConfig", "P3BViTForImageClassification", "P3BDeiTForImageClassification",
    "P3BViTModel", "P3BDeiTModel", "P3BError", "PlanError", "UnsupportedModelError", "BudgetError", "DataError", "CheckpointError",
]
