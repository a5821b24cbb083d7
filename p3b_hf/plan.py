"""WidthPlan -- which channels to keep -- as pure data: the schema, its validation and JSON round trip.

Every method (P3B, VBP, grouped global pruning) ends by producing a :class:`WidthPlan`; they
differ only in how they choose indices. A plan is pure data: sorted index lists into the
*original dense* tensors, JSON round-trippable, validated with clear errors. The slicer that turns a plan
into a smaller model is :mod:`p3b_hf.slicing` (:func:`~p3b_hf.slicing.apply_width_plan`,
:func:`~p3b_hf.slicing.pruned_config`). The dependency points one way: the slicer imports this module,
this module imports nothing of the slicer (import ``apply_width_plan`` from ``p3b_hf`` or
``p3b_hf.slicing``; tests/test_architecture.py checks it).

Per layer ``i`` (``plan.layers[i]``):

- ``head_dims``: kept head-dimension indices ``j`` in ``range(head_dim)``, shared by q, k, v and
  every kept head (P3B's qkv gate, Torch-Pruning's head-dim group).
- ``heads``: kept heads (``None`` = all).
- ``mlp``: kept MLP neurons.
- ``attn_in`` / ``attn_out`` / ``mlp_in`` / ``mlp_out``: residual channels a sub-block reads
  from / writes to (P3B's in/out gates). The residual stream keeps its full width.
- ``attn_bias_delta`` / ``mlp_bias_delta``: additive corrections of the dense output bias (length
  ``hidden_size``), computed from dense weights before slicing (VBP's mean-shift fold).

Model level: ``embed`` prunes the residual stream itself (Torch-Pruning's embedding group); the layer subsets
above must then be subsets of ``embed``.

``None`` always means "keep all". An empty list removes the structure; a sub-block that keeps no
inner width, reads nothing or writes nothing is *removed* and replaced by its exact constant output.

Staged families (``Family.kind == "staged"``: Swin, ConvNeXt): ``layers[i]`` is block ``i`` in forward
(stage-major) order, ``block_dims[i]`` its residual width and ``block_intermediate_sizes[i]`` its dense MLP
width. ``mlp`` (kept hidden units, at least one) and ``mlp_bias_delta`` (length ``block_dims[i]``, added to
fc2's bias *before* a layer scale multiplies it) may be set, and for a window attention
(``block_num_heads[i]`` heads of ``block_head_dims[i]`` dimensions; 0 without attention) ``heads`` /
``head_dims`` (at least one each); residual subsets and ``embed`` stay ``None``. A plain plan is the special
case of one stage whose blocks have equal widths: ``num_heads(i)``, ``dense_head_dim(i)``, ``mlp_size(i)`` and
``out_width(i)`` read either.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import PlanError
from .models.families import dense_intermediate_size, family_of, flat_config

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
    """Kept channels per layer / block of a dense model (see module docstring)."""

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
        fam = family_of(config)  # unknown: the plain layout (apply_width_plan refuses the model itself)
        if (
            fam is not None and fam.staged
        ):  # one LayerPlan per block: MLP widths (window attention: heads / head dims)
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
        config = flat_config(config)  # a nested stock config (CLIP): the flat full-width one
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
        """Raise :class:`PlanError` on out-of-range, duplicate or unsorted indices, or on a field the plan's kind
        does not prune. One loop for every kind: each layer / block is checked against its own dense widths
        (``num_heads(i)``, ``dense_head_dim(i)``, ``mlp_size(i)``, ``out_width(i)``); a staged plan (Swin /
        ConvNeXt) additionally keeps the residual stream whole and at least one of each pruned width."""
        staged = self.hierarchical
        if staged:
            self._validate_block_fields()
        else:
            _check_indices(self.embed, self.hidden_size, "embed")
        for i, lp in enumerate(self.layers):
            if staged:
                self._validate_block_layer(i, lp)
            _check_indices(lp.head_dims, self.dense_head_dim(i), f"layers[{i}].head_dims")
            _check_indices(lp.heads, self.num_heads(i), f"layers[{i}].heads")
            _check_indices(lp.mlp, self.mlp_size(i), f"layers[{i}].mlp")
            for name in SUBSETS if not staged else ():
                sub = getattr(lp, name)
                _check_indices(sub, self.hidden_size, f"layers[{i}].{name}")
                if sub is not None and self.embed is not None and not set(sub) <= set(self.embed):
                    raise PlanError(
                        f"layers[{i}].{name} reads/writes residual channels that plan.embed removes; "
                        "make every layer subset a subset of plan.embed."
                    )
            for name in ("mlp", "heads", "head_dims") if staged else ():
                if getattr(lp, name) is not None and not getattr(lp, name):
                    raise PlanError(
                        f"layers[{i}].{name} is empty; a Swin / ConvNeXt block keeps at least one (MLP "
                        "hidden unit, head, head dimension): its pruned format has no removed-sub-block "
                        "constant."
                    )
            for name in ("attn_bias_delta", "mlp_bias_delta"):
                delta = getattr(lp, name)
                if delta is not None and len(delta) != self.out_width(i):
                    must = (
                        f"the block's width {self.out_width(i)}"
                        if staged
                        else f"hidden_size={self.hidden_size}"
                    )
                    raise PlanError(f"layers[{i}].{name} has {len(delta)} values; it must have {must}.")

    def _validate_block_fields(self) -> None:
        """A staged plan: one entry per block in every per-block list, no ``embed``."""
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

    def _validate_block_layer(self, i: int, lp: LayerPlan) -> None:
        """A staged plan's block keeps its residual channels (no subsets, no attention bias fold) and, without
        attention, sets no heads / head dims."""
        others = [k for k in (*SUBSETS, "attn_bias_delta") if getattr(lp, k) is not None]
        if self.block_num_heads[i] == 0:
            others = [k for k in ("heads", "head_dims") if getattr(lp, k) is not None] + others
        if others:
            raise PlanError(
                f"layers[{i}].{others[0]} is set, but Swin / ConvNeXt plans prune MLP hidden units "
                "and Swin's heads / head dims only (residual channels are kept; ConvNeXt has no "
                "attention); leave it None."
            )

    def kind(self) -> str:
        """``"staged"`` (Swin / ConvNeXt: per-block widths) or ``"plain"`` (one stage of equal blocks)."""
        return "staged" if self.hierarchical else "plain"

    def block_shapes(self) -> list[tuple[int, int, int, int]]:
        """Per layer / block its dense (residual width, MLP width, heads, head dim), for every kind."""
        return [
            (self.out_width(i), self.mlp_size(i), self.num_heads(i), self.dense_head_dim(i))
            for i in range(self.num_layers)
        ]

    def check_matches(self, kind: str, shapes: list[tuple[int, int, int, int]]) -> None:
        """Raise :class:`PlanError` unless this plan was made for a model of this ``kind`` whose blocks have these
        dense ``shapes`` (residual width, MLP width, heads, head dim; what the slicer located). One check for
        every kind: the plan's side is :meth:`block_shapes`."""
        mine = self.block_shapes()
        if (self.kind(), mine) == (kind, list(shapes)):
            return
        if self.kind() != kind or len(mine) != len(shapes):
            where = (
                f"plan: a {self.kind()} model of {len(mine)} blocks, model: a {kind} model of {len(shapes)}"
            )
        else:
            i = next(i for i, (a, b) in enumerate(zip(mine, shapes)) if a != b)
            where = f"block {i} (residual width, MLP width, heads, head dim): plan {mine[i]}, model {tuple(shapes[i])}"
        raise PlanError(
            f"This WidthPlan was made for another model ({where}). Build the plan from this model's config "
            "(WidthPlan.full(model.config))."
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
