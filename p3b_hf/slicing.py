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

One state-dict builder for both kinds: the record's kind picks only how the model is located (plain: the
pruned layout's keys and the residual stream's tensors; staged: the stock keys and the stock state dict, its
stream kept whole); every block is then sliced by the same :func:`_slice_block`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import PlanError
from .models.families import Family, family_of, is_pruned_config, prunable, require_family
from .models.locator import locate, locate_mlps, mlp_hidden_of_bias
from .plan import SUBSETS, LayerPlan, WidthPlan


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


@dataclass
class _Block:
    """One block as :func:`_slice_block` slices it, for every kind: the dense pieces, the block's dense ``shape``
    (residual width, MLP width, heads, head dim: what the plan must match) and ``keys``, the pruned state-dict
    key of each piece (a module path; for ``ls1`` / ``ls2`` / ``rel_bias`` the tensor's own key). A piece that is
    ``None`` is not written: for a staged block (the residual stream whole, validated) the LayerNorms and the
    attention's layer scale stay as the stock state dict holds them; ConvNeXt has no attention (``q`` None)."""

    shape: tuple[int, int, int, int]
    keys: dict[str, str]
    fc1: nn.Linear
    act: nn.Module
    fc2: nn.Linear
    up: nn.Linear | None = None
    ls2: torch.Tensor | None = None
    ln_after: nn.LayerNorm | None = None
    q: nn.Linear | None = None
    k: nn.Linear | None = None
    v: nn.Linear | None = None
    o: nn.Linear | None = None
    rel_bias: torch.Tensor | None = None
    ls1: torch.Tensor | None = None
    ln_before: nn.LayerNorm | None = None


@dataclass
class _Located:
    """What the one builder needs of a model, found per kind (:func:`_locate_plain` / :func:`_locate_staged`):
    the blocks; ``base(plan)``, the state dict the blocks are written into (plain: the residual stream's
    tensors -- tokens, embeddings, norms, heads -- sliced to ``plan.embed`` under the pruned names; staged: the
    stock state dict, whose names the pruned model keeps); a reference tensor (dtype / device); the dense
    non-persistent buffers to copy (staged) and the extra :func:`pruned_config` arguments (plain)."""

    kind: str
    blocks: list[_Block]
    base: Callable[[WidthPlan], dict[str, torch.Tensor]]
    ref: torch.Tensor
    dense_buffers: dict[str, torch.Tensor] | None = None
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    #: a shared relative position bias table (BEiT's) and its pruned key
    shared_rel_bias: tuple[torch.Tensor, str] | None = None


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

    One builder for every kind: the record's kind picks only how the model is located (:class:`_Located`);
    validation (:meth:`WidthPlan.check_matches`), the per-block slicing (:func:`_slice_block`), the config
    (:func:`pruned_config`) and the model (:func:`_build`) are shared.
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
    found = _locate_staged(model) if fam.staged else _locate_plain(model, fam)  # the one dispatch on the kind
    plan.validate()
    plan.check_matches(found.kind, [b.shape for b in found.blocks])
    sd = found.base(plan)
    kept_heads = [_slice_block(b, lp, plan.embed, sd) for b, lp in zip(found.blocks, plan.layers)]
    if found.shared_rel_bias is not None:
        _slice_shared_bias(*found.shared_rel_bias, kept_heads, sd)
    # the widths come from THE plan -> config function (cost estimates and random plans use it too)
    config = pruned_config(
        model.config,
        plan,
        rescale_attention=rescale_attention,
        layernorm_mode=layernorm_mode,
        **found.config_kwargs,
    )
    _set_provenance(config, plan, provenance)
    return _build(fam, config, sd, found.ref, model.training, found.dense_buffers)


def _locate_plain(model: nn.Module, fam: Family) -> _Located:
    """A plain family: its layers under the record's pruned layout names (``pruned_layout``), and the residual
    stream's tensors as the base (cls / distillation / register / mask tokens, position embeddings, patch
    projection, every LayerNorm outside the blocks, the classifier inputs -- every copy of the stream a head
    reads, e.g. DINOv2's ``[CLS, mean]``)."""
    mods = locate(model)
    keys = fam.layout(model.config, pruned=True)
    prefix = fam.prefix
    pieces = ("q", "k", "v", "o", "ln_before", "ln_after", "fc1", "fc2", "up", "ls1", "ls2", "rel_bias")
    shape = (mods.hidden_size, mods.intermediate_size, mods.num_heads, mods.head_dim)
    blocks = [
        _Block(
            shape=shape,
            keys={p: f"{prefix}.{keys.blocks}.{i}.{getattr(keys, p)}" for p in pieces if getattr(keys, p)},
            fc1=lm.fc1,
            act=lm.act,
            fc2=lm.fc2,
            up=lm.up,
            ls2=lm.ls2,
            ln_after=lm.ln_after,
            q=lm.q,
            k=lm.k,
            v=lm.v,
            o=lm.o,
            rel_bias=lm.rel_bias,
            ls1=lm.ls1,
            ln_before=lm.ln_before,
        )
        for i, lm in enumerate(mods.layers)
    ]

    def base(plan: WidthPlan) -> dict[str, torch.Tensor]:
        c = mods.hidden_size
        e_idx = _idx(plan.embed, c)
        sd: dict[str, torch.Tensor] = {}
        tokens = (
            ("cls_token", mods.cls_token),
            ("distillation_token", mods.dist_token),
            ("register_tokens", mods.register_tokens),
            ("mask_token", mods.mask_token),
            ("position_embeddings", mods.position_embeddings),
        )
        for name, tensor in tokens:
            if tensor is not None:
                sd[f"{prefix}.embeddings.{name}"] = tensor[..., e_idx]
        proj = mods.patch_projection
        sd[f"{prefix}.embeddings.patch_embeddings.projection.weight"] = proj.weight[e_idx]
        if proj.bias is not None:
            sd[f"{prefix}.embeddings.patch_embeddings.projection.bias"] = proj.bias[e_idx]
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
        return sd

    shared = None
    if keys.shared_rel_bias is not None and mods.shared_rel_bias is not None:
        shared = (mods.shared_rel_bias, f"{prefix}.{keys.shared_rel_bias}")
    return _Located(
        kind="plain",
        blocks=blocks,
        base=base,
        ref=mods.patch_projection.weight,
        config_kwargs={"distillation_head": "cls_classifier" in mods.heads if fam.teacher_head else None},
        shared_rel_bias=shared,
    )


def _locate_staged(model: nn.Module) -> _Located:
    """A staged family (Swin, ConvNeXt): every block's MLP (and window attention) under its stock names -- the
    pruned model is the stock model with narrower Linears -- and the stock state dict as the base (the
    residual stream is kept whole)."""
    view = locate_mlps(model)
    names = {id(m): n for n, m in model.named_modules()}
    params = {id(p): n for n, p in model.named_parameters()}
    blocks = []
    for blk in view.blocks:
        a = blk.attn
        mods = {"fc1": blk.fc1, "fc2": blk.fc2, "up": blk.up}
        if a is not None:
            mods.update(q=a.q_proj, k=a.k_proj, v=a.v_proj, o=a.o_proj)
        keys = {p: names[id(m)] for p, m in mods.items() if m is not None}
        for p, t in (("ls2", blk.ls2), ("rel_bias", a.rel_bias if a is not None else None)):
            if t is not None and id(t) in params:
                keys[p] = params[id(t)]
        blocks.append(
            _Block(
                shape=(blk.dim, blk.width, a.num_attention_heads if a else 0, a.head_dim if a else 0),
                keys=keys,
                fc1=blk.fc1,
                act=blk.act,
                fc2=blk.fc2,
                up=blk.up,
                ls2=blk.ls2,
                q=a.q_proj if a else None,
                k=a.k_proj if a else None,
                v=a.v_proj if a else None,
                o=a.o_proj if a else None,
                rel_bias=a.rel_bias if a else None,
            )
        )
    return _Located(
        kind="staged",
        blocks=blocks,
        base=lambda plan: dict(model.state_dict()),
        ref=view.blocks[0].fc1.weight,
        dense_buffers=dict(model.named_buffers()),
    )


def _slice_block(b: _Block, lp: LayerPlan, embed: list[int] | None, sd: dict[str, torch.Tensor]) -> list[int]:
    """Write block ``b``'s pruned tensors into ``sd`` (every kind): q/k/v rows and o columns of the kept (head,
    head dim) pairs, the relative position bias columns of the kept heads, fc1 / up rows and fc2 columns of the
    kept hidden units; read / written residual subsets (``attn_in`` ... ``mlp_out``, ``embed``) slice the
    LayerNorms, the Linears' residual sides and the layer scales; bias folds (``attn_bias_delta`` /
    ``mlp_bias_delta``) are added to the output bias before the layer scale. A sub-block that keeps no inner
    width, reads nothing or writes nothing is removed: only its exact constant output is written (as the
    output bias). Returns the heads the block's attention still uses (a shared bias table's columns)."""
    c, _, num_heads, hd = b.shape
    e_idx = _idx(embed, c)
    kept_heads: list[int] = []
    if b.q is not None:  # ---- attention
        heads = _idx(lp.heads, num_heads)
        inner = (heads[:, None] * hd + _idx(lp.head_dims, hd)[None, :]).reshape(-1)
        a_in = _idx(lp.attn_in, c) if lp.attn_in is not None else e_idx
        a_out = _idx(lp.attn_out, c) if lp.attn_out is not None else e_idx
        o_bias = _add_delta(b.o.bias, lp.attn_bias_delta)
        if len(inner) == 0 or len(a_in) == 0 or len(a_out) == 0:
            # Removed: its output is constant. With an empty input every token has the same value row
            # (the value bias), so whatever the attention weights (uniform, or BEiT's relative position
            # bias) the constant is o(v_bias); with no inner width, o's bias. Layer scale multiplies it.
            const = o_bias.double()
            if len(inner) and len(a_in) == 0 and b.v.bias is not None:
                const = const + b.o.weight.double()[:, inner] @ b.v.bias.double()[inner]
            if b.ls1 is not None:
                const = const * b.ls1.double()
            if len(a_out):
                sd[f"{b.keys['o']}.bias"] = const[a_out].to(o_bias.dtype)
        else:
            _put_norm(sd, b, "ln_before", a_in)
            for name in ("q", "k", "v"):
                lin = getattr(b, name)
                sd[f"{b.keys[name]}.weight"] = lin.weight[inner][:, a_in]
                if lin.bias is not None:
                    sd[f"{b.keys[name]}.bias"] = lin.bias[inner]
            sd[f"{b.keys['o']}.weight"] = b.o.weight[a_out][:, inner]
            sd[f"{b.keys['o']}.bias"] = o_bias[a_out]
            if b.ls1 is not None and "ls1" in b.keys:
                sd[b.keys["ls1"]] = b.ls1[a_out]
            if b.rel_bias is not None and "rel_bias" in b.keys:
                sd[b.keys["rel_bias"]] = b.rel_bias[:, heads]
            kept_heads = heads.tolist()
    # ---- MLP
    hid = _idx(lp.mlp, b.shape[1])
    m_in = _idx(lp.mlp_in, c) if lp.mlp_in is not None else e_idx
    m_out = _idx(lp.mlp_out, c) if lp.mlp_out is not None else e_idx
    b2 = _add_delta(b.fc2.bias, lp.mlp_bias_delta)
    if len(hid) == 0 or len(m_in) == 0 or len(m_out) == 0:
        const = b2.double()
        if len(hid) and len(m_in) == 0:
            const = const + b.fc2.weight.double()[:, hid] @ mlp_hidden_of_bias(b.fc1, b.act, b.up, hid)
        if b.ls2 is not None:
            const = const * b.ls2.double()
        if len(m_out):
            sd[f"{b.keys['fc2']}.bias"] = const[m_out].to(b2.dtype)
    else:
        _put_norm(sd, b, "ln_after", m_in)
        sd[f"{b.keys['fc1']}.weight"] = b.fc1.weight[hid][:, m_in]
        sd[f"{b.keys['fc1']}.bias"] = b.fc1.bias[hid]
        if b.up is not None:  # a gated MLP: the up rows go with the gate rows (one hidden unit)
            sd[f"{b.keys['up']}.weight"] = b.up.weight[hid][:, m_in]
            sd[f"{b.keys['up']}.bias"] = b.up.bias[hid]
        sd[f"{b.keys['fc2']}.weight"] = b.fc2.weight[m_out][:, hid]
        sd[f"{b.keys['fc2']}.bias"] = b2[m_out]
        if b.ls2 is not None and "ls2" in b.keys:
            sd[b.keys["ls2"]] = b.ls2[m_out]
    return kept_heads


def _add_delta(bias: torch.Tensor, delta: list[float] | None) -> torch.Tensor:
    """``bias`` plus a plan's bias fold (``attn_bias_delta`` / ``mlp_bias_delta``; ``None``: none)."""
    if delta is None:
        return bias
    return bias + torch.tensor(delta, dtype=bias.dtype, device=bias.device)


def _put_norm(sd: dict[str, torch.Tensor], b: _Block, name: str, idx: torch.Tensor) -> None:
    """A block's LayerNorm sliced to the residual channels its sub-block reads (skipped where the block kind
    keeps it under its stock name: ``None``)."""
    norm = getattr(b, name)
    if norm is not None:
        sd[f"{b.keys[name]}.weight"] = norm.weight[idx]
        sd[f"{b.keys[name]}.bias"] = norm.bias[idx]


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


def _slice_shared_bias(
    table: torch.Tensor, key: str, kept_heads: list[list[int]], sd: dict[str, torch.Tensor]
) -> None:
    """A shared relative position bias table (BEiT's): keep the columns of every head some layer still uses (the
    union; :func:`_shared_bias_fields` records which of them each layer reads), under the pruned ``key``."""
    union = sorted({h for heads in kept_heads for h in heads})
    if union:
        sd[key] = table[:, union]


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
