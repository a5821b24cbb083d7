# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API, so that stock transformers loads it with ``trust_remote_code=True``.
"""Configuration of a structurally pruned DINOv2 with per-layer widths (``model_type="p3b_dinov2"``).

Same width semantics as ``P3BViTConfig``: the residual stream keeps ``hidden_size`` channels, every
sub-block may read a subset (``layer_attn_in`` / ``layer_mlp_in``), write a subset (``layer_attn_out`` /
``layer_mlp_out``), keep fewer heads, head dimensions and MLP neurons (0 = removed: only its constant
output survives). DINOv2 adds layer scale (``layer_scale1/2.lambda1``, sliced with the written subsets), a
mask token, position embeddings for ``image_size`` that are interpolated to any input resolution, and a
classifier that reads ``[CLS, mean(patch tokens)]`` (``2 * hidden_size`` inputs). The MLP width is stored
as ``intermediate_size`` (stock: ``hidden_size * mlp_ratio``); the SwiGLU MLP (``use_swiglu_ffn``, the giant
model) is not supported.
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
            f"P3BDinov2Config.{name} has {len(value)} entries but num_hidden_layers={n}; "
            f"give one entry per layer."
        )
    return value


class P3BDinov2Config(PretrainedConfig):
    r"""Per-layer-width DINOv2 config.

    Args beyond the usual ``Dinov2Config`` ones (which keep their meaning and defaults):
        layer_num_heads, layer_head_dims, layer_intermediate_sizes: kept widths per layer (0 = removed).
        layer_attn_in, layer_attn_out, layer_mlp_in, layer_mlp_out: residual channel subsets or ``None``.
        layer_attention_scales: softmax scale per layer (default: the dense ``head_dim**-0.5``).
        layernorm_mode: ``"full_stats"`` (LayerNorm statistics over the full stream, exact) or ``"subset_stats"``.
        base_model_name_or_path, pruning_method, prune_ratio: provenance.
    """

    model_type = "p3b_dinov2"

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
        layer_norm_eps: float = 1e-6,
        image_size: int = 224,
        patch_size: int = 14,
        num_channels: int = 3,
        qkv_bias: bool = True,
        layerscale_value: float = 1.0,
        drop_path_rate: float = 0.0,
        use_swiglu_ffn: bool = False,
        use_mask_token: bool = True,
        mlp_ratio: float | None = None,
        layer_num_heads: list[int] | None = None,
        layer_head_dims: list[int] | None = None,
        layer_intermediate_sizes: list[int] | None = None,
        layer_attn_in: list[list[int] | None] | None = None,
        layer_attn_out: list[list[int] | None] | None = None,
        layer_mlp_in: list[list[int] | None] | None = None,
        layer_mlp_out: list[list[int] | None] | None = None,
        layer_attention_scales: list[float] | None = None,
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
        self.qkv_bias = bool(qkv_bias)
        self.layerscale_value = float(layerscale_value)
        self.drop_path_rate = float(drop_path_rate)
        if use_swiglu_ffn:
            raise ValueError(
                "P3BDinov2Config does not support use_swiglu_ffn=True (the SwiGLU MLP of DINOv2-giant); "
                "p3b_hf prunes the GELU-MLP DINOv2 models (small, base, large)."
            )
        self.use_swiglu_ffn = False
        self.use_mask_token = bool(use_mask_token)
        # informational (the MLP width is intermediate_size); kept so the config reads like a Dinov2Config
        self.mlp_ratio = (
            mlp_ratio if mlp_ratio is not None else self.intermediate_size / max(self.hidden_size, 1)
        )
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
    def from_dense_config(cls, dense: PretrainedConfig, **overrides: Any) -> P3BDinov2Config:
        """Full-width config equivalent to a stock ``Dinov2Config`` (MLP width ``int(hidden_size * mlp_ratio)``)."""
        keys = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "hidden_act",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "initializer_range",
            "layer_norm_eps",
            "image_size",
            "patch_size",
            "num_channels",
            "qkv_bias",
            "layerscale_value",
            "drop_path_rate",
            "use_swiglu_ffn",
            "use_mask_token",
            "mlp_ratio",
        )
        kwargs: dict[str, Any] = {k: getattr(dense, k) for k in keys if hasattr(dense, k)}
        kwargs["intermediate_size"] = getattr(dense, "intermediate_size", None) or int(
            dense.hidden_size * dense.mlp_ratio
        )
        kwargs["id2label"] = dict(dense.id2label)
        kwargs["label2id"] = dict(dense.label2id)
        kwargs["problem_type"] = getattr(dense, "problem_type", None)
        kwargs["base_model_name_or_path"] = getattr(dense, "_name_or_path", None) or None
        kwargs.update(overrides)
        return cls(**kwargs)
