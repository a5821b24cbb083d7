# Remote code: copied next to pruned checkpoints (``auto_map``) together with its relative imports
# (configuration_p3b_swin.py, modeling_p3b_checkpoint.py): ``save_pretrained`` copies them,
# ``from_pretrained(trust_remote_code=True)`` fetches them. It imports only torch / transformers and those.
"""A Swin Transformer whose every block may keep its own number of MLP hidden units.

The stock transformers 5.x ``SwinModel`` / ``SwinForImageClassification`` are built unchanged and only the
``mlp.fc1`` / ``mlp.fc2`` Linears of each block are replaced by narrower ones (widths from
``config.block_intermediate_sizes``), and, where ``config.block_num_heads`` / ``block_head_dims`` keep fewer
heads or head dimensions, q/k/v/o and the relative position bias table (one column per kept head); the
softmax scale stays the dense one. Parameter names, the forward pass and the HF output contract
(``hidden_states``, ``reshaped_hidden_states``, ``attentions``, ``return_dict``, ``labels`` -> loss) are
therefore the stock ones, and a full-width config loads a stock checkpoint's state dict unchanged.
Requires the transformers 5.x Swin module layout (``blocks[i].mlp.fc1``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SwinForImageClassification, SwinModel

from .configuration_p3b_swin import P3BSwinConfig
from .modeling_p3b_checkpoint import (
    P3BCheckpointMismatchError,  # noqa: F401 (re-exported)
    _P3BStrictLoading,
    _register_stock_key_mapping,
)


def _narrow_attention(attn: nn.Module, heads: int, head_dim: int) -> None:
    """Keep ``heads`` heads of ``head_dim`` dimensions: q/k/v ``C -> heads*head_dim``, o back to ``C``, one bias
    table column per head. ``attn.scaling`` (set from the dense head size) is left as it is."""
    if attn.num_attention_heads == heads and attn.head_dim == head_dim:
        return
    dim, inner = attn.q_proj.in_features, heads * head_dim
    kw = {"device": attn.q_proj.weight.device, "dtype": attn.q_proj.weight.dtype}
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, nn.Linear(dim, inner, bias=getattr(attn, name).bias is not None, **kw))
    attn.o_proj = nn.Linear(inner, dim, **kw)
    table = attn.relative_position_bias.relative_position_bias_table
    attn.relative_position_bias.relative_position_bias_table = nn.Parameter(
        torch.zeros(table.shape[0], heads, device=table.device, dtype=table.dtype)
    )
    attn.num_attention_heads, attn.head_dim = heads, head_dim


def _narrow_blocks(swin: nn.Module, config: P3BSwinConfig) -> None:
    """Give block ``b`` of stage ``s`` an MLP of ``config.block_intermediate_sizes[s][b]`` hidden units and
    ``block_num_heads[s][b]`` heads of ``block_head_dims[s][b]`` dimensions (same device / dtype as the stock
    modules, so meta-device construction in ``from_pretrained`` holds)."""
    for s, stage in enumerate(swin.encoder.layers):
        for b, block in enumerate(stage.blocks):
            _narrow_attention(block.attention, config.block_num_heads[s][b], config.block_head_dims[s][b])
            width = config.block_intermediate_sizes[s][b]
            mlp = block.mlp
            if mlp.fc1.out_features == width:
                continue
            dim, kw = mlp.fc1.in_features, {"device": mlp.fc1.weight.device, "dtype": mlp.fc1.weight.dtype}
            mlp.fc1 = nn.Linear(dim, width, **kw)
            mlp.fc2 = nn.Linear(width, dim, **kw)


_register_stock_key_mapping("swin", "p3b_swin")


class P3BSwinModel(_P3BStrictLoading, SwinModel):
    """``SwinModel`` (``AutoModel``, feature extraction) with per-block MLP widths."""

    config_class = P3BSwinConfig
    config: P3BSwinConfig

    def __init__(
        self, config: P3BSwinConfig, add_pooling_layer: bool = True, use_mask_token: bool = False
    ) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer, use_mask_token=use_mask_token)
        _narrow_blocks(self, config)
        self.post_init()


class P3BSwinForImageClassification(_P3BStrictLoading, SwinForImageClassification):
    """``SwinForImageClassification`` with per-block MLP widths (stock parameter names)."""

    config_class = P3BSwinConfig
    config: P3BSwinConfig
    _backbone_class_name = "P3BSwinModel"

    def __init__(self, config: P3BSwinConfig) -> None:
        super().__init__(config)
        _narrow_blocks(self.swin, config)
        self.post_init()


__all__ = ["P3BSwinForImageClassification", "P3BSwinModel"]
