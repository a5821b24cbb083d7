# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API (plus the sibling configuration file), so that stock transformers
# loads it with ``trust_remote_code=True`` on a machine without p3b_hf.
"""A ConvNeXt whose every block may keep its own number of MLP hidden units.

The stock transformers ``ConvNextModel`` / ``ConvNextForImageClassification`` are built unchanged and only the
``pwconv1`` / ``pwconv2`` Linears of each block (``ConvNextLayer``) are replaced by narrower ones (widths from
``config.block_intermediate_sizes``); the depthwise conv, the LayerNorm and the layer scale
``layer_scale_parameter`` (on ``pwconv2``'s output channels) are untouched. Parameter names, the forward pass
and the HF output contract (``hidden_states``, ``return_dict``, ``labels`` -> loss) are the stock ones, and a
full-width config loads a stock checkpoint's state dict unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import ConvNextForImageClassification, ConvNextModel

from .configuration_p3b_convnext import P3BConvNextConfig


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


def _register_stock_key_mapping() -> None:
    """Read (and write) the stock Hub checkpoint layout: transformers 5 renames legacy ConvNeXt checkpoint keys
    (e.g. ``attention.self.query`` -> ``attention.q_proj``) for ``model_type="convnext"`` only; give
    ``"p3b_convnext"`` the same mapping, so a Hub checkpoint loads into a full-width config unchanged."""
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )
    except ImportError:  # transformers without key conversion: names are the module names
        return
    stock = get_checkpoint_conversion_mapping("convnext")
    if stock and get_checkpoint_conversion_mapping("p3b_convnext") is None:
        register_checkpoint_conversion_mapping("p3b_convnext", stock)


_register_stock_key_mapping()


class P3BConvNextModel(ConvNextModel):
    """``ConvNextModel`` (``AutoModel``, feature extraction) with per-block MLP widths."""

    config_class = P3BConvNextConfig
    config: P3BConvNextConfig

    def __init__(self, config: P3BConvNextConfig) -> None:
        super().__init__(config)
        _narrow_mlps(self, config)
        self.post_init()


class P3BConvNextForImageClassification(ConvNextForImageClassification):
    """``ConvNextForImageClassification`` with per-block MLP widths (stock parameter names)."""

    config_class = P3BConvNextConfig
    config: P3BConvNextConfig
    _backbone_class_name = "P3BConvNextModel"

    def __init__(self, config: P3BConvNextConfig) -> None:
        super().__init__(config)
        _narrow_mlps(self.convnext, config)
        self.post_init()

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Also name the backbone class in ``auto_map`` when the code files are saved (``AutoModel``)."""
        if type(self)._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault(
                "AutoModel", f"{type(self).__module__.split('.')[-1]}.{self._backbone_class_name}"
            )
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


__all__ = ["P3BConvNextForImageClassification", "P3BConvNextModel"]
