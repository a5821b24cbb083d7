"""DeiT: ViT's blocks with a distillation token (two special tokens) and, for the distilled checkpoints, a
second classifier (``cls_classifier`` + ``distillation_classifier``), which the pruned config records."""

from __future__ import annotations

from typing import Any

from ..configuration_p3b_vit import P3BDeiTConfig
from ..modeling_p3b_vit import P3BDeiTForImageClassification, P3BDeiTModel
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family


def _two_tokens(_config: Any) -> int:
    return 2


FAMILY = Family(
    name="deit",
    kind=PLAIN,
    prefix="deit",
    stock_classes=("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
    config_class=P3BDeiTConfig,
    model_class=P3BDeiTForImageClassification,
    backbone_class=P3BDeiTModel,
    pruned_classes=("P3BDeiTForImageClassification",),
    stock_layout=STOCK_VIT_LAYOUT,
    pruned_layout=PRUNED_VIT_LAYOUT,
    special_tokens=_two_tokens,
    teacher_head=True,
    fast_path=True,
    paddable=True,
)
