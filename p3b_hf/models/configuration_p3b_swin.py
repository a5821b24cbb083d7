# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API, so that stock transformers loads it with ``trust_remote_code=True``.
"""Configuration of a Swin Transformer whose MLPs are structurally pruned (``model_type="p3b_swin"``).

Everything but the MLP hidden widths keeps the stock ``SwinConfig`` meaning (stages, depths, heads,
windows). ``block_intermediate_sizes[s][b]`` is the number of hidden units kept in block ``b`` of stage
``s`` (``mlp.fc1`` outputs / ``mlp.fc2`` inputs); ``None`` means the dense ``int(mlp_ratio * dim_s)``,
so a config built from a stock one with no widths loads the stock checkpoint's state dict unchanged.
``block_num_heads[s][b]`` / ``block_head_dims[s][b]`` are the kept attention heads and head dimensions of each
block (``None``: the stock ``num_heads[s]`` and ``dim_s // num_heads[s]``): q/k/v keep ``heads * head_dim`` rows,
the relative position bias table one column per kept head. The softmax scale stays the dense
``head_dim**-0.5``, so removing head dimensions equals zero-masking them.
"""

from __future__ import annotations

from typing import Any

from transformers import SwinConfig

from .configuration_p3b_widths import P3BStagedConfig


def dense_swin_mlp_widths(config: Any) -> list[list[int]]:
    """The stock MLP width of every block: ``int(mlp_ratio * embed_dim * 2**s)`` per stage ``s``."""
    return [
        [int(config.mlp_ratio * int(config.embed_dim * 2**s))] * int(d) for s, d in enumerate(config.depths)
    ]


def dense_swin_heads(config: Any) -> tuple[list[list[int]], list[list[int]]]:
    """The stock heads and head dimension of every block."""
    heads = [[int(config.num_heads[s])] * int(d) for s, d in enumerate(config.depths)]
    dims = [
        [int(config.embed_dim * 2**s) // int(config.num_heads[s])] * int(d)
        for s, d in enumerate(config.depths)
    ]
    return heads, dims


def _per_block(value: Any, dense: list[list[int]], name: str) -> list[list[int]]:
    widths = [[int(f) for f in stage] for stage in (dense if value is None else value)]
    if [len(s) for s in widths] != [len(s) for s in dense]:
        raise ValueError(
            f"P3BSwinConfig.{name} has {[len(s) for s in widths]} blocks per stage but the depths "
            f"need {[len(s) for s in dense]}; give one value per block of every stage."
        )
    if any(f < 1 for stage in widths for f in stage):
        raise ValueError(
            f"P3BSwinConfig.{name} holds a value < 1; every block keeps at least one (MLP hidden "
            "unit, head, head dimension)."
        )
    return widths


class P3BSwinConfig(P3BStagedConfig, SwinConfig):
    r"""``SwinConfig`` + per-block MLP widths and provenance.

    Args beyond the stock ``SwinConfig`` ones:
        block_intermediate_sizes: kept MLP hidden units per stage and block (``None``: the dense widths).
        block_num_heads, block_head_dims: kept attention heads / head dimensions per stage and block.
        base_model_name_or_path, pruning_method, prune_ratio, p3b_hf_version: provenance.
    """

    model_type = "p3b_swin"
    _stock_only_keys = ("stage_names", "out_features", "out_indices", "hidden_size", "num_layers")

    block_intermediate_sizes: list[list[int]] | None = None
    block_num_heads: list[list[int]] | None = None
    block_head_dims: list[list[int]] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.block_intermediate_sizes = _per_block(
            self.block_intermediate_sizes, dense_swin_mlp_widths(self), "block_intermediate_sizes"
        )
        heads, dims = dense_swin_heads(self)
        self.block_num_heads = _per_block(self.block_num_heads, heads, "block_num_heads")
        self.block_head_dims = _per_block(self.block_head_dims, dims, "block_head_dims")
