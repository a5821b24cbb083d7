"""How each method spends a latency budget (docs/latency.md), on top of its own ranking.

* P3B (:class:`P3BLatencyCost`): the budget step weighs every block's *remaining latency* where it weighs
  remaining parameters (importance per remaining ms, the clipped proportional solver over block latencies
  with the rest of the model as the non-block share), and each block's latency keep ratio becomes the
  parameter keep ratio of the widest block that fits it on the latency model's step curve -- the local
  (within-block) step is P3B's own.
* Global pruning (:func:`latency_matched_plan`): HALP's rule -- every channel's score divided by its
  latency cost (the latency model's ms per channel of its group), one global ranking, the shortest prefix
  whose predicted latency meets the target.
* VBP (:func:`vbp_latency_removed`): VBP's own variance ranking, the fewest lowest-variance neurons whose
  removal meets the target.

Measured closed loop (:func:`measured_loop`): global pruning and VBP fix the architecture before training, so
the deployed artefact of their plan can be timed against the dense model right away (the budget's ``meter``).
When it misses the target by more than :data:`LOOP_TOLERANCE`, the method plans again, asking the latency
model for the target corrected by the plan's measured / predicted speed-up, at most :data:`LOOP_ROUNDS` times,
and keeps the plan that measured closest. P3B's architecture emerges during training; it has no such loop.

Widths: the latency model says a width just past a kernel step costs the next multiple; global and VBP
therefore give every group back the best of its removed channels up to that multiple (free by the model),
and P3B's block targets land on step tops. No ``--round-to`` is needed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import BudgetError
from ..latency import LatencyBudget, Structure
from ..latency.model import round_up
from ..plan import WidthPlan
from ..slicing import pruned_config

logger = logging.getLogger(__name__)

#: the closed loop accepts a plan whose measured speed-up is within this fraction of the target
LOOP_TOLERANCE = 0.05
#: measured re-plans after the first plan (0: open loop)
LOOP_ROUNDS = 2

T = TypeVar("T")


def measured_loop(
    budget: LatencyBudget, plan_for: Callable[[LatencyBudget], T], model_of: Callable[[T], nn.Module]
) -> tuple[T, list[dict[str, float]]]:
    """Plan at ``budget``, measure the plan's deployed model (``budget.meter``), and re-plan with the target
    the latency model is asked for corrected by measured / predicted speed-up until the measurement is within
    :data:`LOOP_TOLERANCE` of the target (at most :data:`LOOP_ROUNDS` re-plans). Returns the plan that
    measured closest to the target and every round's ``{asked, predicted, achieved}``. Without a meter:
    the open-loop plan and no rounds."""
    if budget.meter is None or LOOP_ROUNDS <= 0:
        return plan_for(budget), []
    goal = budget.target_speedup
    ask, rounds, best = budget, [], None
    for _ in range(1 + LOOP_ROUNDS):
        try:
            plan = plan_for(ask)
        except BudgetError:
            if best is None:
                raise
            break  # the corrected ask is beyond what the method can reach: keep the best measured plan
        pruned = model_of(plan)
        predicted = budget.predicted_speedup(pruned.config)
        achieved = float(budget.meter(pruned))
        rounds.append({"asked": ask.target_speedup, "predicted": predicted, "achieved": achieved})
        logger.info(
            "latency loop: asked the model for %.3fx, predicted %.3fx, measured %.3fx (target %.3fx)",
            ask.target_speedup,
            predicted,
            achieved,
            goal,
        )
        if best is None or abs(achieved / goal - 1) < abs(best[1] / goal - 1):
            best = (plan, achieved)
        if abs(achieved / goal - 1) <= LOOP_TOLERANCE:
            break
        # the model's error on this plan (measured / predicted) is assumed to hold near it
        nxt = goal * predicted / max(achieved, 1e-9)
        nxt = min(max(nxt, goal / 1.5, 1.0 + 1e-6), goal * 1.5)
        if abs(nxt - ask.target_speedup) < 1e-3 * goal:
            break
        ask = budget.at(nxt)
    return best[0], rounds


def _step(budget: LatencyBudget, s: Structure) -> int:
    curve = budget.curve_of(s)
    return max(curve.step, curve.deploy_round)


def _unreachable(budget: LatencyBudget, best_ms: float, what: str) -> BudgetError:
    return BudgetError(
        f"A {budget.target_speedup:.2f}x speed-up ({budget.target_ms:.3f} ms) is unreachable with {what}: "
        f"removing everything it can remove is predicted at {best_ms:.3f} ms "
        f"({budget.dense_ms / max(best_ms, 1e-12):.2f}x). Give a smaller --target-speedup"
        + (", or --method global / p3b (they also prune attention)." if what.startswith("VBP") else ".")
    )


# ====================================================================== P3B
class P3BLatencyCost:
    """P3B's budget step in milliseconds (module docstring). Blocks in P3B's order: attn0, mlp0, attn1, ..."""

    def __init__(self, budget: LatencyBudget, dims: Any) -> None:
        self.budget, self.dims = budget, dims
        self.structs = budget.structures()
        if len(self.structs) != 2 * dims.layers:
            raise BudgetError("P3B's latency budget needs a plain ViT (an attention and an MLP per layer).")
        self.full = torch.tensor(budget.model.block_ms(self.structs), dtype=torch.float64)
        self.non_block = float(budget.model.rest_at(1.0))  # P3B keeps the residual stream whole
        #: the fraction of the model's predicted latency (blocks + rest) the target keeps
        self.keep = budget.target_ms / (float(self.full.sum()) + self.non_block)

    def remaining(self, kept: list[dict[str, int]]) -> torch.Tensor:
        """Predicted ms of every block at the kept gate counts (head dims ``attn_qkv``, neurons ``mlp_hid``)."""
        widths = [w for layer in kept for w in (layer["attn_qkv"], layer["mlp_hid"])]
        structs = [dataclasses.replace(s, width=int(w)) for s, w in zip(self.structs, widths)]
        return torch.tensor(self.budget.model.block_ms(structs), dtype=torch.float64)

    def widths(self, kappa: torch.Tensor) -> list[int]:
        """The widest width of every block whose predicted latency fits ``kappa * full`` (0 = the block goes)."""
        model = self.budget.model
        out = []
        for s, k, full in zip(self.structs, kappa.tolist(), self.full.tolist()):
            target = k * full + 1e-12
            w = s.full
            while w > 0 and model.scale_of(s.kind) * model.curves[s.curve].ms(w, s.c) > target:
                w -= 1
            out.append(w)
        return out

    def param_keep(self, kappa: torch.Tensor, latency_per_param: torch.Tensor | None = None) -> torch.Tensor:
        """Latency keep ratios -> P3B's parameter keep ratios (residual reads / writes counted full).

        ``latency_per_param``: per block, the latency keep the current masks give divided by their parameter
        keep. P3B's local step also cuts residual reads / writes, which the deployed module does not skip, so a
        block keeps more latency than parameters (> 1); the next parameter target is divided by it (clamped
        to [0.5, 2]), closing the loop on what the masks actually deliver."""
        from .p3b.gates import attn_linear_params, mlp_linear_params

        d = self.dims
        ln = 2 * d.hidden
        out = []
        for i, w in enumerate(self.widths(kappa)):
            if i % 2 == 0:
                full = attn_linear_params(d, d.hidden, d.head_dim, d.hidden) + ln + d.attn_extra
                kept = attn_linear_params(d, d.hidden, w, d.hidden) + ln + d.attn_extra if w else 0
            else:
                full = mlp_linear_params(d, d.hidden, d.mlp, d.hidden) + ln + d.mlp_extra
                kept = mlp_linear_params(d, d.hidden, w, d.hidden) + ln + d.mlp_extra if w else 0
            out.append(float(kept) / float(full))
        keep = torch.tensor(out, dtype=torch.float64, device=kappa.device)
        if latency_per_param is not None:
            keep = (keep / latency_per_param.to(keep).clamp(0.5, 2.0)).clamp(0.0, 1.0)
        return keep


# ====================================================================== global pruning
def _predict_plan(model: nn.Module, budget: LatencyBudget, plan: WidthPlan) -> float:
    from ..models.families import stage_family_of_config
    from ..models.locator import locate

    if stage_family_of_config(model.config) is not None:
        return budget.predict(pruned_config(model.config, plan))
    distill = "distillation_classifier" in locate(model).heads
    return budget.predict(pruned_config(model.config, plan, distillation_head=distill))


def channel_costs(budget: LatencyBudget, sizes: list[int]) -> list[float]:
    """Predicted ms per channel of every selector group (embedding, head dims per layer, MLP per layer): the
    fitted slope of its block's curve (an embedding channel: its share of every block that reads it)."""
    structs = budget.structures()
    attn = [s for s in structs if s.kind == "attn"]
    mlp = [s for s in structs if s.kind == "mlp"]
    n = (len(sizes) - 1) // 2
    scale = budget.model.scale_of
    costs = [0.0] * len(sizes)
    embed = 0.0
    for s in structs:
        curve = budget.curve_of(s)
        embed += scale(s.kind) * max(
            0.0, curve.coef[1] * round_up(s.width, max(curve.step, curve.deploy_round)) + curve.coef[3]
        )
    costs[0] = max(embed / max(structs[0].c_full, 1), 1e-12) if structs else 1.0
    for i in range(n):
        if sizes[1 + i] and len(attn) == n:  # one channel = one head dim of every head of the layer
            costs[1 + i] = scale(attn[i].kind) * budget.curve_of(attn[i]).slope()
        costs[1 + n + i] = scale(mlp[i].kind) * budget.curve_of(mlp[i]).slope()
    return costs


def latency_matched_plan(model: nn.Module, scores: Any, budget: LatencyBudget) -> WidthPlan:
    """Global pruning under a latency budget: rank every channel by score / latency cost (HALP), take the
    shortest prefix of that ranking whose plan's predicted latency meets ``budget.target_ms``, then give
    every group back its best removed channels up to the kernel step (free by the latency model)."""
    from ..latency.model import min_residual
    from .selectors import _Flat, _plan_from_removed

    flat = _Flat.of(scores)
    costs = torch.tensor(channel_costs(budget, flat.sizes), dtype=torch.float64)
    per_latency = flat.values.double() / costs[flat.group]
    order = torch.argsort(per_latency, stable=True)
    # the residual stream is never cut below the smallest width the model was timed at (no extrapolation):
    # its best-scored channels are not candidates
    c_floor = min(flat.sizes[0], min_residual(budget.model)) if flat.sizes[0] else 0
    if c_floor:
        protected = torch.argsort(-flat.scores[0], stable=True)[:c_floor]
        order = order[~torch.isin(order, protected)]
    n_total = len(order)

    def removed_prefix(k: int) -> torch.Tensor:
        r = torch.zeros(len(flat.values), dtype=torch.bool)
        r[order[:k]] = True
        return r

    def latency(k: int) -> float:
        return _predict_plan(model, budget, _plan_from_removed(model, flat, removed_prefix(k), None))

    floor = latency(n_total)
    if floor > budget.target_ms:
        raise _unreachable(budget, floor, "global pruning")
    lo, hi = 0, n_total  # latency(lo) > target >= latency(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if latency(mid) > budget.target_ms:
            lo = mid
        else:
            hi = mid
    removed = removed_prefix(hi)
    # free rounding: each group's kept count up to its block's step (the best-scored removed channels)
    structs = budget.structures()
    attn = [s for s in structs if s.kind == "attn"]
    mlp = [s for s in structs if s.kind == "mlp"]
    n = flat.num_layers
    start = 0
    for g, size in enumerate(flat.sizes):
        s = None
        if 1 <= g <= n and len(attn) == n:
            s = attn[g - 1]
        elif g > n:
            s = mlp[g - 1 - n]
        part = removed[start : start + size]
        kept = int((~part).sum())  # 0: the selector keeps the best one anyway (min_keep)
        if s is not None and kept < size:
            want = min(size, round_up(max(kept, 1), _step(budget, s)))
            back = [int(i) for i in torch.argsort(-flat.scores[g], stable=True) if bool(part[int(i)])]
            for i in back[: want - kept]:
                part[i] = False
            removed[start : start + size] = part
        start += size
    plan = _plan_from_removed(model, flat, removed, None)
    predicted = _predict_plan(model, budget, plan)
    plan.meta.update(
        selector="latency_matched",
        target_ms=budget.target_ms,
        target_speedup=budget.target_speedup,
        predicted_ms=predicted,
        predicted_speedup=budget.dense_ms / predicted,
        channel_ratio=int(removed.sum()) / len(flat.values),
        residual_floor=c_floor,
    )
    return plan


# ====================================================================== VBP
def vbp_latency_removed(
    budget: LatencyBudget, widths: list[int], order: torch.Tensor, n_candidates: int, var: list[torch.Tensor]
) -> torch.Tensor:
    """VBP under a latency budget: the removed-neuron mask (over all blocks' MLP neurons, concatenated) of the
    fewest lowest-variance candidates (``order``) whose removal meets the target; then every block keeps its
    highest-variance removed neurons up to its MLP curve's step (free by the latency model)."""
    structs = budget.structures()
    mlp_idx = [i for i, s in enumerate(structs) if s.kind == "mlp"]
    if len(mlp_idx) != len(widths):
        raise BudgetError("VBP's latency budget: the model's MLP blocks do not match the latency model's.")
    block_of = torch.cat([torch.full((f,), b, dtype=torch.long) for b, f in enumerate(widths)])

    def predict(kept: list[int]) -> float:
        st = list(structs)
        for b, i in enumerate(mlp_idx):
            st[i] = dataclasses.replace(st[i], width=int(kept[b]))
        return budget.model.predict_structs(st)

    def kept_after(k: int) -> list[int]:
        gone = torch.bincount(block_of[order[:k]], minlength=len(widths))
        return [f - int(g) for f, g in zip(widths, gone.tolist())]

    floor = predict(kept_after(n_candidates))
    if floor > budget.target_ms:
        raise _unreachable(budget, floor, "VBP (it prunes MLP neurons only)")
    lo, hi = 0, n_candidates
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predict(kept_after(mid)) > budget.target_ms:
            lo = mid
        else:
            hi = mid
    removed = torch.zeros(len(block_of), dtype=torch.bool)
    removed[order[:hi]] = True
    start = 0
    for b, (f, i) in enumerate(zip(widths, mlp_idx)):
        part = removed[start : start + f]
        kept = int((~part).sum())
        want = min(f, round_up(max(kept, 1), _step(budget, structs[i])))
        back = [int(j) for j in torch.argsort(-var[b], stable=True) if bool(part[int(j)])]
        for j in back[: want - kept]:
            part[j] = False
        removed[start : start + f] = part
        start += f
    return removed
