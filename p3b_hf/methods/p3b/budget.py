"""Block keep ratios from ΔΨ (docs/p3b.md §3): γ smoothing, importance per remaining parameter, EMA, α-merge,
the clipped proportional budget solver with redistribution, and the linear ramp.

Everything here is deterministic float64 torch code on small vectors, so every rank computes the same
result from the same (all-reduced) inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import BudgetError

SOFTPLUS_FACTOR = 1.4
EPS = 1e-6
MAX_SOLVER_ROUNDS = 20


def gamma(x: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """``SP(1.4 s x) - SP(1.4 s x - s)``: a soft clip of the normalised benefit to (0, s).

    γ(0) = ln 2, γ(1) ≈ 9.98 for s = 10: a zero-benefit block keeps ~7 % of the top score.
    """
    x = x.double()
    return F.softplus(SOFTPLUS_FACTOR * scale * x) - F.softplus(SOFTPLUS_FACTOR * scale * x - scale)


def block_importance(
    dpsi: torch.Tensor, remaining: torch.Tensor, scale: float = 10.0, guard: bool = True
) -> torch.Tensor:
    """Importance per remaining parameter, mean-normalised: ``I = γ(ΔΨ/max ΔΨ) / |w_b|``, ``I /= mean I``.

    ``guard`` (clean default): if ``max ΔΨ <= 0`` (no block helps, or no data yet) the benefits are
    normalised by ``max |ΔΨ|`` instead (all-zero ΔΨ -> equal benefit), rather than flipping signs or
    dividing by zero as the reference does.
    """
    dpsi = dpsi.double()
    top = dpsi.max()
    if guard and not bool(top > 0):
        top = dpsi.abs().max()
        x = dpsi / top if bool(top > 0) else torch.zeros_like(dpsi)
    else:
        x = dpsi / top
    imp = gamma(x, scale) / (remaining.double() + EPS)
    return imp / imp.mean()


def ema(new: torch.Tensor, prev: torch.Tensor | None, weight_new: float) -> torch.Tensor:
    """``w·new + (1-w)·prev``; the first update uses the raw value."""
    return new if prev is None else weight_new * new + (1.0 - weight_new) * prev


def solve_keep_ratios(
    importance: torch.Tensor, full: torch.Tensor, non_block: float, keep_ratio: float, guard: bool = True
) -> torch.Tensor:
    """Per-block keep ratios κ ∈ [0, 1] with ``Σ κ_b |W_b| + P_nb = keep_ratio · (Σ |W_b| + P_nb)``.

    κ ∝ importance, scaled proportionally; blocks pushed above 1 become dense (κ=1), blocks at or below 0
    dead (κ=0), and the clipped excess is redistributed over the remaining free blocks (≤ 20 rounds).
    ``guard``: stop cleanly when no free block is left instead of computing 0/0.
    """
    imp, full = importance.double(), full.double()
    target = keep_ratio * (float(full.sum()) + non_block) - non_block
    if target < -1e-6:
        raise BudgetError(
            f"Keep ratio {keep_ratio:.4f} leaves {target:.0f} parameters for the blocks: the "
            f"non-block parameters ({non_block:.0f}) alone exceed it. Use a smaller prune ratio."
        )
    kappa = imp.clone()
    dense = torch.zeros_like(kappa, dtype=torch.bool)
    dead = kappa <= 0
    for _ in range(MAX_SOLVER_ROUNDS + 1):
        kappa[dead] = 0.0
        kappa[dense] = 1.0
        free = ~(dense | dead)
        denom = float((kappa[free] * full[free]).sum())
        if guard and (not bool(free.any()) or denom <= 0):
            break
        kappa[free] = kappa[free] * (target - float(full[dense].sum())) / denom
        if not bool(((kappa > 1) | (kappa < 0)).any()):
            break
        dense |= kappa >= 1
        dead |= kappa <= 0
    else:
        raise BudgetError(
            "The P3B budget solver did not converge in 20 rounds; report this with your config."
        )
    return kappa.clamp(0.0, 1.0)


def ramp(kappa: torch.Tensor, rho: float) -> torch.Tensor:
    """Applied ratio ``1 - (1 - κ)·ρ``: the target is reached linearly over the sparsify phase."""
    return 1.0 - (1.0 - kappa) * rho
