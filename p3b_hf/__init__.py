"""p3b_hf: prune HuggingFace ViT/DeiT/BEiT/DINOv2 structurally while fine-tuning (P3B), with VBP and grouped
global pruning as baselines on the same WidthPlan -> slice path (these two also prune the MLP hidden units of
Swin and ConvNeXt).

Importing the package registers ``p3b_vit`` / ``p3b_deit`` / ``p3b_beit`` / ``p3b_dinov2`` / ``p3b_swin`` /
``p3b_convnext`` with ``AutoConfig``, ``AutoModel`` (the
backbone, for feature extraction) and ``AutoModelForImageClassification``, so pruned checkpoints load
without ``trust_remote_code``.
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .cost import count_cost
from .errors import (
    BudgetError,
    CheckpointError,
    DataError,
    OptionsError,
    P3BError,
    PlanError,
    UnsupportedModelError,
)
from .models import (
    FAMILIES,
    STAGE_FAMILIES,
    P3BBeitConfig,
    P3BBeitForImageClassification,
    P3BBeitModel,
    P3BConvNextConfig,
    P3BConvNextForImageClassification,
    P3BConvNextModel,
    P3BDeiTConfig,
    P3BDeiTForImageClassification,
    P3BDeiTModel,
    P3BDinov2Config,
    P3BDinov2ForImageClassification,
    P3BDinov2Model,
    P3BSwinConfig,
    P3BSwinForImageClassification,
    P3BSwinModel,
    P3BViTConfig,
    P3BViTForImageClassification,
    P3BViTModel,
    locate,
)
from .plan import LayerPlan, WidthPlan, apply_width_plan

# model_type -> config, classifier, backbone; save_pretrained / push_to_hub then write the two code files
# and ``auto_map`` (AutoConfig, AutoModelForImageClassification, AutoModel) for stock transformers
for _fam in (*FAMILIES.values(), *STAGE_FAMILIES.values()):
    AutoConfig.register(_fam.config_class.model_type, _fam.config_class, exist_ok=True)
    AutoModelForImageClassification.register(_fam.config_class, _fam.model_class, exist_ok=True)
    AutoModel.register(_fam.config_class, _fam.backbone_class, exist_ok=True)
    _fam.config_class.register_for_auto_class()
    _fam.model_class.register_for_auto_class("AutoModelForImageClassification")
    _fam.backbone_class.register_for_auto_class("AutoModel")
del _fam

__all__ = [
    "__version__",
    "WidthPlan",
    "LayerPlan",
    "apply_width_plan",
    "count_cost",
    "locate",
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
    "P3BSwinConfig",
    "P3BSwinForImageClassification",
    "P3BSwinModel",
    "P3BConvNextConfig",
    "P3BConvNextForImageClassification",
    "P3BConvNextModel",
    "P3BError",
    "PlanError",
    "UnsupportedModelError",
    "BudgetError",
    "DataError",
    "CheckpointError",
    "OptionsError",
]
