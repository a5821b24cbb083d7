"""ConvNeXt: stages of depthwise-conv blocks (``encoder.stages[s].layers[b]``); per block the MLP hidden units
(``pwconv1`` / ``pwconv2``, then the layer scale ``gamma``) are prunable; no attention. Its cost terms live here
(:func:`cost`)."""

from __future__ import annotations

from typing import Any

from ..configuration_p3b_convnext import P3BConvNextConfig
from ..modeling_p3b_convnext import P3BConvNextForImageClassification, P3BConvNextModel
from .record import STAGED, Family, StagePaths, as_int


def dense_widths(config: Any) -> list[list[int]]:
    """The stock MLP width of every block: ``4 * hidden_sizes[s]`` (``ConvNextLayer``'s fixed ratio)."""
    return [[4 * int(config.hidden_sizes[s])] * int(d) for s, d in enumerate(config.depths)]


def _widths(cfg: Any) -> list[list[int]]:
    """Per-block MLP widths of a stock or pruned config."""
    widths = getattr(cfg, "block_intermediate_sizes", None)
    return widths if widths is not None else dense_widths(cfg)


def stage_dims(config: Any) -> list[int]:
    return [int(c) for c in config.hidden_sizes][: len(config.depths)]


def cost(cfg: Any, image_size: int | None) -> dict[str, int]:
    """``block_params`` = the blocks (depthwise conv, norm, pwconv1/2, layer scale); ``non_block_params`` =
    stem, downsampling layers, final norm, head. MACs: stem conv, per block the 7x7 depthwise conv (``49 + 1``
    per channel and position) and the two pointwise Linears, the 2x2 stride-2 downsampling convs."""
    p, ch, k = as_int(cfg.patch_size), int(cfg.num_channels), int(cfg.num_labels)
    dims = stage_dims(cfg)
    side = (image_size or as_int(cfg.image_size)) // p
    ls = 1 if float(cfg.layer_scale_init_value) > 0 else 0
    non_block = dims[0] * ch * p * p + dims[0] + 2 * dims[0]
    macs = side * side * dims[0] * (ch * p * p + 1)
    block = 0
    widths_all = _widths(cfg)
    for s, widths in enumerate(widths_all):
        c = dims[s]
        if s > 0:  # LayerNorm(C_prev) + Conv2d(C_prev -> C, 2x2, stride 2)
            prev = dims[s - 1]
            non_block += 2 * prev + 4 * prev * c + c
            side //= 2
            macs += side * side * c * (4 * prev + 1)
        for f in widths:
            block += 49 * c + c + 2 * c + c * f + f + f * c + c + ls * c
            macs += side * side * (c * 50 + f * (c + 1) + c * (f + 1))
    non_block += 2 * dims[-1] + (dims[-1] * k + k if k > 0 else 0)
    macs += k * (dims[-1] + 1) if k > 0 else 0
    return {"params": block + non_block, "macs": macs, "block_params": block, "non_block_params": non_block}


FAMILY = Family(
    name="convnext",
    kind=STAGED,
    prefix="convnext",
    stock_classes=("ConvNextForImageClassification",),
    config_class=P3BConvNextConfig,
    model_class=P3BConvNextForImageClassification,
    backbone_class=P3BConvNextModel,
    pruned_classes=("P3BConvNextForImageClassification",),
    stage_paths=StagePaths(
        stages="encoder.stages",
        blocks="layers",
        fc1="pwconv1",
        act="act",
        fc2="pwconv2",
        layer_scale="layer_scale_parameter",
    ),
    dense_widths=dense_widths,
    stage_dims=stage_dims,
    cost=cost,
)
