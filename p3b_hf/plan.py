"""WidthPlan -- which channels to keep -- and :func:`apply_width_plan`, the only code in p3b_hf
that slices weights.

Every method (P3B, VBP, grouped global pruning) ends by producing a :class:`WidthPlan`; they
differ only in how they choose indices. A plan is pure data: sorted index lists into the
*original dense* tensors, JSON round-trippable, validated with clear errors.

Per layer ``i`` (``plan.layers[i]``):

- ``head_dims``: kept head-dimension indices ``j`` in ``range(head_dim)``, shared by q, k, v and
  every kept head (P3B's qkv gate, Torch-Pruning's head-dim group).
- ``heads``: kept heads (``None`` = all).
- ``mlp``: kept MLP neurons.
- ``attn_in`` / ``attn_out`` / ``mlp_in`` / ``mlp_out``: residual channels a sub-block reads
  from / writes to (P3B's in/out gates). The residual stream keeps its full width.
- ``attn_bias_delta`` / ``mlp_bias_delta``: additive corrections of the dense output bias (length
  ``hidden_size``), computed from dense weights before slicing (VBP's mean-shift fold).

Model level: ``embed`` prunes the residual stream itself (Torch-Pruning's embedding group): the
cls/distillation/mask tokens, position embeddings, patch projection, every LayerNorm, the layer scales,
the pooling norm and the classifier inputs (both halves of DINOv2's ``[CLS, mean]`` input) are sliced with
it; the layer subsets above must then be subsets of ``embed``.

Family extras (:mod:`p3b_hf.models.families`): layer scale (BEiT ``lambda_1/2``, DINOv2
``layer_scale1/2``) is sliced with the written subset it multiplies (``attn_out`` / ``mlp_out``); BEiT's
relative position bias tables keep the columns of the kept heads (a shared table keeps the union over
layers, each layer indexing its columns); a removed sub-block's constant includes its layer scale.

``None`` always means "keep all". An empty list removes the structure; a sub-block that keeps no
inner width, reads nothing or writes nothing is *removed* and replaced by its exact constant output.

Hierarchical families (Swin, ConvNeXt; :data:`~p3b_hf.models.families.STAGE_FAMILIES`): ``layers[i]`` is
block ``i`` in forward (stage-major) order, ``block_dims[i]`` its residual width and
``block_intermediate_sizes[i]`` its dense MLP width. ``mlp`` (kept hidden units, at least one) and
``mlp_bias_delta`` (length ``block_dims[i]``, added to fc2's bias *before* a layer scale multiplies it) may
be set, and for Swin's window attention (``block_num_heads[i]`` heads of ``block_head_dims[i]`` dimensions;
0 for ConvNeXt) ``heads`` / ``head_dims`` (at least one each; the relative position bias table keeps the
kept heads' columns, the softmax scale stays dense); residual subsets and ``embed`` stay ``None``. :func:`apply_width_plan` then builds
the family's pruned model (the stock model with narrower fc1 / fc2).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import PlanError
from .models.families import (
    FAMILIES,
    P3B_CONFIGS,
    dense_intermediate_size,
    family_of_config,
    stage_family_of_config,
)
from .models.locator import MLPView, ViTModules, locate, locate_mlps, stage_family_of

SUBSETS = ("attn_in", "attn_out", "mlp_in", "mlp_out")
PLAN_VERSION = 1


@dataclass
class LayerPlan:
    head_dims: list[int] | None = None
    heads: list[int] | None = None
    mlp: list[int] | None = None
    attn_in: list[int] | None = None
    attn_out: list[int] | None = None
    mlp_in: list[int] | None = None
    mlp_out: list[int] | None = None
    attn_bias_delta: list[float] | None = None
    mlp_bias_delta: list[float] | None = None


@dataclass
class WidthPlan:
    """Kept channels per layer of a dense ViT/DeiT (see module docstring)."""

    hidden_size: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    layers: list[LayerPlan]
    embed: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: hierarchical families only (see the module docstring): residual / dense MLP width of every block
    block_dims: list[int] | None = None
    block_intermediate_sizes: list[int] | None = None
    block_num_heads: list[int] | None = None  # 0: the block has no attention (ConvNeXt)
    block_head_dims: list[int] | None = None

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def full(cls, config: Any) -> WidthPlan:
        """A plan that keeps everything of a model with this (dense) config."""
        fam = stage_family_of_config(config)
        if fam is not None:  # Swin / ConvNeXt: one LayerPlan per block, MLP widths only
            dims = [d for d, depth in zip(fam.stage_dims(config), config.depths) for _ in range(int(depth))]
            widths = [f for stage in fam.dense_widths(config) for f in stage]
            heads, hds = (
                fam.dense_heads(config)
                if fam.dense_heads is not None
                else ([[0] * len(dims)], [[0] * len(dims)])
            )
            return cls(
                hidden_size=max(dims),
                num_attention_heads=0,
                head_dim=0,
                intermediate_size=max(widths),
                layers=[LayerPlan() for _ in dims],
                block_dims=dims,
                block_intermediate_sizes=widths,
                block_num_heads=[h for stage in heads for h in stage],
                block_head_dims=[d for stage in hds for d in stage],
            )
        heads = int(config.num_attention_heads)
        return cls(
            hidden_size=int(config.hidden_size),
            num_attention_heads=heads,
            head_dim=int(config.hidden_size) // heads,
            intermediate_size=dense_intermediate_size(config),
            layers=[LayerPlan() for _ in range(int(config.num_hidden_layers))],
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hierarchical(self) -> bool:
        """A Swin / ConvNeXt plan (per-block widths; MLP hidden units only)."""
        return self.block_dims is not None

    def mlp_size(self, i: int) -> int:
        """Dense MLP width of layer / block ``i``."""
        return (
            self.block_intermediate_sizes[i]
            if self.block_intermediate_sizes is not None
            else self.intermediate_size
        )

    def num_heads(self, i: int) -> int:
        """Dense attention heads of layer / block ``i`` (0: no attention)."""
        return self.block_num_heads[i] if self.block_num_heads is not None else self.num_attention_heads

    def dense_head_dim(self, i: int) -> int:
        """Dense head dimension of layer / block ``i``."""
        return self.block_head_dims[i] if self.block_head_dims is not None else self.head_dim

    def out_width(self, i: int) -> int:
        """Residual width layer / block ``i`` writes (the length of its ``mlp_bias_delta``)."""
        return self.block_dims[i] if self.block_dims is not None else self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = PLAN_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WidthPlan:
        d = dict(d)
        d.pop("version", None)
        try:
            layers = [LayerPlan(**layer) for layer in d.pop("layers")]
            plan = cls(layers=layers, **d)
        except (KeyError, TypeError) as e:
            raise PlanError(f"Not a WidthPlan: {e}. Write plans with WidthPlan.to_json().") from e
        plan.validate()
        return plan

    def to_json(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> WidthPlan:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise PlanError(f"WidthPlan file {path} does not exist.") from e
        except json.JSONDecodeError as e:
            raise PlanError(f"WidthPlan file {path} is not valid JSON ({e}).") from e
        return cls.from_dict(data)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`PlanError` on out-of-range, duplicate or unsorted indices."""
        c, h, d, f = self.hidden_size, self.num_attention_heads, self.head_dim, self.intermediate_size
        if self.hierarchical:
            self._validate_blocks()
            return
        _check_indices(self.embed, c, "embed")
        for i, lp in enumerate(self.layers):
            _check_indices(lp.head_dims, d, f"layers[{i}].head_dims")
            _check_indices(lp.heads, h, f"layers[{i}].heads")
            _check_indices(lp.mlp, f, f"layers[{i}].mlp")
            for name in SUBSETS:
                sub = getattr(lp, name)
                _check_indices(sub, c, f"layers[{i}].{name}")
                if sub is not None and self.embed is not None and not set(sub) <= set(self.embed):
                    raise PlanError(
                        f"layers[{i}].{name} reads/writes residual channels that plan.embed removes; "
                        "make every layer subset a subset of plan.embed."
                    )
            for name in ("attn_bias_delta", "mlp_bias_delta"):
                delta = getattr(lp, name)
                if delta is not None and len(delta) != c:
                    raise PlanError(
                        f"layers[{i}].{name} has {len(delta)} values; it must have hidden_size={c}."
                    )

    def _validate_blocks(self) -> None:
        """A Swin / ConvNeXt plan: per-block MLP subsets and (Swin) heads / head dims (>= 1 kept), fold deltas."""
        n = len(self.layers)
        per_block = (
            self.block_dims,
            self.block_intermediate_sizes,
            self.block_num_heads,
            self.block_head_dims,
        )
        if any(len(v or []) != n for v in per_block):
            raise PlanError(
                f"This hierarchical WidthPlan has {n} blocks but block_dims / block_intermediate_sizes / "
                "block_num_heads / block_head_dims have other lengths; build it with "
                "WidthPlan.full(model.config)."
            )
        if self.embed is not None:
            raise PlanError(
                "plan.embed is set, but Swin / ConvNeXt plans prune MLP hidden units only; leave "
                "plan.embed None."
            )
        for i, lp in enumerate(self.layers):
            others = [k for k in (*SUBSETS, "attn_bias_delta") if getattr(lp, k) is not None]
            if self.block_num_heads[i] == 0:
                others = [k for k in ("heads", "head_dims") if getattr(lp, k) is not None] + others
            if others:
                raise PlanError(
                    f"layers[{i}].{others[0]} is set, but Swin / ConvNeXt plans prune MLP hidden units "
                    "and Swin's heads / head dims only (residual channels are kept; ConvNeXt has no "
                    "attention); leave it None."
                )
            _check_indices(lp.mlp, self.block_intermediate_sizes[i], f"layers[{i}].mlp")
            _check_indices(lp.heads, self.block_num_heads[i], f"layers[{i}].heads")
            _check_indices(lp.head_dims, self.block_head_dims[i], f"layers[{i}].head_dims")
            for name in ("mlp", "heads", "head_dims"):
                if getattr(lp, name) is not None and not getattr(lp, name):
                    raise PlanError(
                        f"layers[{i}].{name} is empty; a Swin / ConvNeXt block keeps at least one (MLP "
                        "hidden unit, head, head dimension): its pruned format has no removed-sub-block "
                        "constant."
                    )
            if lp.mlp_bias_delta is not None and len(lp.mlp_bias_delta) != self.block_dims[i]:
                raise PlanError(
                    f"layers[{i}].mlp_bias_delta has {len(lp.mlp_bias_delta)} values; it must have "
                    f"the block's width {self.block_dims[i]}."
                )

    def check_matches_mlps(self, view: MLPView) -> None:
        """Raise :class:`PlanError` unless this hierarchical plan was made for ``view``'s model."""
        mine = (self.block_dims, self.block_intermediate_sizes, self.block_num_heads, self.block_head_dims)
        theirs = (
            [b.dim for b in view.blocks],
            [b.width for b in view.blocks],
            [b.attn.num_attention_heads if b.attn is not None else 0 for b in view.blocks],
            [b.attn.head_dim if b.attn is not None else 0 for b in view.blocks],
        )
        if not self.hierarchical or mine != theirs:
            raise PlanError(
                f"This WidthPlan was made for another model: plan (block widths, MLP widths, heads, head dims) = "
                f"{mine}, model = "
                f"{theirs}. Build the plan from this model's config (WidthPlan.full(model.config))."
            )

    def check_matches(self, mods: ViTModules) -> None:
        if self.hierarchical:
            raise PlanError(
                "This WidthPlan was made for a Swin / ConvNeXt model (per-block widths), not for this "
                f"{mods.family} model. Build the plan from this model's config (WidthPlan.full(model.config))."
            )
        mine = (
            self.hidden_size,
            self.num_attention_heads,
            self.head_dim,
            self.intermediate_size,
            self.num_layers,
        )
        theirs = (mods.hidden_size, mods.num_heads, mods.head_dim, mods.intermediate_size, mods.num_layers)
        if mine != theirs:
            raise PlanError(
                "This WidthPlan was made for another model: plan (hidden, heads, head_dim, mlp, layers) = "
                f"{mine}, model = {theirs}. Build the plan from this model's config (WidthPlan.full(model.config))."
            )

    # ------------------------------------------------------------------ summaries
    def kept(self, i: int) -> dict[str, int]:
        """Kept widths of layer ``i`` (heads, head_dim, mlp, and subset sizes)."""
        lp, c = self.layers[i], len(self.embed) if self.embed is not None else self.out_width(i)
        return {
            "heads": _n(lp.heads, self.num_heads(i)),
            "head_dim": _n(lp.head_dims, self.dense_head_dim(i)),
            "mlp": _n(lp.mlp, self.mlp_size(i)),
            **{name: _n(getattr(lp, name), c) for name in SUBSETS},
        }


def _n(sub: list[int] | None, full: int) -> int:
    return full if sub is None else len(sub)


def _check_indices(sub: list[int] | None, size: int, name: str) -> None:
    if sub is None:
        return
    if not isinstance(sub, (list, tuple)):
        raise PlanError(f"{name} must be a list of ints or None, got {type(sub).__name__}.")
    prev = -1
    for v in sub:
        if isinstance(v, bool) or not isinstance(v, int):
            raise PlanError(f"{name} holds {v!r}; indices must be ints.")
        if v < 0 or v >= size:
            raise PlanError(f"{name} holds index {v}, out of range [0, {size}).")
        if v == prev:
            raise PlanError(f"{name} holds index {v} twice; indices must be unique.")
        if v < prev:
            raise PlanError(f"{name} is not sorted ({prev} before {v}); sort the kept indices.")
        prev = v


# ====================================================================== slicing
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
    """Return a physically smaller pruned model of ``model``'s family (``P3BViTForImageClassification``,
    ``P3BDeiTForImageClassification``, ``P3BBeitForImageClassification``, ``P3BDinov2ForImageClassification``).

    ``model`` is a dense HF ``ViTForImageClassification`` / ``DeiTForImageClassification[WithTeacher]`` /
    ``BeitForImageClassification`` / ``Dinov2ForImageClassification`` or a full-width P3B model; it is not
    modified. By default the attention softmax scale stays at the dense ``head_dim**-0.5`` (function
    preserving: removing head dims equals zero-masking them); ``rescale_attention=True`` uses
    ``kept_head_dim**-0.5`` as Isomorphic Pruning does. ``layernorm_mode`` is recorded in the config.
    """
    if stage_family_of(model) is not None:
        return _apply_block_mlp_plan(model, plan, provenance)
    mods = locate(model)
    plan.validate()
    plan.check_matches(mods)
    keys = FAMILIES[mods.family].keys
    c, hd = mods.hidden_size, mods.head_dim
    e_idx = _idx(plan.embed, c)
    sd: dict[str, torch.Tensor] = {}
    prefix = mods.family
    kept_heads: list[list[int]] = []  # per layer, the heads its attention still uses (BEiT's shared bias)

    sd[f"{prefix}.embeddings.cls_token"] = mods.cls_token[..., e_idx]
    if mods.dist_token is not None:
        sd[f"{prefix}.embeddings.distillation_token"] = mods.dist_token[..., e_idx]
    if mods.mask_token is not None:
        sd[f"{prefix}.embeddings.mask_token"] = mods.mask_token[..., e_idx]
    if mods.position_embeddings is not None:
        sd[f"{prefix}.embeddings.position_embeddings"] = mods.position_embeddings[..., e_idx]
    sd[f"{prefix}.embeddings.patch_embeddings.projection.weight"] = mods.patch_projection.weight[e_idx]
    sd[f"{prefix}.embeddings.patch_embeddings.projection.bias"] = mods.patch_projection.bias[e_idx]
    for key, norm in (("layernorm", mods.final_norm), ("pooler.layernorm", mods.pool_norm)):
        if norm is not None:
            sd[f"{prefix}.{key}.weight"] = norm.weight[e_idx]
            sd[f"{prefix}.{key}.bias"] = norm.bias[e_idx]
    # a head reads `classifier_copies` concatenated copies of the stream (DINOv2: [CLS, mean of patches])
    head_cols = torch.cat([e_idx + j * c for j in range(mods.classifier_copies)])
    for name, head in mods.heads.items():
        sd[f"{name}.weight"] = head.weight[:, head_cols]
        sd[f"{name}.bias"] = head.bias

    for i, (lm, lp) in enumerate(zip(mods.layers, plan.layers)):
        pre = f"{prefix}.encoder.layer.{i}"
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
                const = const + lm.fc2.weight.double()[:, hid] @ lm.act(lm.fc1.bias.double()[hid])
            if lm.ls2 is not None:
                const = const * lm.ls2.double()
            if len(m_out):
                sd[f"{pre}.{keys.fc2}.bias"] = const[m_out].to(b2.dtype)
        else:
            sd[f"{pre}.{keys.ln_after}.weight"] = lm.ln_after.weight[m_in]
            sd[f"{pre}.{keys.ln_after}.bias"] = lm.ln_after.bias[m_in]
            sd[f"{pre}.{keys.fc1}.weight"] = lm.fc1.weight[hid][:, m_in]
            sd[f"{pre}.{keys.fc1}.bias"] = lm.fc1.bias[hid]
            sd[f"{pre}.{keys.fc2}.weight"] = lm.fc2.weight[m_out][:, hid]
            sd[f"{pre}.{keys.fc2}.bias"] = b2[m_out]
            if lm.ls2 is not None:
                sd[f"{pre}.{keys.ls2}"] = lm.ls2[m_out]

    _slice_shared_bias(mods, kept_heads, sd, prefix)
    # the widths come from THE plan -> config function (cost estimates and random plans use it too)
    config = pruned_config(
        model.config,
        plan,
        distillation_head="cls_classifier" in mods.heads if mods.family == "deit" else None,
        rescale_attention=rescale_attention,
        layernorm_mode=layernorm_mode,
    )
    _set_provenance(config, plan, provenance)
    cls = FAMILIES[mods.family].model_class
    dtype = mods.patch_projection.weight.dtype
    with torch.device("meta"):
        pruned = cls(config)
    missing = set(pruned.state_dict()) ^ set(sd)
    if missing:  # an internal invariant: the slicer and the model class must agree on every key
        raise RuntimeError(f"apply_width_plan produced mismatching keys: {sorted(missing)[:8]}")
    pruned.load_state_dict(
        {k: v.detach().clone().contiguous().to(dtype) for k, v in sd.items()}, strict=True, assign=True
    )
    pruned.train(model.training)
    return pruned.to(mods.patch_projection.weight.device)


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


@torch.no_grad()
def _apply_block_mlp_plan(model: nn.Module, plan: WidthPlan, provenance: dict[str, Any] | None) -> nn.Module:
    """Swin / ConvNeXt: slice every block's fc1 rows / fc2 columns to ``plan.layers[i].mlp`` and add
    ``mlp_bias_delta`` to fc2's bias (before the layer scale, which multiplies bias and all); everything else is
    copied. The pruned model is the family's stock model with narrower Linears (stock parameter names)."""
    model = getattr(model, "module", model)
    fam = stage_family_of(model)
    view = locate_mlps(model)
    if plan is None or not isinstance(plan, WidthPlan):
        raise PlanError(
            f"apply_width_plan needs a WidthPlan, got {type(plan).__name__}; build one with "
            "WidthPlan.full(model.config)."
        )
    plan.validate()
    plan.check_matches_mlps(view)
    names = {id(m): n for n, m in model.named_modules()}
    sd = dict(model.state_dict())
    for blk, lp in zip(view.blocks, plan.layers):
        if (
            blk.attn is not None
        ):  # Swin: q/k/v rows, o columns of the kept (head, dim) pairs; bias table columns
            a = blk.attn
            heads, dims = _idx(lp.heads, a.num_attention_heads), _idx(lp.head_dims, a.head_dim)
            inner = (heads[:, None] * a.head_dim + dims[None, :]).reshape(-1).to(a.q_proj.weight.device)
            for lin in (a.q_proj, a.k_proj, a.v_proj):
                sd[f"{names[id(lin)]}.weight"] = lin.weight[inner]
                if lin.bias is not None:
                    sd[f"{names[id(lin)]}.bias"] = lin.bias[inner]
            sd[f"{names[id(a.o_proj)]}.weight"] = a.o_proj.weight[:, inner]
            table = a.relative_position_bias.relative_position_bias_table
            sd[f"{names[id(a.relative_position_bias)]}.relative_position_bias_table"] = table[
                :, heads.to(table.device)
            ]
        hid = _idx(lp.mlp, blk.width).to(blk.fc1.weight.device)
        b2 = blk.fc2.bias
        if lp.mlp_bias_delta is not None:
            b2 = b2 + torch.tensor(lp.mlp_bias_delta, dtype=torch.float64, device=b2.device).to(b2.dtype)
        fc1, fc2 = names[id(blk.fc1)], names[id(blk.fc2)]
        sd[f"{fc1}.weight"], sd[f"{fc1}.bias"] = blk.fc1.weight[hid], blk.fc1.bias[hid]
        sd[f"{fc2}.weight"], sd[f"{fc2}.bias"] = blk.fc2.weight[:, hid], b2
    config = pruned_config(model.config, plan)  # the widths: THE plan -> config function
    _set_provenance(config, plan, provenance)
    dtype = blk.fc1.weight.dtype
    with torch.device("meta"):
        pruned = fam.model_class(config)
    mismatch = set(pruned.state_dict()) ^ set(sd)
    if mismatch:  # an internal invariant: the slicer and the model class must agree on every key
        raise RuntimeError(f"apply_width_plan produced mismatching keys: {sorted(mismatch)[:8]}")
    pruned.load_state_dict(
        {
            k: v.detach().clone().contiguous().to(dtype if v.is_floating_point() else v.dtype)
            for k, v in sd.items()
        },
        strict=True,
        assign=True,
    )
    # non-persistent buffers (Swin's relative_position_index) are not in a state dict: copy the dense ones
    dense_buffers = dict(model.named_buffers())
    for name, _buf in list(pruned.named_buffers()):
        if name in sd:
            continue
        owner, _, attr = name.rpartition(".")
        pruned.get_submodule(owner).register_buffer(attr, dense_buffers[name].clone(), persistent=False)
    pruned.train(model.training)
    return pruned.to(blk.fc1.weight.device)


def _slice_shared_bias(
    mods: ViTModules, kept_heads: list[list[int]], sd: dict[str, torch.Tensor], prefix: str
) -> None:
    """BEiT's shared relative position bias: keep the columns of every head some layer still uses (the union;
    :func:`_shared_bias_fields` records which of them each layer reads)."""
    union = sorted({h for heads in kept_heads for h in heads})
    if mods.family == "beit" and mods.shared_rel_bias is not None and union:
        table = mods.shared_rel_bias[:, union]
        sd[f"{prefix}.encoder.relative_position_bias.relative_position_bias_table"] = table


def _shared_bias_fields(kept_heads: list[list[int]], num_heads: int) -> dict[str, Any]:
    """BEiT config fields of a shared relative position bias table sliced to the union of the heads the layers
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
    fam = stage_family_of_config(dense_config)
    if fam is not None:  # Swin / ConvNeXt: per-block MLP widths (Swin: heads / head dims)
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
    family = family_of_config(dense_config)
    cls = FAMILIES[family].config_class
    if isinstance(dense_config, P3B_CONFIGS):
        base = dense_config
    else:
        extra: dict[str, Any] = {}
        if family == "deit":
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
    if family == "beit":
        if kwargs.get("use_shared_relative_position_bias"):
            kwargs.update(_shared_bias_fields(kept_heads, plan.num_attention_heads))
        else:
            kwargs.update(layer_bias_heads=None, shared_bias_num_heads=None)
    return cls(**kwargs)
