"""Find the prunable modules of a HF ViT / DeiT without graph tracing.

The architectures are fixed, so a locator is simpler and sturdier than dependency tracing: it
returns, per layer, the pre-attention LayerNorm, q/k/v, the attention output projection, the
post-attention LayerNorm, fc1 and fc2, plus embeddings, final norm and classifier head(s).
It understands the transformers 5.x module names (``vit.layers[i].attention.q_proj`` ...) and
p3b_hf's own full-width ``P3BViT*`` models (legacy names).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import UnsupportedModelError

SUPPORTED = ("ViTForImageClassification", "DeiTForImageClassification",
             "DeiTForImageClassificationWithTeacher", "P3BViTForImageClassification",
             "P3BDeiTForImageClassification")


@dataclass
class LayerModules:
    """The eight prunable pieces of one encoder layer (the layer module itself is ``block``)."""

    block: nn.Module
    ln_before: nn.LayerNorm
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    ln_after: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    act: nn.Module


@dataclass
class ViTModules:
    """Uniform view of a ViT/DeiT classifier. ``heads`` maps legacy head names to Linears."""

    family: str  # "vit" or "deit" (= base_model_prefix of the legacy checkpoint)
    model: nn.Module
    cls_token: nn.Parameter
    dist_token: nn.Parameter | None
    position_embeddings: nn.Parameter
    patch_projection: nn.Conv2d
    layers: list[LayerModules]
    final_norm: nn.LayerNorm
    heads: dict[str, nn.Linear] = field(default_factory=dict)
    hidden_size: int = 0
    num_heads: int = 0
    head_dim: int = 0
    intermediate_size: int = 0
    image_size: int = 0
    patch_size: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_special_tokens(self) -> int:
        return 2 if self.dist_token is not None else 1

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _unsupported(model: nn.Module) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"p3b_hf cannot prune a {type(model).__name__}: supported classes are {', '.join(SUPPORTED)}. "
        "Load a ViT/DeiT image classifier, e.g. AutoModelForImageClassification.from_pretrained("
        "'facebook/deit-small-patch16-224')."
    )


def _as_int(v: int | tuple | list) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def locate(model: nn.Module) -> ViTModules:
    """Return the :class:`ViTModules` of ``model`` or raise :class:`UnsupportedModelError`."""
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    name = type(model).__name__
    if name not in SUPPORTED and not any(c.__name__ in SUPPORTED for c in type(model).__mro__):
        raise _unsupported(model)
    cfg = model.config
    if name.startswith("P3B"):
        return _locate_p3b(model)
    family = "deit" if name.startswith("DeiT") else "vit"
    base = getattr(model, family)
    emb = base.embeddings
    layers = []
    for blk in base.layers:
        att = blk.attention
        layers.append(LayerModules(blk, blk.layernorm_before, att.q_proj, att.k_proj, att.v_proj, att.o_proj,
                                   blk.layernorm_after, blk.mlp.fc1, blk.mlp.fc2, blk.mlp.activation_fn))
    heads = _heads(model)
    return ViTModules(
        family=family, model=model, cls_token=emb.cls_token,
        dist_token=getattr(emb, "distillation_token", None),
        position_embeddings=emb.position_embeddings, patch_projection=emb.patch_embeddings.projection,
        layers=layers, final_norm=base.layernorm, heads=heads,
        hidden_size=cfg.hidden_size, num_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
        image_size=_as_int(cfg.image_size), patch_size=_as_int(cfg.patch_size),
    )


def _heads(model: nn.Module) -> dict[str, nn.Linear]:
    """Classifier head(s) by legacy name (two for distilled DeiT with teacher)."""
    names = ("cls_classifier", "distillation_classifier") if hasattr(model, "cls_classifier") else ("classifier",)
    return {n: getattr(model, n) for n in names if isinstance(getattr(model, n), nn.Linear)}


def is_full_width(config) -> bool:
    """True if a P3B config has every width of its dense original (and no channel subsets)."""
    d = config.hidden_size // config.num_attention_heads
    return (all(h == config.num_attention_heads for h in config.layer_num_heads)
            and all(x == d for x in config.layer_head_dims)
            and all(x == config.intermediate_size for x in config.layer_intermediate_sizes)
            and all(s is None for key in ("layer_attn_in", "layer_attn_out", "layer_mlp_in", "layer_mlp_out")
                    for s in getattr(config, key)))


def _locate_p3b(model: nn.Module) -> ViTModules:
    cfg = model.config
    if not is_full_width(cfg):
        raise UnsupportedModelError(
            "This P3BViT model is already pruned; WidthPlans index the *dense* tensors. Prune the dense "
            "original instead (config.base_model_name_or_path="
            f"{getattr(cfg, 'base_model_name_or_path', None)!r}).")
    family = model.base_model_prefix
    base = getattr(model, family)
    emb = base.embeddings
    layers = []
    for blk in base.encoder.layer:
        sa = blk.attention.attention
        layers.append(LayerModules(blk, blk.layernorm_before, sa.query, sa.key, sa.value, blk.attention.output.dense,
                                   blk.layernorm_after, blk.intermediate.dense, blk.output.dense,
                                   blk.intermediate.intermediate_act_fn))
    heads = _heads(model)
    return ViTModules(
        family=family, model=model, cls_token=emb.cls_token, dist_token=getattr(emb, "distillation_token", None),
        position_embeddings=emb.position_embeddings, patch_projection=emb.patch_embeddings.projection,
        layers=layers, final_norm=base.layernorm, heads=heads, hidden_size=cfg.hidden_size,
        num_heads=cfg.num_attention_heads, head_dim=cfg.hidden_size // cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size, image_size=_as_int(cfg.image_size),
        patch_size=_as_int(cfg.patch_size),
    )
