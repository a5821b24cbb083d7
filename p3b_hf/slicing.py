"""The slicer: :func:`apply_width_plan`, the only code in p3b_hf that slices weights, and
:func:`pruned_config`, THE way from a :class:`~p3b_hf.plan.WidthPlan` to a pruned config (the slicer builds its
model from it).

It reads everything family-specific from the family's record (:mod:`p3b_hf.models.families`): where the pieces
live and the pruned format's state-dict keys (``pruned_layout``), the backbone prefix, the pruned classes, and
the slicing extras -- layer scale (``ls1`` / ``ls2``) is sliced with the written subset it multiplies
(``attn_out`` / ``mlp_out``); relative position bias tables (``Family.rel_bias``) keep the columns of the kept
heads (a shared table keeps the union over layers, each layer indexing its columns); a teacher head
(``Family.teacher_head``) is recorded in the config; a removed sub-block's constant includes its layer scale; a gated MLP (``LayerPaths.up``) keeps the up rows of
the kept hidden units with the gate (``fc1``) rows, and a removed one that reads nothing folds
``act(gate.b) * up.b`` through its down columns.
With ``plan.embed`` the cls / distillation / register / mask tokens, position embeddings, patch projection, every
LayerNorm, the layer scales, the pooling norm and the classifier inputs (every copy of the stream a head reads,
e.g. DINOv2's ``[CLS, mean]``) are sliced with the residual stream.

Staged families (Swin, ConvNeXt) keep their stock module names: the pruned model is the stock model with
narrower fc1 / fc2 (and, with window attention, q/k/v/o and bias-table columns of the kept heads / dims).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import PlanError
from .models.families import Family, family_of, is_pruned_config, prunable, require_family
from .models.locator import ViTModules, locate, locate_mlps, mlp_hidden_of_bias
from .plan import SUBSETS, WidthPlan


def _idx(sub: list[int] | None, full: int) -> torch.Tensor:
    return torch.arange(full) if sub is None else torch.tensor(sub, dtype=torch.long)


def _remap(sub: list[int] | None, embed: list[int] | None) -> list[int] | None:
    """Express a residual subset as positions inside the kept embedding channels."""
    if embed is None:
        return sub
    pos = {c: p for p, c in enumerate(embed)}
    if sub is None:
        return None
    return [pos[c] for c in sub]


@torch.no_grad()
def apply_width_plan(
    model: nn.Module,
    plan: WidthPlan,
    *,
    rescale_attention: bool = False,
    layernorm_mode: str = "full_stats",
    provenance: dict[str, Any] | None = None,
) -> nn.Module:
    """Return a physically smaller pruned model of ``model``'s family (the record's ``model_class``:
    ``P3BViTForImageClassification`` ... ``P3BConvNextForImageClassification``).

    ``model`` is a dense stock classifier of a registered family (``ViTForImageClassification``,
    ``DeiTForImageClassification[WithTeacher]``, ``BeitForImageClassification``, ``Dinov2ForImageClassification``,
    ``SwinForImageClassification``, ``ConvNextForImageClassification``) or a full-width pruned-format model; it
    is not modified. By default the attention softmax scale stays at the dense ``head_dim**-0.5`` (function
    preserving: removing head dims equals zero-masking them); ``rescale_attention=True`` uses
    ``kept_head_dim**-0.5`` as Isomorphic Pruning does (plain families). ``layernorm_mode`` is recorded in the
    config (plain families).
    """
    model = prunable(getattr(model, "module", model))
    fam = family_of(model)
    if fam is None:
        locate(model)  # the one UnsupportedModelError
    if plan is None or not isinstance(plan, WidthPlan):
        raise PlanError(
            f"apply_width_plan needs a WidthPlan, got {type(plan).__name__}; build one with "
            "WidthPlan.full(model.config)."
        )
    if fam.staged:
        sd, config, ref = _slice_staged(model, plan)
        dense_buffers = dict(model.named_buffers())
    else:
        sd, config, ref = _slice_plain(model, fam, plan, rescale_attention, layernorm_mode)
        dense_buffers = None
    _set_provenance(config, plan, provenance)
    return _build(fam, config, sd, ref, model.training, dense_buffers)


def _build(
    fam: Family,
    config: Any,
    sd: dict[str, torch.Tensor],
    ref: torch.Tensor,
    training: bool,
    dense_buffers: dict[str, torch.Tensor] | None,
) -> nn.Module:
    """The family's pruned model of ``config`` holding ``sd`` (floats cast to ``ref``'s dtype, on its device).
    ``dense_buffers``: non-persistent buffers (not in a state dict, e.g. Swin's relative_position_index) to
    copy from the dense model under the same names (the staged families keep the stock names)."""
    with torch.device("meta"):
        pruned = fam.model_class(config)
    mismatch = set(pruned.state_dict()) ^ set(sd)
    if mismatch:  # an internal invariant: the slicer and the model class must agree on every key
        raise RuntimeError(f"apply_width_plan produced mismatching keys: {sorted(mismatch)[:8]}")
    pruned.load_state_dict(
        {
            k: v.detach().clone().contiguous().to(ref.dtype if v.is_floating_point() else v.dtype)
            for k, v in sd.items()
        },
        strict=True,
        assign=True,
    )
    if dense_buffers is not None:
        for name, _buf in list(pruned.named_buffers()):
            if name in sd:
                continue
            owner, _, attr = name.rpartition(".")
            pruned.get_submodule(owner).register_buffer(attr, dense_buffers[name].clone(), persistent=False)
    pruned.train(training)
    return pruned.to(ref.device)


def _slice_plain(
    model: nn.Module, fam: Family, plan: WidthPlan, rescale_attention: bool, layernorm_mode: str
) -> tuple[dict[str, torch.Tensor], Any, torch.Tensor]:
    """A plain family's pruned state dict (the record's ``pruned_layout`` names), config and reference
    tensor (dtype / device)."""
    mods = locate(model)
    plan.validate()
    plan.check_matches(mods)
    keys = fam.layout(model.config, pruned=True)
    c, hd = mods.hidden_size, mods.head_dim
    e_idx = _idx(plan.embed, c)
    sd: dict[str, torch.Tensor] = {}
    prefix = fam.prefix
    kept_heads: list[list[int]] = []  # per layer, the heads its attention still uses (a shared bias table)

    if mods.cls_token is not None:
        sd[f"{prefix}.embeddings.cls_token"] = mods.cls_token[..., e_idx]
    if mods.dist_token is not None:
        sd[f"{prefix}.embeddings.distillation_token"] = mods.dist_token[..., e_idx]
    if mods.register_tokens is not None:
        sd[f"{prefix}.embeddings.register_tokens"] = mods.register_tokens[..., e_idx]
    if mods.mask_token is not None:
        sd[f"{prefix}.embeddings.mask_token"] = mods.mask_token[..., e_idx]
    if mods.position_embeddings is not None:
        sd[f"{prefix}.embeddings.position_embeddings"] = mods.position_embeddings[..., e_idx]
    sd[f"{prefix}.embeddings.patch_embeddings.projection.weight"] = mods.patch_projection.weight[e_idx]
    if mods.patch_projection.bias is not None:
        sd[f"{prefix}.embeddings.patch_embeddings.projection.bias"] = mods.patch_projection.bias[e_idx]
    norms = (
        (keys.final_norm, mods.final_norm),
        (keys.pool_norm, mods.pool_norm),
        (keys.embed_norm, mods.embed_norm),
        (keys.pooler_norm, mods.pooler_norm),
    )
    for key, norm in norms:
        if norm is not None:
            sd[f"{prefix}.{key}.weight"] = norm.weight[e_idx]
            sd[f"{prefix}.{key}.bias"] = norm.bias[e_idx]
    # a head reads `classifier_copies` concatenated copies of the stream (DINOv2: [CLS, mean of patches])
    head_cols = torch.cat([e_idx + j * c for j in range(mods.classifier_copies)])
    for name, head in mods.heads.items():
        sd[f"{name}.weight"] = head.weight[:, head_cols]
        sd[f"{name}.bias"] = head.bias

    for i, (lm, lp) in enumerate(zip(mods.layers, plan.layers)):
        pre = f"{prefix}.{keys.blocks}.{i}"
        # ---- attention
        heads = _idx(lp.heads, mods.num_heads)
        dims = _idx(lp.head_dims, hd)
        inner = (heads[:, None] * hd + dims[None, :]).reshape(-1)
        a_in = _idx(lp.attn_in, c) if lp.attn_in is not None else e_idx
        a_out = _idx(lp.attn_out, c) if lp.attn_out is not None else e_idx
        o_bias = lm.o.bias + (
            torch.tensor(lp.attn_bias_delta, dtype=lm.o.bias.dtype, device=lm.o.bias.device)
            if lp.attn_bias_delta is not None
            else 0
        )
        if len(inner) == 0 or len(a_in) == 0 or len(a_out) == 0:
            # Removed: its output is constant. With an empty input every token has the same value row
            # (the value bias), so whatever the attention weights (uniform, or BEiT's relative position
            # bias) the constant is o(v_bias); with no inner width, o's bias. Layer scale multiplies it.
            const = o_bias.double()
            if len(inner) and len(a_in) == 0 and lm.v.bias is not None:
                const = const + lm.o.weight.double()[:, inner] @ lm.v.bias.double()[inner]
            if lm.ls1 is not None:
                const = const * lm.ls1.double()
            if len(a_out):
                sd[f"{pre}.{keys.o}.bias"] = const[a_out].to(o_bias.dtype)
            kept_heads.append([])
        else:
            sd[f"{pre}.{keys.ln_before}.weight"] = lm.ln_before.weight[a_in]
            sd[f"{pre}.{keys.ln_before}.bias"] = lm.ln_before.bias[a_in]
            for key, lin in ((keys.q, lm.q), (keys.k, lm.k), (keys.v, lm.v)):
                sd[f"{pre}.{key}.weight"] = lin.weight[inner][:, a_in]
                if lin.bias is not None:
                    sd[f"{pre}.{key}.bias"] = lin.bias[inner]
            sd[f"{pre}.{keys.o}.weight"] = lm.o.weight[a_out][:, inner]
            sd[f"{pre}.{keys.o}.bias"] = o_bias[a_out]
            if lm.ls1 is not None:
                sd[f"{pre}.{keys.ls1}"] = lm.ls1[a_out]
            if lm.rel_bias is not None:
                sd[f"{pre}.{keys.rel_bias}"] = lm.rel_bias[:, heads]
            kept_heads.append(heads.tolist())
        # ---- MLP
        hid = _idx(lp.mlp, mods.intermediate_size)
        m_in = _idx(lp.mlp_in, c) if lp.mlp_in is not None else e_idx
        m_out = _idx(lp.mlp_out, c) if lp.mlp_out is not None else e_idx
        b2 = lm.fc2.bias + (
            torch.tensor(lp.mlp_bias_delta, dtype=lm.fc2.bias.dtype, device=lm.fc2.bias.device)
            if lp.mlp_bias_delta is not None
            else 0
        )
        if len(hid) == 0 or len(m_in) == 0 or len(m_out) == 0:
            const = b2.double()
            if len(hid) and len(m_in) == 0:
                const = const + lm.fc2.weight.double()[:, hid] @ mlp_hidden_of_bias(
                    lm.fc1, lm.act, lm.up, hid
                )
            if lm.ls2 is not None:
                const = const * lm.ls2.double()
            if len(m_out):
                sd[f"{pre}.{keys.fc2}.bias"] = const[m_out].to(b2.dtype)
        else:
            sd[f"{pre}.{keys.ln_after}.weight"] = lm.ln_after.weight[m_in]
            sd[f"{pre}.{keys.ln_after}.bias"] = lm.ln_after.bias[m_in]
            sd[f"{pre}.{keys.fc1}.weight"] = lm.fc1.weight[hid][:, m_in]
            sd[f"{pre}.{keys.fc1}.bias"] = lm.fc1.bias[hid]
            if lm.up is not None:  # a gated MLP: the up rows go with the gate rows (one hidden unit)
                sd[f"{pre}.{keys.up}.weight"] = lm.up.weight[hid][:, m_in]
                sd[f"{pre}.{keys.up}.bias"] = lm.up.bias[hid]
            sd[f"{pre}.{keys.fc2}.weight"] = lm.fc2.weight[m_out][:, hid]
            sd[f"{pre}.{keys.fc2}.bias"] = b2[m_out]
            if lm.ls2 is not None:
                sd[f"{pre}.{keys.ls2}"] = lm.ls2[m_out]

    _slice_shared_bias(mods, keys.shared_rel_bias, kept_heads, sd, prefix)
    # the widths come from THE plan -> config function (cost estimates and random plans use it too)
    config = pruned_config(
        model.config,
        plan,
        distillation_head="cls_classifier" in mods.heads if fam.teacher_head else None,
        rescale_attention=rescale_attention,
        layernorm_mode=layernorm_mode,
    )
    return sd, config, mods.patch_projection.weight


def _set_provenance(config: Any, plan: WidthPlan, provenance: dict[str, Any] | None) -> None:
    """Write the provenance fields (method, ratio, base model, p3b_hf version) into a pruned ``config``: all
    that :func:`apply_width_plan`'s config adds to :func:`pruned_config`'s."""
    for key, value in _provenance_fields(plan, provenance).items():
        setattr(config, key, value)


def _provenance_fields(plan: WidthPlan, provenance: dict[str, Any] | None) -> dict[str, Any]:
    meta = {**plan.meta, **(provenance or {})}
    out: dict[str, Any] = {
        k: meta[k] for k in ("prune_ratio", "base_model_name_or_path") if meta.get(k) is not None
    }
    if "method" in meta:
        out["pruning_method"] = meta["method"]
    from . import __version__

    out["p3b_hf_version"] = __version__
    return out


def _per_stage(values: list[int], depths: list[int]) -> list[list[int]]:
    out, start = [], 0
    for d in depths:
        out.append(values[start : start + d])
        start += d
    return out


def _slice_staged(model: nn.Module, plan: WidthPlan) -> tuple[dict[str, torch.Tensor], Any, torch.Tensor]:
    """A staged family: slice every block's fc1 rows / fc2 columns to ``plan.layers[i].mlp`` and add
    ``mlp_bias_delta`` to fc2's bias (before the layer scale, which multiplies bias and all); with a window
    attention, q/k/v rows, o columns and bias-table columns of the kept heads / dims; everything else is
    copied. The pruned model is the family's stock model with narrower Linears (stock parameter names)."""
    view = locate_mlps(model)
    plan.validate()
    plan.check_matches_mlps(view)
    names = {id(m): n for n, m in model.named_modules()}
    params = {id(p): n for n, p in model.named_parameters()}
    sd = dict(model.state_dict())
    for blk, lp in zip(view.blocks, plan.layers):
        if blk.attn is not None:  # q/k/v rows, o columns of the kept (head, dim) pairs; bias table columns
            a = blk.attn
            heads, dims = _idx(lp.heads, a.num_attention_heads), _idx(lp.head_dims, a.head_dim)
            inner = (heads[:, None] * a.head_dim + dims[None, :]).reshape(-1).to(a.q_proj.weight.device)
            for lin in (a.q_proj, a.k_proj, a.v_proj):
                sd[f"{names[id(lin)]}.weight"] = lin.weight[inner]
                if lin.bias is not None:
                    sd[f"{names[id(lin)]}.bias"] = lin.bias[inner]
            sd[f"{names[id(a.o_proj)]}.weight"] = a.o_proj.weight[:, inner]
            if a.rel_bias is not None:
                sd[params[id(a.rel_bias)]] = a.rel_bias[:, heads.to(a.rel_bias.device)]
        hid = _idx(lp.mlp, blk.width).to(blk.fc1.weight.device)
        b2 = blk.fc2.bias
        if lp.mlp_bias_delta is not None:
            b2 = b2 + torch.tensor(lp.mlp_bias_delta, dtype=torch.float64, device=b2.device).to(b2.dtype)
        fc1, fc2 = names[id(blk.fc1)], names[id(blk.fc2)]
        sd[f"{fc1}.weight"], sd[f"{fc1}.bias"] = blk.fc1.weight[hid], blk.fc1.bias[hid]
        if blk.up is not None:  # a gated MLP: up rows with the gate rows
            up = names[id(blk.up)]
            sd[f"{up}.weight"], sd[f"{up}.bias"] = blk.up.weight[hid], blk.up.bias[hid]
        sd[f"{fc2}.weight"], sd[f"{fc2}.bias"] = blk.fc2.weight[:, hid], b2
    config = pruned_config(model.config, plan)  # the widths: THE plan -> config function
    return sd, config, blk.fc1.weight


def _slice_shared_bias(
    mods: ViTModules, key: str | None, kept_heads: list[list[int]], sd: dict[str, torch.Tensor], prefix: str
) -> None:
    """A shared relative position bias table (BEiT's): keep the columns of every head some layer still uses (the
    union; :func:`_shared_bias_fields` records which of them each layer reads), under the pruned ``key``."""
    union = sorted({h for heads in kept_heads for h in heads})
    if key is not None and mods.shared_rel_bias is not None and union:
        sd[f"{prefix}.{key}"] = mods.shared_rel_bias[:, union]


def _shared_bias_fields(kept_heads: list[list[int]], num_heads: int) -> dict[str, Any]:
    """Config fields (BEiT's) of a shared relative position bias table sliced to the union of the heads the layers
    still use (``kept_heads``, ``[]`` for a removed attention): per layer which columns it reads
    (``layer_bias_heads``), the table's width, and no table at all when no layer attends."""
    union = sorted({h for heads in kept_heads for h in heads})
    if not union:  # no layer attends any more: the table is dead
        return {
            "use_shared_relative_position_bias": False,
            "layer_bias_heads": None,
            "shared_bias_num_heads": None,
        }
    pos = {h: j for j, h in enumerate(union)}
    return {
        "layer_bias_heads": [
            None if heads == union or not heads else [pos[h] for h in heads] for heads in kept_heads
        ],
        "shared_bias_num_heads": None if len(union) == num_heads else len(union),
    }


def pruned_config(
    dense_config: Any,
    plan: WidthPlan,
    *,
    distillation_head: bool | None = None,
    rescale_attention: bool = False,
    layernorm_mode: str = "full_stats",
) -> Any:
    """The config ``apply_width_plan(model, plan)`` produces, widths and all (no weights touched), of the dense
    config's family (``P3BViTConfig``, ``P3BDeiTConfig``, ``P3BBeitConfig``, ``P3BDinov2Config``,
    ``P3BSwinConfig``, ``P3BConvNextConfig``): THE way from a plan to a pruned config -- ``apply_width_plan``
    builds its model from it (adding only the provenance fields), cost estimates
    (:func:`p3b_hf.cost.plan_cost`) and random plans read it.

    ``distillation_head``: two-headed DeiT (default: read from ``dense_config.architectures``).
    ``rescale_attention`` / ``layernorm_mode``: as :func:`apply_width_plan`'s.

    A sub-block that keeps no inner width, reads nothing or writes nothing is removed (0 heads / head dims
    / neurons, an empty read subset); residual subsets are recorded as positions inside the kept embedding
    channels (the pruned model's stream).
    """
    fam = require_family(dense_config)
    if fam.staged:  # per-block MLP widths (with window attention: heads / head dims)
        depths = [int(d) for d in dense_config.depths]
        kept = [plan.kept(i) for i in range(plan.num_layers)]
        extra = (
            {}
            if fam.dense_heads is None
            else {
                "block_num_heads": _per_stage([k["heads"] for k in kept], depths),
                "block_head_dims": _per_stage([k["head_dim"] for k in kept], depths),
            }
        )
        return fam.config_class.from_dense_config(
            dense_config, block_intermediate_sizes=_per_stage([k["mlp"] for k in kept], depths), **extra
        )
    cls = fam.config_class
    if is_pruned_config(dense_config):
        base = dense_config
    else:
        extra: dict[str, Any] = {}
        if fam.teacher_head:
            if distillation_head is None:
                distillation_head = any(
                    "WithTeacher" in a for a in (getattr(dense_config, "architectures", None) or [])
                )
            extra["distillation_head"] = bool(distillation_head)
        base = cls.from_dense_config(dense_config, **extra)
    dense_scale = plan.head_dim**-0.5
    heads, dims, mlp, scales, kept_heads = [], [], [], [], []
    subsets: dict[str, list[list[int] | None]] = {name: [] for name in SUBSETS}
    for i, lp in enumerate(plan.layers):
        k = plan.kept(i)
        attn_on = bool(k["heads"] and k["head_dim"] and k["attn_in"] and k["attn_out"])
        heads.append(k["heads"] if attn_on else 0)
        dims.append(k["head_dim"] if attn_on else 0)
        subsets["attn_in"].append(_remap(lp.attn_in, plan.embed) if attn_on else [])
        subsets["attn_out"].append(_remap(lp.attn_out, plan.embed))
        kept_heads.append(
            (list(range(plan.num_attention_heads)) if lp.heads is None else list(lp.heads)) if attn_on else []
        )
        scales.append(dense_scale if not rescale_attention or k["head_dim"] == 0 else k["head_dim"] ** -0.5)
        mlp_on = bool(k["mlp"] and k["mlp_in"] and k["mlp_out"])
        mlp.append(k["mlp"] if mlp_on else 0)
        subsets["mlp_in"].append(_remap(lp.mlp_in, plan.embed) if mlp_on else [])
        subsets["mlp_out"].append(_remap(lp.mlp_out, plan.embed))
    kwargs = base.to_dict()
    for key in ("model_type", "transformers_version", "architectures", "auto_map", "_name_or_path"):
        kwargs.pop(key, None)
    kwargs.update(
        hidden_size=len(plan.embed) if plan.embed is not None else plan.hidden_size,
        num_attention_heads=plan.num_attention_heads,
        layer_num_heads=heads,
        layer_head_dims=dims,
        layer_intermediate_sizes=mlp,
        layer_attention_scales=scales,
        layernorm_mode=layernorm_mode,
        **{f"layer_{name}": values for name, values in subsets.items()},
    )
    if fam.rel_bias is not None:  # which columns of a shared table each layer reads
        if kwargs.get("use_shared_relative_position_bias"):
            kwargs.update(_shared_bias_fields(kept_heads, plan.num_attention_heads))
        else:
            kwargs.update(layer_bias_heads=None, shared_bias_num_heads=None)
    return cls(**kwargs)
