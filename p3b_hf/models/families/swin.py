"""Swin: stages of windowed-attention blocks (``encoder.layers[s].blocks[b]``); per block the MLP hidden units
and the window attention's heads / head dims are prunable (the relative position bias table keeps the kept
heads' columns), the residual stream is not. Its cost terms live here (:func:`cost`)."""

from __future__ import annotations

from typing import Any

from ..configuration_p3b_swin import P3BSwinConfig
from ..modeling_p3b_swin import P3BSwinForImageClassification, P3BSwinModel
from .record import STAGED, Family, StagePaths, as_int


def dense_widths(config: Any) -> list[list[int]]:
    """The stock MLP width of every block: ``int(mlp_ratio * embed_dim * 2**s)`` per stage ``s``."""
    return [
        [int(config.mlp_ratio * int(config.embed_dim * 2**s))] * int(d) for s, d in enumerate(config.depths)
    ]


def dense_heads(config: Any) -> tuple[list[list[int]], list[list[int]]]:
    """The stock heads and head dimension of every block."""
    heads = [[int(config.num_heads[s])] * int(d) for s, d in enumerate(config.depths)]
    dims = [
        [int(config.embed_dim * 2**s) // int(config.num_heads[s])] * int(d)
        for s, d in enumerate(config.depths)
    ]
    return heads, dims


def _widths(cfg: Any) -> list[list[int]]:
    """Per-block MLP widths of a stock or pruned config."""
    widths = getattr(cfg, "block_intermediate_sizes", None)
    return widths if widths is not None else dense_widths(cfg)


def stage_dims(config: Any) -> list[int]:
    return [int(config.embed_dim * 2**s) for s in range(len(config.depths))]


def cost(cfg: Any, image_size: int | None) -> dict[str, int]:
    """``block_params`` = the Transformer blocks (norms, q/k/v/o, relative position bias table, MLP);
    ``non_block_params`` = patch embedding (+ its norm, absolute positions), patch merging, final norm, head.

    MACs: patch embedding conv; per block q/k/v/o over the tokens of its (padded) windows, window attention
    ``2 * N_tokens * w^2 * heads * head_dim`` (``w`` clamped to the stage resolution as transformers does), the
    MLP over every token; patch merging ``tokens/4 * 4C * 2C`` (no bias)."""
    p, ch, k = as_int(cfg.patch_size), int(cfg.num_channels), int(cfg.num_labels)
    grid = -(-as_int(cfg.image_size) // p)
    side = -(-(image_size or as_int(cfg.image_size)) // p)
    c0, w, qkv_b = int(cfg.embed_dim), int(cfg.window_size), 1 if cfg.qkv_bias else 0
    non_block = c0 * ch * p * p + c0 + 2 * c0 + (grid * grid * c0 if cfg.use_absolute_embeddings else 0)
    macs = side * side * c0 * (ch * p * p + 1)
    block = 0
    widths = _widths(cfg)
    heads, head_dims = dense_heads(cfg)
    heads = getattr(cfg, "block_num_heads", None) or heads
    head_dims = getattr(cfg, "block_head_dims", None) or head_dims
    n_stages = len(cfg.depths)
    for s in range(n_stages):
        c = int(c0 * 2**s)
        win = min(side, w) if side <= w else w  # transformers clamps the window to a small stage resolution
        padded = (-(-side // win) * win) ** 2
        for f, h, d in zip(widths[s], heads[s], head_dims[s]):
            inner = h * d
            block += 4 * c + 3 * (c * inner + qkv_b * inner) + inner * c + c + (2 * w - 1) ** 2 * h
            block += c * f + f + f * c + c
            macs += padded * (3 * inner * (c + qkv_b) + c * (inner + 1)) + 2 * padded * win * win * inner
            macs += side * side * (f * (c + 1) + c * (f + 1))
        if s < n_stages - 1:  # patch merging: LayerNorm(4C), Linear(4C -> 2C, no bias)
            non_block += 8 * c + 8 * c * c
            side = -(-side // 2)
            macs += side * side * 8 * c * c
    c_last = int(c0 * 2 ** (n_stages - 1))
    non_block += 2 * c_last + (c_last * k + k if k > 0 else 0)
    macs += k * (c_last + 1) if k > 0 else 0
    return {"params": block + non_block, "macs": macs, "block_params": block, "non_block_params": non_block}


FAMILY = Family(
    name="swin",
    kind=STAGED,
    prefix="swin",
    stock_classes=("SwinForImageClassification",),
    config_class=P3BSwinConfig,
    model_class=P3BSwinForImageClassification,
    backbone_class=P3BSwinModel,
    pruned_classes=("P3BSwinForImageClassification",),
    stage_paths=StagePaths(
        stages="encoder.layers",
        blocks="blocks",
        fc1="mlp.fc1",
        act="mlp.activation_fn",
        fc2="mlp.fc2",
        attention="attention",
    ),
    dense_widths=dense_widths,
    stage_dims=stage_dims,
    dense_heads=dense_heads,
    cost=cost,
)
