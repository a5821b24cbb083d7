# Self-contained: this file is copied next to pruned checkpoints (``auto_map``) and must import only
# torch/transformers public API, so that stock transformers loads it with ``trust_remote_code=True``.
"""Configuration of a structurally pruned ViT / DeiT with per-layer widths.

A pruned model keeps the residual stream at ``hidden_size`` channels, but every sub-block may
read from a subset of them (``layer_attn_in`` / ``layer_mlp_in``), write to a subset
(``layer_attn_out`` / ``layer_mlp_out``), keep fewer head dimensions or heads, and fewer MLP
neurons. ``None`` for a subset means "all channels". A sub-block whose inner width is zero is
*removed*: only its constant output (a bias of ``len(out)`` values) survives.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

LAYERNORM_MODES = ("full_stats", "subset_stats")


def _per_layer(value: Any, default: Any, n: int, name: str) -> list:
    if value is None:
        return [default] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(
            f"P3BViTConfig.{name} has {len(value)} entries but num_hidden_layers={n}; "
            f"give one entry per layer."
        )
    return value


class P3BViTConfig(PretrainedConfig):
    r"""Per-layer-width ViT config (``model_type="p3b_vit"``).

    Args beyond the usual ``ViTConfig`` ones:
        layer_num_heads: kept attention heads per layer (0 = attention removed).
        layer_head_dims: kept head dimension per layer, shared by q/k/v and all heads (0 = removed).
        layer_intermediate_sizes: kept MLP neurons per layer (0 = MLP removed).
        layer_attn_in, layer_attn_out, layer_mlp_in, layer_mlp_out: residual channel subsets
            (sorted index lists into ``range(hidden_size)``) or ``None`` for all channels.
        layer_attention_scales: softmax scale per layer; defaults to the dense ``head_dim**-0.5``
            so that removing head dimensions is function preserving.
        layernorm_mode: how a sub-block that reads a channel subset normalises it.
            ``"full_stats"`` (default): mean/variance over the full residual stream, affine on the
            subset -- exactly equal to "LayerNorm then gather", i.e. to the masked training model.
            ``"subset_stats"``: LayerNorm over the kept subset only (the P3B reference code).
        distilled: DeiT with a distillation token (two special tokens).
        distillation_head: DeiT-distilled with ``cls_classifier`` + ``distillation_classifier``.
        base_model_name_or_path, pruning_method, prune_ratio: provenance, shown in model cards.
    """

    model_type = "p3b_vit"

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
        qkv_bias: bool = True,
        layer_num_heads: list[int] | None = None,
        layer_head_dims: list[int] | None = None,
        layer_intermediate_sizes: list[int] | None = None,
        layer_attn_in: list[list[int] | None] | None = None,
        layer_attn_out: list[list[int] | None] | None = None,
        layer_mlp_in: list[list[int] | None] | None = None,
        layer_mlp_out: list[list[int] | None] | None = None,
        layer_attention_scales: list[float] | None = None,
        layernorm_mode: str = "full_stats",
        distilled: bool = False,
        distillation_head: bool = False,
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
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
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
        self.layer_attn_in = _per_layer(layer_attn_in, None, n, "layer_attn_in")
        self.layer_attn_out = _per_layer(layer_attn_out, None, n, "layer_attn_out")
        self.layer_mlp_in = _per_layer(layer_mlp_in, None, n, "layer_mlp_in")
        self.layer_mlp_out = _per_layer(layer_mlp_out, None, n, "layer_mlp_out")
        # (a pruned embedding may be narrower than the head count: the default scale then never applies)
        default_scale = dense_head_dim**-0.5 if dense_head_dim > 0 else 1.0
        self.layer_attention_scales = [
            float(v) for v in _per_layer(layer_attention_scales, default_scale, n, "layer_attention_scales")
        ]
        if layernorm_mode not in LAYERNORM_MODES:
            raise ValueError(f"layernorm_mode={layernorm_mode!r} is not one of {LAYERNORM_MODES}.")
        self.layernorm_mode = layernorm_mode
        self.distilled = bool(distilled)
        self.distillation_head = bool(distillation_head)
        self.base_model_name_or_path = base_model_name_or_path
        self.pruning_method = pruning_method
        self.prune_ratio = prune_ratio
        self.p3b_hf_version = p3b_hf_version

    @property
    def num_special_tokens(self) -> int:
        return 2 if self.distilled else 1

    @classmethod
    def from_dense_config(cls, dense: PretrainedConfig, **overrides: Any) -> P3BViTConfig:
        """Full-width config equivalent to a stock ``ViTConfig`` / ``DeiTConfig``."""
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
            "qkv_bias",
        )
        kwargs: dict[str, Any] = {k: getattr(dense, k) for k in keys if hasattr(dense, k)}
        kwargs["id2label"] = dict(dense.id2label)
        kwargs["label2id"] = dict(dense.label2id)
        kwargs["problem_type"] = getattr(dense, "problem_type", None)
        kwargs["base_model_name_or_path"] = getattr(dense, "_name_or_path", None) or None
        kwargs.update(overrides)
        return cls(**kwargs)


class P3BDeiTConfig(P3BViTConfig):
    """Pruned DeiT (distillation token; optionally the two-headed "with teacher" classifier)."""

    model_type = "p3b_deit"

    def __init__(self, distilled: bool = True, **kwargs: Any) -> None:
        super().__init__(distilled=distilled, **kwargs)
