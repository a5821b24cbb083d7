"""DINOv2: layer scale (``layer_scale1/2``), ``mlp_ratio`` instead of ``intermediate_size``, a classifier that
reads ``[CLS, mean of patches]`` (2C inputs), and a 518 px pretraining grid while its processor feeds 224 px
(position embeddings are interpolated), so the processor decides the input resolution. The SwiGLU MLP of
DINOv2-giant is refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_dinov2 import P3BDinov2Config
from ..modeling_p3b_dinov2 import P3BDinov2ForImageClassification, P3BDinov2Model
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family


def _refuse(config: Any) -> str | None:
    if getattr(config, "use_swiglu_ffn", False):
        return (
            "config.use_swiglu_ffn=True: the SwiGLU MLP of DINOv2-giant is not supported; "
            "use facebook/dinov2-small, -base or -large"
        )
    return None


def demo_model(common: dict[str, Any], mlp_dim: int) -> Any:
    """A random DINOv2 classifier (an integer MLP ratio)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    if mlp_dim % common["hidden_size"]:
        raise ValueError(
            f"DINOv2 needs an integer MLP ratio; mlp_dim {mlp_dim} / hidden {common['hidden_size']}."
        )
    return Dinov2ForImageClassification(Dinov2Config(mlp_ratio=mlp_dim // common["hidden_size"], **common))


_NAMES = dict(
    ln_before="norm1",
    ln_after="norm2",
    fc1="mlp.fc1",
    act="mlp.activation_fn",
    fc2="mlp.fc2",
    ls1="layer_scale1.lambda1",
    ls2="layer_scale2.lambda1",
)

FAMILY = Family(
    name="dinov2",
    kind=PLAIN,
    prefix="dinov2",
    stock_classes=("Dinov2ForImageClassification",),
    config_class=P3BDinov2Config,
    model_class=P3BDinov2ForImageClassification,
    backbone_class=P3BDinov2Model,
    pruned_classes=("P3BDinov2ForImageClassification",),
    stock_layout=replace(STOCK_VIT_LAYOUT, blocks="encoder.layer", **_NAMES),
    pruned_layout=replace(PRUNED_VIT_LAYOUT, **_NAMES),
    pooling=lambda _config: "cls+mean",
    layer_scale=lambda _config: True,
    refuse=_refuse,
    feeds_config_image_size=False,
    demo_model=demo_model,
)
