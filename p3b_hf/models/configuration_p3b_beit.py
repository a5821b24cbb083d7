# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API, so that stock transformers loads it with ``trust_remote_code=True``.
"""Configuration of a structurally pruned BEiT with per-layer widths (``model_type="p3b_beit"``).

Same width semantics as ``P3BViTConfig``: the residual stream keeps ``hidden_size`` channels, every
sub-block may read a subset (``layer_attn_in`` / ``layer_mlp_in``), write a subset (``layer_attn_out`` /
``layer_mlp_out``), keep fewer heads, head dimensions and MLP neurons (0 = removed: only its constant
output survives). BEiT adds layer scale (``lambda_1`` / ``lambda_2``, sliced with the written subsets),
relative position bias tables (one column per kept head; per layer and/or shared by all layers), an
optional absolute position embedding and mask token, a bias-free key projection, and classification from
the mean of the patch tokens + a pooler LayerNorm (``use_mean_pooling``) or from the CLS token.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

LAYERNORM_MODES = ("full_stats", "subset_stats")
_SUBSETS = ("layer_attn_in", "layer_attn_out", "layer_mlp_in", "layer_mlp_out")


def _per_layer(value: Any, default: Any, n: int, name: str) -> list:
    if value is None:
        return [default] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(
            f"P3BBeitConfig.{name} has {len(value)} entries but num_hidden_layers={n}; "
            f"give one entry per layer."
        )
    return value


class P3BBeitConfig(PretrainedConfig):
    r"""Per-layer-width BEiT config.

    Args beyond the usual ``BeitConfig`` ones (which keep their meaning and defaults):
        layer_num_heads, layer_head_dims, layer_intermediate_sizes: kept widths per layer (0 = removed).
        layer_attn_in, layer_attn_out, layer_mlp_in, layer_mlp_out: residual channel subsets or ``None``.
        layer_attention_scales: softmax scale per layer (default: the dense ``head_dim**-0.5``).
        layer_bias_heads: per layer, the columns of the *shared* relative position bias table its kept
            heads use (``None`` = all columns in order); only with ``use_shared_relative_position_bias``.
        layernorm_mode: ``"full_stats"`` (LayerNorm statistics over the full stream, exact) or ``"subset_stats"``.
        base_model_name_or_path, pruning_method, prune_ratio: provenance.
    """

    model_type = "p3b_beit"

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        use_mask_token: bool = False,
        use_absolute_position_embeddings: bool = False,
        use_relative_position_bias: bool = False,
        use_shared_relative_position_bias: bool = False,
        layer_scale_init_value: float = 0.1,
        drop_path_rate: float = 0.1,
        use_mean_pooling: bool = True,
        layer_num_heads: list[int] | None = None,
        layer_head_dims: list[int] | None = None,
        layer_intermediate_sizes: list[int] | None = None,
        layer_attn_in: list[list[int] | None] | None = None,
        layer_attn_out: list[list[int] | None] | None = None,
        layer_mlp_in: list[list[int] | None] | None = None,
        layer_mlp_out: list[list[int] | None] | None = None,
        layer_attention_scales: list[float] | None = None,
        layer_bias_heads: list[list[int] | None] | None = None,
        shared_bias_num_heads: int | None = None,
        layernorm_mode: str = "full_stats",
        base_model_name_or_path: str | None = None,
        pruning_method: str | None = None,
        prune_ratio: float | None = None,
        p3b_hf_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
        self.patch_size = int(patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size)
        self.num_channels = num_channels
        self.use_mask_token = bool(use_mask_token)
        self.use_absolute_position_embeddings = bool(use_absolute_position_embeddings)
        self.use_relative_position_bias = bool(use_relative_position_bias)
        self.use_shared_relative_position_bias = bool(use_shared_relative_position_bias)
        self.layer_scale_init_value = float(layer_scale_init_value)
        self.drop_path_rate = float(drop_path_rate)
        self.use_mean_pooling = bool(use_mean_pooling)
        n = self.num_hidden_layers
        dense_head_dim = self.hidden_size // max(self.num_attention_heads, 1)
        self.layer_num_heads = [
            int(v) for v in _per_layer(layer_num_heads, self.num_attention_heads, n, "layer_num_heads")
        ]
        self.layer_head_dims = [
            int(v) for v in _per_layer(layer_head_dims, dense_head_dim, n, "layer_head_dims")
        ]
        self.layer_intermediate_sizes = [
            int(v)
            for v in _per_layer(
                layer_intermediate_sizes, self.intermediate_size, n, "layer_intermediate_sizes"
            )
        ]
        for name, value in zip(_SUBSETS, (layer_attn_in, layer_attn_out, layer_mlp_in, layer_mlp_out)):
            setattr(self, name, _per_layer(value, None, n, name))
        default_scale = dense_head_dim**-0.5 if dense_head_dim > 0 else 1.0
        self.layer_attention_scales = [
            float(v) for v in _per_layer(layer_attention_scales, default_scale, n, "layer_attention_scales")
        ]
        self.layer_bias_heads = _per_layer(layer_bias_heads, None, n, "layer_bias_heads")
        # columns of the (sliced) shared relative position bias table; None = num_attention_heads
        self.shared_bias_num_heads = None if shared_bias_num_heads is None else int(shared_bias_num_heads)
        if layernorm_mode not in LAYERNORM_MODES:
            raise ValueError(f"layernorm_mode={layernorm_mode!r} is not one of {LAYERNORM_MODES}.")
        self.layernorm_mode = layernorm_mode
        self.base_model_name_or_path = base_model_name_or_path
        self.pruning_method = pruning_method
        self.prune_ratio = prune_ratio
        self.p3b_hf_version = p3b_hf_version

    @property
    def num_special_tokens(self) -> int:
        return 1

    @classmethod
    def from_dense_config(cls, dense: PretrainedConfig, **overrides: Any) -> P3BBeitConfig:
        """Full-width config equivalent to a stock ``BeitConfig``."""
        keys = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "initializer_range",
            "layer_norm_eps",
            "image_size",
            "patch_size",
            "num_channels",
            "use_mask_token",
            "use_absolute_position_embeddings",
            "use_relative_position_bias",
            "use_shared_relative_position_bias",
            "layer_scale_init_value",
            "drop_path_rate",
            "use_mean_pooling",
        )
        kwargs: dict[str, Any] = {k: getattr(dense, k) for k in keys if hasattr(dense, k)}
        kwargs["id2label"] = dict(dense.id2label)
        kwargs["label2id"] = dict(dense.label2id)
        kwargs["problem_type"] = getattr(dense, "problem_type", None)
        kwargs["base_model_name_or_path"] = getattr(dense, "_name_or_path", None) or None
        kwargs.update(overrides)
        return cls(**kwargs)
