"""P3B -- Pruning by Block Benefit -- as soft-mask pruning during fine-tuning in a HF Trainer.

Pieces (one job each): :mod:`.gates` (masks + hooks + parameter counting), :mod:`.bpi` (block
performance indicator heads), :mod:`.estimator` (a head set + its ΔΨ window; shadow estimators),
:mod:`.budget` (block keep ratios), :mod:`.local` (Taylor ranks, soft
masks, threshold search), :mod:`.schedule`, :mod:`.state` (checkpointed state), :mod:`.pruner` (the
update / finalize engine) and :mod:`.plots`.

Configuration: :mod:`.config` (:class:`P3BConfig`); Trainer integration: :mod:`.trainer`
(:class:`P3BTrainer`, :class:`PruningCallback`); as a run-layer method: :mod:`.method`. Imports point one
way: config/engine <- trainer <- method.
"""

from __future__ import annotations

from .bpi import BPIHeads, BPITaps, PatchHead, per_head_ce
from .budget import block_importance, ema, gamma, ramp, solve_keep_ratios
from .config import P3BConfig, parse_gate_scales
from .estimator import BPIEstimator, make_shadow, parse_shadow_spec
from .fused_gates import install_fused_gates
from .gates import GATES, Dims, GateSet, block_params, install_gates, non_block_params, param_per_element
from .grouped_bpi import GroupedBPIHeads
from .local import (
    DEFAULT_GATE_SCALES,
    MASK_FLOOR,
    block_masks,
    rank_normalise,
    soft_mask_values,
    taylor_score,
)
from .pruner import P3BPruner
from .schedule import Schedule, default_phase_epochs
from .state import P3BState

__all__ = [
    "GATES",
    "Dims",
    "GateSet",
    "block_params",
    "install_gates",
    "non_block_params",
    "param_per_element",
    "BPIHeads",
    "BPITaps",
    "BPIEstimator",
    "make_shadow",
    "parse_shadow_spec",
    "GroupedBPIHeads",
    "install_fused_gates",
    "PatchHead",
    "per_head_ce",
    "gamma",
    "block_importance",
    "ema",
    "solve_keep_ratios",
    "ramp",
    "DEFAULT_GATE_SCALES",
    "block_masks",
    "rank_normalise",
    "soft_mask_values",
    "taylor_score",
    "P3BPruner",
    "Schedule",
    "default_phase_epochs",
    "P3BState",
    "P3BConfig",
    "parse_gate_scales",
    "MASK_FLOOR",
]
