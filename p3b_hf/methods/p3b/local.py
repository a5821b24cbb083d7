"""Local (intra-block) importance and soft masks (docs/p3b.md §4-§5.2).

* Taylor score ``(m · dL/dm)^2`` of every gate element, averaged over a window of optimizer steps.
* Rank normalisation per gate: ``Î_j = s_g · rank_g(j) / n_g`` (stable sort; ranks 1..n_g).
* The block's gates are concatenated (attn: in, out, qkv; mlp: in, out, hid) and stably sorted by Î.
* A cut ``p`` (elements at sorted positions < p are pruned) is chosen so that the hard kept Linear
  count is closest to the block's goal; the kept count of *every* cut is computed in closed form, so
  this is an exact arg-min (the reference's fixed-point loop / a binary search find the same cut).
* Soft mask ``M(r) = σ(ln(M_ref/(1-M_ref)) · (r - t) / (n·τ + 1e-8))`` with rank r = 1..n and threshold
  rank ``t = p + 1``: the first kept element gets 0.5, rank t ± τn gets 0.9 / 0.1; τ = 0 is a hard step.
* Mask floor: values below :data:`MASK_FLOOR` become exactly 0. Late in a run τ is tiny and the sigmoid
  gives values like 1e-37 just below the threshold; ``weight * mask`` is then a *subnormal* float32, and
  x86 GEMMs on subnormal operands run 2-150x slower (CPU-dependent). Above the floor nothing changes;
  below it a channel contributes exactly nothing instead of less than a millionth of its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .gates import Dims, attn_linear_params, mlp_linear_params

M_REF = 0.9
#: soft-mask values below this are set to exactly 0 (no subnormal products; see the module docstring)
MASK_FLOOR = 1e-6
DEFAULT_GATE_SCALES: dict[str, float] = {
    "attn_in": 1.0,
    "attn_qkv": 1.0,
    "attn_out": 1.5,
    "mlp_in": 1.0,
    "mlp_hid": 0.75,
    "mlp_out": 1.5,
}


def taylor_score(mask: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Molchanov et al.'s criterion 22: ``(m · dL/dm)^2`` (float64 for stable accumulation)."""
    return (mask.detach().double() * grad.detach().double()) ** 2


def rank_normalise(scores: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale · rank / n`` with ranks 1..n by ascending score (ties keep index order: stable sort)."""
    n = scores.numel()
    order = torch.sort(scores.double(), stable=True).indices
    ranks = torch.empty(n, dtype=torch.float64, device=scores.device)
    ranks[order] = torch.arange(1, n + 1, dtype=torch.float64, device=scores.device)
    return scale * ranks / n


def soft_mask_values(
    n: int,
    threshold_rank: float,
    tau: float,
    device: torch.device | None = None,
    m_ref: float = M_REF,
    floor: float = 0.0,
) -> torch.Tensor:
    """Mask value of sorted ranks 1..n (ascending importance) for a threshold rank ``t``; values below
    ``floor`` are exactly 0."""
    r = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    k = math.log(m_ref / (1.0 - m_ref))
    values = torch.sigmoid(k * (r - threshold_rank) / (n * tau + 1e-8))
    return values.masked_fill(values < floor, 0.0) if floor > 0 else values


def _gate_counts(gate_of_sorted: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Kept count of each gate for every cut ``p = 0..n`` (elements at sorted positions < p pruned)."""
    n = gate_of_sorted.numel()
    counts = []
    for g, size in enumerate(sizes):
        removed = torch.zeros(n + 1, dtype=torch.float64, device=gate_of_sorted.device)
        removed[1:] = torch.cumsum((gate_of_sorted == g).double(), 0)
        counts.append(size - removed)
    return counts


def _kept(d: Dims, kind: str, c: Sequence[torch.Tensor]) -> torch.Tensor:
    if kind == "attn":  # order: in, out, qkv
        return attn_linear_params(d, c[0], c[2], c[1])
    return mlp_linear_params(d, c[0], c[2], c[1])  # order: in, out, hid


def kept_params_per_cut(
    d: Dims, kind: str, gate_of_sorted: torch.Tensor, sizes: Sequence[int]
) -> torch.Tensor:
    """Hard kept Linear parameters for every cut ``p = 0..n`` (elements at sorted positions < p pruned).

    ``gate_of_sorted[k]`` is the gate index (0..2 in :data:`BLOCK_GATES` order) of sorted element k.
    """
    return _kept(d, kind, _gate_counts(gate_of_sorted, sizes))


def best_cut(kept: torch.Tensor, goal: float) -> int:
    """The cut whose kept count is closest to ``goal`` (ties: fewer pruned elements)."""
    return int(torch.argmin((kept - goal).abs()).item())


def block_masks(
    d: Dims,
    kind: str,
    scores: Sequence[torch.Tensor],
    scales: Sequence[float],
    keep: float,
    tau: float,
    exact: bool = True,
    tol: float = 0.0025,
    floor: float = MASK_FLOOR,
) -> tuple[list[torch.Tensor], int, float]:
    """New soft masks of one sub-block's three gates (in :data:`BLOCK_GATES` order).

    ``scores``: mean Taylor scores per gate; ``keep``: applied keep ratio of the block's Linear parameters.
    One attention head-dim element costs ``3H·a + H·o`` parameters (1.5 % of a DeiT-S attention block), so
    a pure threshold can miss the goal by up to 0.75 %. With ``exact`` (clean default) and a miss above
    ``tol`` of the block, the head-dim gate may keep one element more or fewer than the threshold gives
    (still its top-ranked ones; that element's mask is mirrored across 0.5). ``exact=False`` is the
    reference's pure threshold. Mask values below ``floor`` are exactly 0 (0 = the plain sigmoid).
    Returns ``(masks, cut, kept_linear_params)``.
    """
    sizes = [s.numel() for s in scores]
    normed = torch.cat([rank_normalise(s, sc) for s, sc in zip(scores, scales)])
    gate_id = torch.cat(
        [torch.full((n,), g, dtype=torch.long, device=normed.device) for g, n in enumerate(sizes)]
    )
    order = torch.sort(normed, stable=True).indices
    counts = _gate_counts(gate_id[order], sizes)
    kept = _kept(d, kind, counts)
    goal = keep * float(kept[0])
    cut = best_cut(kept, goal)
    delta, kept_cut = 0, float(kept[cut])
    if exact and kind == "attn" and abs(kept_cut - goal) > tol * float(kept[0]):
        for dq in (-1, 1):
            q = counts[2] + dq
            ok = (q >= 0) & (q <= sizes[2])
            alt = torch.where(
                ok, _kept(d, kind, [counts[0], counts[1], q]), torch.full_like(kept, float("inf"))
            )
            p = best_cut(alt, goal)
            if abs(float(alt[p]) - goal) < abs(kept_cut - goal):
                cut, delta, kept_cut = p, dq, float(alt[p])
    values = soft_mask_values(normed.numel(), cut + 1, tau, device=normed.device, floor=floor)
    flat = torch.empty_like(values)
    flat[order] = values
    masks = list(torch.split(flat, sizes))
    if delta:
        _shift_gate(masks[2], scores_rank=normed[sum(sizes[:2]) :], delta=delta, floor=floor)
    return masks, cut, kept_cut


def _shift_gate(mask: torch.Tensor, scores_rank: torch.Tensor, delta: int, floor: float = 0.0) -> None:
    """Keep one more (``delta=+1``: best pruned element) or one fewer (``-1``: worst kept element) in a
    gate by mirroring that element's mask value across 0.5 (a mirrored value below ``floor`` is 0)."""
    kept = mask >= 0.5
    if delta > 0:
        cand = (~kept).nonzero().flatten()
        j = cand[torch.argmax(scores_rank[cand])]
        mask[j] = max(1.0 - float(mask[j]), 0.5)
    else:
        cand = kept.nonzero().flatten()
        j = cand[torch.argmin(scores_rank[cand])]
        value = min(1.0 - float(mask[j]), math.nextafter(0.5, 0.0))
        mask[j] = 0.0 if value < floor else value
