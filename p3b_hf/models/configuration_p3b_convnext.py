# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API, so that stock transformers loads it with ``trust_remote_code=True``.
"""Configuration of a ConvNeXt whose MLPs are structurally pruned (``model_type="p3b_convnext"``).

Everything but the MLP hidden widths keeps the stock ``ConvNextConfig`` meaning. ``block_intermediate_sizes
[s][b]`` is the number of hidden units kept in block ``b`` of stage ``s`` (``pwconv1`` outputs / ``pwconv2``
inputs); ``None`` means the dense ``4 * hidden_sizes[s]``, so a config built from a stock one loads the stock
checkpoint's state dict unchanged. The depthwise convolution, the LayerNorm and the layer scale (which
multiplies ``pwconv2``'s output channels) keep their full width.
"""

from __future__ import annotations

from typing import Any

from transformers import ConvNextConfig

from .configuration_p3b_widths import P3BStagedConfig


def dense_convnext_mlp_widths(config: Any) -> list[list[int]]:
    """The stock MLP width of every block: ``4 * hidden_sizes[s]`` (``ConvNextLayer``'s fixed ratio)."""
    return [[4 * int(config.hidden_sizes[s])] * int(d) for s, d in enumerate(config.depths)]


class P3BConvNextConfig(P3BStagedConfig, ConvNextConfig):
    r"""``ConvNextConfig`` + per-block MLP widths and provenance.

    Args beyond the stock ``ConvNextConfig`` ones:
        block_intermediate_sizes: kept MLP hidden units per stage and block (``None``: the dense widths).
        base_model_name_or_path, pruning_method, prune_ratio, p3b_hf_version: provenance.
    """

    model_type = "p3b_convnext"
    _stock_only_keys = ("stage_names", "out_features", "out_indices")

    block_intermediate_sizes: list[list[int]] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        dense = dense_convnext_mlp_widths(self)
        if self.block_intermediate_sizes is None:
            self.block_intermediate_sizes = dense
        widths = [[int(f) for f in stage] for stage in self.block_intermediate_sizes]
        if [len(s) for s in widths] != [len(s) for s in dense]:
            raise ValueError(
                f"P3BConvNextConfig.block_intermediate_sizes has {[len(s) for s in widths]} blocks "
                f"per stage but depths={list(self.depths)}; give one width per block of every stage."
            )
        if any(f < 1 for stage in widths for f in stage):
            raise ValueError(
                "P3BConvNextConfig.block_intermediate_sizes holds a width < 1; every block keeps at "
                "least one MLP hidden unit (prune with keep >= 1 per block)."
            )
        self.block_intermediate_sizes = widths
