"""A BPI *estimator*: one set of BPI heads with its cost settings and its own ΔΨ window / EMA state.

Every P3B run has one estimator that drives the masks (the pruner's own heads and state). A run may carry
extra **shadow** estimators (``P3BConfig.bpi_shadows``): heads with the same initial weights, trained on
the same micro-batches of the same run, each with its own sub-batch / period, whose ΔΨ windows go
through the same importance -> EMA -> budget solver pipeline with the driving run's remaining parameter
counts. Nothing a shadow computes reaches the masks. At every mask update the history records the block
keep ratios each shadow *would* have chosen, so a cheap BPI setting can be compared with the reference
setting on the same training trajectory -- the estimator's own error, without the chaotic divergence of
two separate runs (where a different mask at one update changes every later batch's gradients).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import P3BError
from .bpi import BPITaps
from .grouped_bpi import GroupedBPIHeads
from .state import P3BState


def parse_shadow_spec(spec: str) -> tuple[float, int, int | None]:
    """``"SUB:EVERY[:SEED]"`` -> (sub-batch, every, head seed or None).

    ``"0.0625:1"``, ``"0.25:4"`` (``":EVERY"`` may be left out). With ``SEED`` the shadow's heads are freshly
    initialised from that seed instead of copying the driver's initial heads: ``"1:1:1"`` is the
    reference setting with other initial heads, i.e. how much the reference estimator itself varies on
    the same run (the noise floor of the comparison).
    """
    parts = str(spec).split(":")
    try:
        if len(parts) > 3:
            raise ValueError(spec)
        f = float(parts[0])
        k = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        seed = int(parts[2]) if len(parts) > 2 else None
    except ValueError as e:
        raise P3BError(
            f"BPI shadow {spec!r} is not 'SUBBATCH:EVERY[:SEED]' (e.g. 0.0625:1, 0.25:4 or 1:1:1)."
        ) from e
    if not 0.0 < f <= 1.0 or k < 1:
        raise P3BError(f"BPI shadow {spec!r}: the sub-batch must be in (0, 1] and EVERY an integer >= 1.")
    return f, k, seed


@dataclass
class BPIEstimator:
    """Heads + cost settings + window state. The driving estimator shares the pruner's :class:`P3BState`."""

    name: str
    heads: BPITaps
    subbatch: float
    every: int
    state: P3BState

    def patch_rows(self, batch: int, forward_index: int) -> int | None:
        """Rows the patch heads score on training forward ``forward_index``: 0 on skipped forwards
        (``every``), else ``ceil(subbatch x batch)`` leading samples (None = the whole batch)."""
        if forward_index % self.every:
            return 0
        return None if self.subbatch >= 1.0 else max(1, math.ceil(self.subbatch * batch))

    def record(self, ce_cls: torch.Tensor, ce_patch: torch.Tensor | None) -> None:
        """Add one micro-batch's ``CE_in - CE_out`` per block (``ce_*``: ``[2L, 2]`` batch-mean CEs; the
        patch part only when the patch heads ran)."""
        with torch.no_grad():  # a block, not a decorator: mutmut skips decorated functions
            st = self.state
            st.dpsi_cls_sum += (ce_cls[:, 0] - ce_cls[:, 1]).double().to(st.dpsi_cls_sum.device)
            st.dpsi_cls_count += 1
            if ce_patch is not None:
                st.dpsi_patch_sum += (ce_patch[:, 0] - ce_patch[:, 1]).double().to(st.dpsi_patch_sum.device)
                st.dpsi_count += 1


def make_shadow(
    driver: BPITaps,
    index: int,
    spec: str,
    num_blocks: int,
    full: torch.Tensor,
    new_heads: Callable[[], BPITaps] | None = None,
) -> BPIEstimator:
    """A shadow estimator whose heads start from exactly the driver's current (initial) weights, or --
    with a seed in ``spec`` -- from ``new_heads()`` called under ``torch.manual_seed(seed)`` (the global
    RNG state is restored afterwards, so the driving run is unchanged)."""
    subbatch, every, seed = parse_shadow_spec(spec)
    if seed is None:
        heads = (
            copy.deepcopy(driver)
            if isinstance(driver, GroupedBPIHeads)
            else GroupedBPIHeads.from_heads(driver)
        )
    else:
        if new_heads is None:
            raise P3BError(
                f"BPI shadow {spec!r} asks for new heads (seed {seed}) but no head factory was given."
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = new_heads()
        heads = fresh if isinstance(fresh, GroupedBPIHeads) else GroupedBPIHeads.from_heads(fresh)
        heads.frozen_bn = driver.frozen_bn
        heads = heads.to(next(driver.parameters()).device)
    heads.active, heads.patch_rows, heads._taps = False, None, []
    heads.output_key = f"p3b_shadow{index}"
    return BPIEstimator(str(spec), heads, subbatch, every, P3BState.fresh(num_blocks, 0, full))


def shadow_abs_diffs(updates: list[dict[str, Any]], name: str) -> list[tuple[int, list[float]]]:
    """``(step, |κ_shadow - κ_driver| per block)`` of shadow ``name`` at every mask update that recorded it."""
    return [
        (u["step"], [abs(a - b) for a, b in zip(u["shadows"][name]["keep_target"], u["keep_target"])])
        for u in updates
        if name in (u.get("shadows") or {}) and u.get("phase") != "finalize_reselect"
    ]


def shadow_summary(
    updates: list[dict[str, Any]], sharpening_from: int | None = None
) -> dict[str, dict[str, Any]]:
    """Per shadow: ``|κ_shadow - κ_driver|`` per block at the last mask update (``final_*``) and the worst
    such difference over the updates from step ``sharpening_from`` on (the full-ratio phase; None = all).
    ``updates``: ``history["updates"]`` of a run with ``bpi_shadows``."""
    rows = [u for u in updates if u.get("shadows") and u.get("phase") != "finalize_reselect"]
    if not rows:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in rows[-1]["shadows"]:
        per_update = shadow_abs_diffs(rows, name)
        diffs = [d for _, d in per_update]
        late = [d for step, d in per_update if sharpening_from is None or step >= sharpening_from] or diffs
        out[name] = {
            "final_abs_diff": diffs[-1],
            "final_max_abs_diff": max(diffs[-1]),
            "final_mean_abs_diff": sum(diffs[-1]) / len(diffs[-1]),
            "max_abs_diff_after_sparse": max(max(d) for d in late),
            "final_keep_target": rows[-1]["shadows"][name]["keep_target"],
            "updates": len(diffs),
        }
    return out
