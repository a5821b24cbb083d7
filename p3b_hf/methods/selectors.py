"""Scores -> :class:`~p3b_hf.plan.WidthPlan`: global ranking with Torch-Pruning's channel-ratio semantics,
a parameter-matched variant, and the cost of a plan computed from its would-be config.

Structures ("channels") of a ViT: the C embedding channels (one group for the whole network), the
d head dimensions of every layer (shared by all heads) and the F MLP neurons of every layer. Swin /
ConvNeXt: the head dimensions (Swin) and MLP neurons of every block; their embedding group is empty (the
residual channels are kept), so ``--ratio`` counts only those. Global
ranking concatenates the (group-normalised) scores of all of them; every channel counts as one,
whatever it costs -- exactly Torch-Pruning's ``global_pruning=True`` (see docs/baselines.md).
Every group keeps at least one channel, the embedding at least ``num_attention_heads`` (Torch-Pruning
instead silently skips a group that would be emptied, which can make a "pruned" layer keep *all*
its channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..cost import plan_cost
from ..errors import BudgetError, P3BError
from ..plan import LayerPlan, WidthPlan
from .budget_convert import neuron_params
from .importance import StructureScores


# ====================================================================== flat ranking
@dataclass
class _Flat:
    """All structures in one vector. Group 0 = embedding, 1..L = head dims, L+1..2L = MLP."""

    values: torch.Tensor  # [N] float32
    group: torch.Tensor  # [N] long
    sizes: list[int]
    scores: list[torch.Tensor]

    @classmethod
    def of(cls, s: StructureScores) -> _Flat:
        scores = [
            s.embed.float().cpu(),
            *[h.float().cpu() for h in s.head_dims],
            *[m.float().cpu() for m in s.mlp],
        ]
        sizes = [len(x) for x in scores]
        group = torch.cat([torch.full((n,), g, dtype=torch.long) for g, n in enumerate(sizes)])
        return cls(torch.cat(scores), group, sizes, scores)

    @property
    def num_layers(self) -> int:
        return (len(self.sizes) - 1) // 2

    def is_mlp(self) -> torch.Tensor:
        return self.group > self.num_layers


def _keep_group(
    scores: torch.Tensor, removed: torch.Tensor, round_to: int | None, min_keep: int
) -> list[int]:
    """Kept indices of one group: not removed, at least ``min_keep``, count rounded down to ``round_to``."""
    n = len(scores)
    k = int((~removed).sum())
    k = max(k, min(min_keep, n))
    if round_to and round_to > 1 and n >= round_to:
        k = max(round_to, (k // round_to) * round_to)
    if k == int((~removed).sum()):
        keep = (~removed).nonzero().flatten()
    else:  # the k best-scored channels (stable for ties: lower index first)
        keep = torch.argsort(-scores, stable=True)[:k]
    return sorted(int(i) for i in keep)


def _plan_from_removed(
    model: nn.Module, flat: _Flat, removed: torch.Tensor, round_to: int | None, min_keep: int = 1
) -> WidthPlan:
    plan = WidthPlan.full(model.config)
    keeps = []
    start = 0
    for g, n in enumerate(flat.sizes):
        # P3BViTConfig derives the dense head size as hidden_size // num_attention_heads: keep >= H channels
        floor = max(min_keep, plan.num_attention_heads) if g == 0 else min_keep
        keeps.append(_keep_group(flat.scores[g], removed[start : start + n], round_to, floor))
        start += n
    L = flat.num_layers

    def opt(keep: list[int], n: int) -> list[int] | None:
        return None if len(keep) == n else keep

    plan.embed = opt(keeps[0], flat.sizes[0])
    plan.layers = [
        LayerPlan(
            head_dims=opt(keeps[1 + i], flat.sizes[1 + i]), mlp=opt(keeps[1 + L + i], flat.sizes[1 + L + i])
        )
        for i in range(L)
    ]
    plan.validate()
    return plan


def _check_round_to(round_to: int | None) -> None:
    if round_to is not None and round_to < 1:
        raise P3BError(f"--round-to {round_to} is invalid; give a positive channel multiple such as 8.")


# ====================================================================== selectors
def global_channel_plan(
    model: nn.Module, scores: StructureScores, ratio: float, *, round_to: int | None = None
) -> WidthPlan:
    """Torch-Pruning's global channel ratio: remove ``N - int(N * (1 - ratio))`` of all N channels.

    Like ``BasePruner(global_pruning=True)``: the threshold is the n-th smallest score and every
    group drops the channels scoring ``<= threshold`` (ties go together); ``round_to`` then rounds
    each group's kept count down to a multiple (never below ``round_to``).
    """
    if not 0.0 <= ratio < 1.0:
        raise BudgetError(
            f"--ratio {ratio} is impossible: give the fraction of channels to remove in [0, 1), e.g. 0.5."
        )
    _check_round_to(round_to)
    flat = _Flat.of(scores)
    n_total = len(flat.values)
    n_pruned = n_total - int(n_total * (1 - ratio))
    removed = torch.zeros(n_total, dtype=torch.bool)
    if n_pruned > 0:
        thres = torch.topk(flat.values, k=n_pruned, largest=False).values[-1]
        removed = flat.values <= thres
    plan = _plan_from_removed(model, flat, removed, round_to)
    plan.meta.update(selector="global_channel_ratio", channel_ratio=ratio, round_to=round_to)
    return plan


def param_matched_plan(
    model: nn.Module, scores: StructureScores, target_params: int, *, round_to: int | None = None
) -> WidthPlan:
    """Global ranking pruned until the whole model has ``target_params`` parameters.

    Channels are removed in ascending score order (a prefix of the global ranking); bisection on
    :func:`plan_cost` finds the longest prefix that stays above the target. Without ``round_to``
    the remainder is taken from the next-ranked MLP neurons (the cheapest structures, 2C'+1 params
    each), so the result lands at most one MLP neuron below the target. With ``round_to`` the
    prefix whose rounded plan is closest to the target is used (precision = the rounding step).
    """
    _check_round_to(round_to)
    flat = _Flat.of(scores)
    order = torch.argsort(flat.values, stable=True)
    n_total = len(order)
    dense = plan_cost(model, WidthPlan.full(model.config))["params"]

    def removed_prefix(k: int) -> torch.Tensor:
        r = torch.zeros(n_total, dtype=torch.bool)
        r[order[:k]] = True
        return r

    def params(k: int) -> int:
        return plan_cost(model, _plan_from_removed(model, flat, removed_prefix(k), round_to))["params"]

    if target_params >= dense:
        raise BudgetError(
            f"Target of {target_params:,} params is not below the dense model's {dense:,}; give a "
            "smaller --target-params or a --prune-ratio > 0."
        )
    floor = params(n_total)
    if target_params < floor:
        raise BudgetError(
            f"Target of {target_params:,} params is unreachable: keeping one channel per group "
            f"already needs {floor:,} (classifier, embeddings, norms). Give a larger target."
        )
    lo, hi = 0, n_total  # params(lo) > target >= params(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) > target_params:
            lo = mid
        else:
            hi = mid
    if round_to and round_to > 1:
        k = lo if abs(params(lo) - target_params) < abs(params(hi) - target_params) else hi
        plan = _plan_from_removed(model, flat, removed_prefix(k), round_to)
    else:
        k = lo
        removed = removed_prefix(lo)
        plan = _plan_from_removed(model, flat, removed, None)
        # an MLP neuron costs 2C+1 (fc1 row + bias, fc2 column), C = the width its layer / block reads; a gated
        # MLP's (gate row + bias, up row + bias, down column) 3C+2
        c_kept = len(plan.embed) if plan.embed is not None else plan.hidden_size
        width = torch.tensor(
            [plan.out_width(i) if plan.hierarchical else c_kept for i in range(plan.num_layers)]
        )
        rest = order[lo:]
        mlp_rest = rest[flat.is_mlp()[rest]]
        w = width[flat.group[mlp_rest] - 1 - flat.num_layers]
        cost = neuron_params(model.config, w)
        excess = plan_cost(model, plan)["params"] - target_params
        need = int(torch.searchsorted(cost.cumsum(0), torch.tensor(excess))) + 1 if excess > 0 else 0
        removed[mlp_rest[:need]] = True
        filled = _plan_from_removed(model, flat, removed, None)
        if plan_cost(model, filled)["params"] <= target_params:  # else a layer hit min_keep: fall back
            plan = filled
        else:
            plan = _plan_from_removed(model, flat, removed_prefix(hi), None)
            k = hi
    plan.meta.update(
        selector="param_matched",
        target_params=int(target_params),
        round_to=round_to,
        channel_ratio=k / n_total,
    )
    return plan


def kept_counts(plan: WidthPlan) -> dict[str, Any]:
    """Per-group kept counts, for reports: ``{"embed": C', "head_dims": [...], "mlp": [...]}``."""
    return {
        "embed": len(plan.embed) if plan.embed is not None else plan.hidden_size,
        "head_dims": [plan.kept(i)["head_dim"] for i in range(plan.num_layers)],
        "mlp": [plan.kept(i)["mlp"] for i in range(plan.num_layers)],
    }
