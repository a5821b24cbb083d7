"""p3b_hf: prune HuggingFace ViT/DeiT/BEiT/DINOv2 structurally while fine-tuning (P3B), with VBP and grouped
global pruning as baselines on the same WidthPlan -> slice path (these two also prune the MLP hidden units of
Swin and ConvNeXt).

Importing the package registers every family's pruned ``model_type`` (the records in
:mod:`p3b_hf.models.families`, :func:`~p3b_hf.models.families.register_family`) with ``AutoConfig``,
``AutoModel`` (the backbone, for feature extraction) and ``AutoModelForImageClassification``, so pruned
checkpoints load without ``trust_remote_code``.
"""

__version__ = "0.1.0"

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
from .plan import LayerPlan, WidthPlan
from .slicing import apply_width_plan

# (the families' pruned classes are registered with the Auto classes by models.families.register_family)

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
