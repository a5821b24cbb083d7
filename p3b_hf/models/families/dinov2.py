"""DINOv2: layer scale (``layer_scale1/2``), ``mlp_ratio`` instead of ``intermediate_size``, a classifier that
reads ``[CLS, mean of patches]`` (2C inputs), and a 518 px pretraining grid while its processor feeds 224 px
(position embeddings are interpolated), so the processor decides the input resolution. The SwiGLU MLP of
DINOv2-giant (``use_swiglu_ffn=True``: ``down(silu(gate(x)) * up(x))``) is a :class:`~.record.GatedMLP`: one
hidden unit is a (gate row, up row, down column) triple, pruned together by every method."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..configuration_p3b_dinov2 import P3BDinov2Config
from ..modeling_p3b_dinov2 import P3BDinov2ForImageClassification, P3BDinov2Model
from .record import PLAIN, PRUNED_VIT_LAYOUT, STOCK_VIT_LAYOUT, Family, GatedMLP


def swiglu_width(config: Any) -> int:
    """The stock SwiGLU hidden size: two thirds of ``hidden_size * mlp_ratio``, rounded up to a multiple of 8."""
    return (int(int(config.hidden_size * config.mlp_ratio) * 2 / 3) + 7) // 8 * 8


#: DINOv2's SwiGLU MLP (stock and pruned format use the transformers 5.x module names)
_SWIGLU_NAMES = dict(fc1="mlp.gate_proj", up="mlp.up_proj", act="mlp.act_fn", fc2="mlp.down_proj")
SWIGLU = GatedMLP(
    applies=lambda config: bool(getattr(config, "use_swiglu_ffn", False)),
    stock=_SWIGLU_NAMES,
    pruned=_SWIGLU_NAMES,
    width=swiglu_width,
)


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
    gated_mlp=SWIGLU,
    feeds_config_image_size=False,
    demo_model=demo_model,
)
