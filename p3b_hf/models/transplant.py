"""Build a DINOv2- or BEiT-shaped classifier from a pretrained HF ViT, computing the same backbone function.

Why: no pretrained DINOv2/BEiT of the dev-bench's size and domain exists offline, and training one from
scratch on CPU is out of reach. The three families share the pre-LN layer, so a ViT's weights fill the
other two exactly:

* DINOv2: layer scale 1 (``layerscale_value=1``), same LayerNorm eps, same position grid; the classifier
  reads ``[CLS, mean(patches)]``, so its CLS half takes the ViT classifier and its mean half is zero -- the
  transplanted model's logits equal the ViT's.
* BEiT: layer scale 1, absolute position embeddings kept (``use_absolute_position_embeddings=True``), per-layer
  relative position bias tables at zero (no bias yet, but trainable, as in BEiT), the key bias dropped --
  exact, since ``q.(k + b)`` adds the same ``q.b`` to every key of a query and softmax ignores it. BEiT
  classifies from the LayerNorm of the mean patch token, which the ViT never trained: the pooler LayerNorm
  takes the ViT's final LayerNorm and the classifier the ViT's, so the logits differ from the ViT's while
  every layer output is the same (the head is replaced for a new task anyway).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import BeitConfig, BeitForImageClassification, Dinov2Config, Dinov2ForImageClassification

from ..errors import UnsupportedModelError


def _check(vit: nn.Module) -> Any:
    if type(vit).__name__ != "ViTForImageClassification":
        raise UnsupportedModelError(
            f"transplant needs a stock ViTForImageClassification, got {type(vit).__name__}."
        )
    return vit.config


def _common(cfg: Any) -> dict[str, Any]:
    return dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        hidden_act=cfg.hidden_act,
        layer_norm_eps=cfg.layer_norm_eps,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_channels=cfg.num_channels,
        num_labels=cfg.num_labels,
        id2label=dict(cfg.id2label),
        label2id=dict(cfg.label2id),
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
    )


def _copy_attention(dst_attn: nn.Module, src: nn.Module) -> None:
    """q/k/v/o weights and biases (a destination without a bias -- BEiT's key -- drops the source's)."""
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        d, s = getattr(dst_attn, name), getattr(src.attention, name)
        d.weight.copy_(s.weight)
        if d.bias is not None:
            d.bias.copy_(s.bias)


@torch.no_grad()
def vit_to_dinov2(vit: nn.Module) -> Dinov2ForImageClassification:
    """A ``Dinov2ForImageClassification`` whose logits equal ``vit``'s (see the module docstring)."""
    cfg = _check(vit)
    if cfg.intermediate_size % cfg.hidden_size:
        raise UnsupportedModelError(
            f"DINOv2's MLP width is an integer mlp_ratio x hidden_size; this ViT has "
            f"{cfg.intermediate_size} / {cfg.hidden_size}."
        )
    out = Dinov2ForImageClassification(
        Dinov2Config(
            **_common(cfg),
            mlp_ratio=cfg.intermediate_size // cfg.hidden_size,
            qkv_bias=cfg.qkv_bias,
            layerscale_value=1.0,
            drop_path_rate=0.0,
        )
    )
    src, dst = vit.vit, out.dinov2
    for name in ("cls_token", "position_embeddings"):
        getattr(dst.embeddings, name).copy_(getattr(src.embeddings, name))
    dst.embeddings.mask_token.zero_()
    dst.embeddings.patch_embeddings.projection.load_state_dict(
        src.embeddings.patch_embeddings.projection.state_dict()
    )
    for s, d in zip(src.layers, dst.encoder.layer):
        d.norm1.load_state_dict(s.layernorm_before.state_dict())
        d.norm2.load_state_dict(s.layernorm_after.state_dict())
        _copy_attention(d.attention, s)
        d.mlp.load_state_dict(s.mlp.state_dict())
        d.layer_scale1.lambda1.fill_(1.0)
        d.layer_scale2.lambda1.fill_(1.0)
    dst.layernorm.load_state_dict(src.layernorm.state_dict())
    c = cfg.hidden_size
    out.classifier.weight.zero_()
    out.classifier.weight[:, :c].copy_(vit.classifier.weight)
    out.classifier.bias.copy_(vit.classifier.bias)
    return out.eval()


@torch.no_grad()
def vit_to_beit(vit: nn.Module) -> BeitForImageClassification:
    """A mean-pooling ``BeitForImageClassification`` with every layer output equal to ``vit``'s."""
    cfg = _check(vit)
    out = BeitForImageClassification(
        BeitConfig(
            **_common(cfg),
            intermediate_size=cfg.intermediate_size,
            use_absolute_position_embeddings=True,
            use_relative_position_bias=True,
            use_shared_relative_position_bias=False,
            layer_scale_init_value=1.0,
            use_mean_pooling=True,
            use_mask_token=False,
            drop_path_rate=0.0,
        )
    )
    src, dst = vit.vit, out.beit
    for name in ("cls_token", "position_embeddings"):
        getattr(dst.embeddings, name).copy_(getattr(src.embeddings, name))
    dst.embeddings.patch_embeddings.projection.load_state_dict(
        src.embeddings.patch_embeddings.projection.state_dict()
    )
    for s, d in zip(src.layers, dst.layers):
        d.layernorm_before.load_state_dict(s.layernorm_before.state_dict())
        d.layernorm_after.load_state_dict(s.layernorm_after.state_dict())
        _copy_attention(d.attention, s)
        d.mlp.load_state_dict(s.mlp.state_dict())
        d.lambda_1.fill_(1.0)
        d.lambda_2.fill_(1.0)
        d.relative_position_bias.relative_position_bias_table.zero_()
    dst.pooler.layernorm.load_state_dict(src.layernorm.state_dict())
    out.classifier.load_state_dict(vit.classifier.state_dict())
    return out.eval()


# --- issue 27 families: warm starts, not function-preserving ------------------------------------------------
#
# * DINOv2 with registers: the register tokens take part in every attention, so no choice of them leaves the
#   ViT's function intact (a zero register still attends with the key of LayerNorm(0) = the norm's bias).
#   They start as copies of the CLS token (without its position embedding: registers have none); everything
#   else is the DINOv2 transplant above.
# * I-JEPA has no CLS token and classifies from the mean of the final-LayerNorm patch tokens: the patch
#   position embeddings and every layer are the ViT's, the classifier the ViT's (it now reads the mean patch).
# * CLIP vision: quick-GELU is a config switch (``hidden_act`` takes the ViT's GELU) and the patch conv's
#   missing bias folds into the patch position embeddings -- both exact; the LayerNorm CLIP applies to the
#   embeddings (``pre_layrnorm``, weight 1, bias 0) is not, and the classifier reads the mean of the
#   un-normalised patch tokens (the ViT's classifier is copied regardless).
#
# ``scripts/devbench_families.py`` measures how far each lands from the ViT (BENCHMARKS.md §7).


@torch.no_grad()
def vit_to_dinov2_with_registers(vit: nn.Module, num_register_tokens: int = 4) -> nn.Module:
    """A ``Dinov2WithRegistersForImageClassification`` warm-started from ``vit`` (registers = the CLS token)."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

    dino = vit_to_dinov2(vit)
    cfg = dino.config
    out = Dinov2WithRegistersForImageClassification(
        Dinov2WithRegistersConfig(
            **_common(vit.config),
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            layerscale_value=1.0,
            drop_path_rate=0.0,
            num_register_tokens=num_register_tokens,
        )
    )
    missing = out.load_state_dict(
        {k.replace("dinov2.", "dinov2_with_registers.", 1): v for k, v in dino.state_dict().items()},
        strict=False,
    )
    if missing.unexpected_keys or set(missing.missing_keys) != {
        "dinov2_with_registers.embeddings.register_tokens"
    }:
        raise UnsupportedModelError(
            f"DINOv2-with-registers transplant left {missing} (transformers changed?)"
        )
    out.dinov2_with_registers.embeddings.register_tokens.copy_(
        vit.vit.embeddings.cls_token.expand(-1, num_register_tokens, -1)
    )
    return out.eval()


@torch.no_grad()
def vit_to_ijepa(vit: nn.Module) -> nn.Module:
    """An ``IJepaForImageClassification`` warm-started from ``vit`` (no CLS: the patch tokens and every layer)."""
    from transformers import IJepaConfig, IJepaForImageClassification

    cfg = _check(vit)
    out = IJepaForImageClassification(
        IJepaConfig(**_common(cfg), intermediate_size=cfg.intermediate_size, qkv_bias=cfg.qkv_bias)
    )
    src, dst = vit.vit, out.ijepa
    dst.embeddings.position_embeddings.copy_(src.embeddings.position_embeddings[:, 1:])
    dst.embeddings.patch_embeddings.projection.load_state_dict(
        src.embeddings.patch_embeddings.projection.state_dict()
    )
    for s, d in zip(src.layers, dst.layers):
        d.layernorm_before.load_state_dict(s.layernorm_before.state_dict())
        d.layernorm_after.load_state_dict(s.layernorm_after.state_dict())
        _copy_attention(d.attention, s)
        d.mlp.load_state_dict(s.mlp.state_dict())
    dst.layernorm.load_state_dict(src.layernorm.state_dict())
    out.classifier.load_state_dict(vit.classifier.state_dict())
    return out.eval()


@torch.no_grad()
def vit_to_clip(vit: nn.Module) -> nn.Module:
    """A stock ``CLIPForImageClassification`` warm-started from ``vit`` (GELU MLP; ``pre_layrnorm`` is new)."""
    from transformers import CLIPConfig, CLIPForImageClassification

    cfg = _check(vit)
    common = _common(cfg)
    labels = {k: common.pop(k) for k in ("num_labels", "id2label", "label2id")}
    vision = dict(
        common,
        intermediate_size=cfg.intermediate_size,
        attention_dropout=common.pop("attention_probs_dropout_prob"),
        dropout=common.pop("hidden_dropout_prob"),
    )
    out = CLIPForImageClassification(CLIPConfig(vision_config=vision, **labels))
    src, dst = vit.vit, out.vision_model
    patch = src.embeddings.patch_embeddings.projection
    emb = dst.embeddings
    emb.patch_embedding.weight.copy_(patch.weight)
    emb.class_embedding.copy_(src.embeddings.cls_token.reshape(-1))
    pos = src.embeddings.position_embeddings[0].clone()
    pos[1:] += patch.bias  # the conv bias CLIP lacks, added to every patch token
    emb.position_embedding.weight.copy_(pos)
    dst.pre_layrnorm.weight.fill_(1.0)
    dst.pre_layrnorm.bias.zero_()
    for s, d in zip(src.layers, dst.encoder.layers):
        d.layer_norm1.load_state_dict(s.layernorm_before.state_dict())
        d.layer_norm2.load_state_dict(s.layernorm_after.state_dict())
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(d.self_attn, name).load_state_dict(getattr(s.attention, name).state_dict())
        d.self_attn.out_proj.load_state_dict(s.attention.o_proj.state_dict())
        d.mlp.load_state_dict(s.mlp.state_dict())
    dst.post_layernorm.load_state_dict(src.layernorm.state_dict())
    out.classifier.load_state_dict(vit.classifier.state_dict())
    return out.eval()
