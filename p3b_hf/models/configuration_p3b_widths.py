# Remote code: shipped next to pruned checkpoints as a relative import of every family's configuration file
# (``save_pretrained`` copies a code file's relative imports, ``from_pretrained(trust_remote_code=True)``
# fetches them), so it imports only transformers.
"""The per-layer widths the plain-ViT families' pruned configs share (ViT/DeiT, BEiT, DINOv2), written once.

A pruned model keeps the residual stream at ``hidden_size`` channels, but every sub-block may read from a subset
of them (``layer_attn_in`` / ``layer_mlp_in``), write to a subset (``layer_attn_out`` / ``layer_mlp_out``), keep
fewer head dimensions or heads, and fewer MLP neurons. ``None`` for a subset means "all channels". A sub-block
whose inner width is zero is *removed*: only its constant output (a bias of ``len(out)`` values) survives.

:class:`P3BLayerWidths` is a dataclass mixin placed before the stock config
(``class P3BViTConfig(P3BLayerWidths, ViTConfig)``): transformers 5 configs are dataclasses, so its fields join
the stock ones and its ``__post_init__`` fills and checks the per-layer lists after the stock one has run.
:class:`P3BVisionTowerWidths` adds what the flat vision-tower configs of the nested-config stock classifiers
(CLIP, SigLIP) share: reading a nested stock config, the shared attention's dropout name, validation.
:class:`P3BStagedConfig` is what the staged families' pruned configs (Swin, ConvNeXt: widths per stage and
block) share: the full-width config of a stock one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

LAYERNORM_MODES = ("full_stats", "subset_stats")
_SUBSETS = ("layer_attn_in", "layer_attn_out", "layer_mlp_in", "layer_mlp_out")
#: the stock fields a full-width pruned config copies from the dense one (those the family's config has)
_DENSE_KEYS = (
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


@dataclass(kw_only=True, repr=False)
class P3BLayerWidths:
    r"""Per-layer widths and provenance (the fields beyond the stock config's).

    Args:
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
        base_model_name_or_path, pruning_method, prune_ratio, p3b_hf_version: provenance, shown in model cards.
    """

    layer_num_heads: list[int] | None = None
    layer_head_dims: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    layer_attn_in: list[list[int] | None] | None = None
    layer_attn_out: list[list[int] | None] | None = None
    layer_mlp_in: list[list[int] | None] | None = None
    layer_mlp_out: list[list[int] | None] | None = None
    layer_attention_scales: list[float] | None = None
    layernorm_mode: str = "full_stats"
    base_model_name_or_path: str | None = None
    pruning_method: str | None = None
    prune_ratio: float | None = None
    p3b_hf_version: str | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)  # type: ignore[misc]  (the stock config's)
        self.hidden_size = int(self.hidden_size)
        self.num_hidden_layers = int(self.num_hidden_layers)
        self.num_attention_heads = int(self.num_attention_heads)
        self.intermediate_size = int(self.intermediate_size)
        dense_head_dim = self.hidden_size // max(self.num_attention_heads, 1)
        self.layer_num_heads = [int(v) for v in self._per_layer("layer_num_heads", self.num_attention_heads)]
        self.layer_head_dims = [int(v) for v in self._per_layer("layer_head_dims", dense_head_dim)]
        self.layer_intermediate_sizes = [
            int(v) for v in self._per_layer("layer_intermediate_sizes", self.intermediate_size)
        ]
        for name in _SUBSETS:
            setattr(self, name, self._per_layer(name, None))
        # (a pruned embedding may be narrower than the head count: the default scale then never applies)
        default_scale = dense_head_dim**-0.5 if dense_head_dim > 0 else 1.0
        self.layer_attention_scales = [
            float(v) for v in self._per_layer("layer_attention_scales", default_scale)
        ]
        if self.layernorm_mode not in LAYERNORM_MODES:
            raise ValueError(f"layernorm_mode={self.layernorm_mode!r} is not one of {LAYERNORM_MODES}.")

    def _per_layer(self, name: str, default: Any) -> list:
        """``getattr(self, name)`` as one entry per layer (``None``: ``default`` everywhere)."""
        value, n = getattr(self, name), self.num_hidden_layers
        if value is None:
            return [default] * n
        value = list(value)
        if len(value) != n:
            raise ValueError(
                f"{type(self).__name__}.{name} has {len(value)} entries but num_hidden_layers={n}; "
                f"give one entry per layer."
            )
        return value

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> Any:
        """Full-width config equivalent to the stock ``dense`` config (its architecture fields and labels)."""
        keys = (*_DENSE_KEYS, *getattr(cls, "_family_dense_keys", ()))
        kwargs: dict[str, Any] = {k: getattr(dense, k) for k in keys if hasattr(dense, k)}
        kwargs["id2label"] = dict(dense.id2label)
        kwargs["label2id"] = dict(dense.label2id)
        kwargs["problem_type"] = getattr(dense, "problem_type", None)
        kwargs["base_model_name_or_path"] = getattr(dense, "_name_or_path", None) or None
        kwargs.update(overrides)
        return cls(**kwargs)


def without_architecture_check(stock_config: type) -> list:
    """The stock config class's validators but ``validate_architecture``: a pruned residual stream need not be
    a multiple of the head count (heads keep their own per-layer widths)."""
    validators = getattr(stock_config, "__class_validators__", [])
    return [v for v in validators if v.__name__ != "validate_architecture"]


class P3BVisionTowerWidths(P3BLayerWidths):
    """:class:`P3BLayerWidths` for the flat vision-tower config of a stock classifier that takes a nested config
    (CLIP, SigLIP: text and vision towers, only the vision tower built), placed before the stock vision config
    (``class P3BCLIPConfig(P3BVisionTowerWidths, CLIPVisionConfig)``). The family sets ``__class_validators__
    = without_architecture_check(<stock vision config>)``."""

    def validate(self) -> None:
        """The class's ``__class_validators__`` (the stock ``validate`` reads the stock class's list, so it is
        replaced here)."""
        for validator in self.__class_validators__:  # type: ignore[attr-defined]
            validator(self)

    @property
    def attention_probs_dropout_prob(self) -> float:
        """The shared attention's name for the stock ``attention_dropout``."""
        return float(self.attention_dropout)  # type: ignore[attr-defined]

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> Any:
        """Full-width config of a stock nested config (the fields of its ``vision_config``, its labels) or of a
        stock vision config."""
        vision = getattr(dense, "vision_config", None)
        if vision is None:
            return super().from_dense_config(dense, **overrides)
        labels = {
            "id2label": dict(dense.id2label),
            "label2id": dict(dense.label2id),
            "problem_type": getattr(dense, "problem_type", None),
            "base_model_name_or_path": getattr(dense, "_name_or_path", None) or None,
        }
        return super().from_dense_config(vision, **{**labels, **overrides})


@dataclass(kw_only=True, repr=False)
class P3BStagedConfig:
    """Mixin of a staged family's pruned config (``class P3BSwinConfig(P3BStagedConfig, SwinConfig)``): the
    provenance fields, and a full-width config that copies every field of the stock one but those the pruned
    class derives or must not carry (``_stock_only_keys``, beyond the serialiser's own)."""

    base_model_name_or_path: str | None = None
    pruning_method: str | None = None
    prune_ratio: float | None = None
    p3b_hf_version: str | None = None

    #: stock fields the pruned config does not take over (derived from others, or backbone-only)
    _stock_only_keys: ClassVar[tuple[str, ...]] = ("stage_names", "out_features", "out_indices")

    @classmethod
    def from_dense_config(cls, dense: Any, **overrides: Any) -> Any:
        """Full-width config equivalent to the stock config ``dense`` (labels and all architecture fields kept)."""
        kwargs = dense.to_dict()
        for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
            kwargs.pop(key, None)
        for key in cls._stock_only_keys:
            kwargs.pop(key, None)
        kwargs.setdefault("base_model_name_or_path", getattr(dense, "_name_or_path", None) or None)
        kwargs.update(overrides)
        return cls(**kwargs)
