# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_convnext.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A ConvNeXt whose every block may keep its own number of MLP hidden units.

The stock transformers ``ConvNextModel`` / ``ConvNextForImageClassification`` are built unchanged and only the
``pwconv1`` / ``pwconv2`` Linears of each block (``ConvNextLayer``) are replaced by narrower ones (widths from
``config.block_intermediate_sizes``); the depthwise conv, the LayerNorm and the layer scale
``layer_scale_parameter`` (on ``pwconv2``'s output channels) are untouched. Parameter names, the forward pass
and the HF output contract (``hidden_states``, ``return_dict``, ``labels`` -> loss) are the stock ones, and a
full-width config loads a stock checkpoint's state dict unchanged.
"""

from __future__ import annotations

from torch import nn
from transformers import ConvNextForImageClassification, ConvNextModel

from .configuration_p3b_convnext import P3BConvNextConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
    _register_stock_key_mapping,
)


def _narrow_mlps(convnext: nn.Module, config: P3BConvNextConfig) -> None:
    """Give block ``b`` of stage ``s`` an MLP of ``config.block_intermediate_sizes[s][b]`` hidden units
    (same device / dtype as the stock Linears, so meta-device construction in ``from_pretrained`` holds)."""
    for stage, widths in zip(convnext.encoder.stages, config.block_intermediate_sizes):
        for block, width in zip(stage.layers, widths):
            if block.pwconv1.out_features == width:
                continue
            dim = block.pwconv1.in_features
            kw = {"device": block.pwconv1.weight.device, "dtype": block.pwconv1.weight.dtype}
            block.pwconv1 = nn.Linear(dim, width, **kw)
            block.pwconv2 = nn.Linear(width, dim, **kw)


_register_stock_key_mapping("convnext", "p3b_convnext")


class P3BConvNextModel(_P3BStrictLoading, ConvNextModel):
    """``ConvNextModel`` (``AutoModel``, feature extraction) with per-block MLP widths."""

    config_class = P3BConvNextConfig
    config: P3BConvNextConfig

    def __init__(self, config: P3BConvNextConfig) -> None:
        super().__init__(config)
        _narrow_mlps(self, config)
        self.post_init()


class P3BConvNextForImageClassification(_P3BStrictLoading, ConvNextForImageClassification):
    """``ConvNextForImageClassification`` with per-block MLP widths (stock parameter names)."""

    config_class = P3BConvNextConfig
    config: P3BConvNextConfig
    _backbone_class_name = "P3BConvNextModel"

    def __init__(self, config: P3BConvNextConfig) -> None:
        super().__init__(config)
        _narrow_mlps(self.convnext, config)
        self.post_init()


__all__ = ["P3BConvNextForImageClassification", "P3BConvNextModel"]
