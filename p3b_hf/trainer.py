"""Compatibility home of the P3B Trainer API: ``from p3b_hf.trainer import P3BTrainer, P3BConfig,
PruningCallback`` keeps working. P3B lives in :mod:`p3b_hf.methods.p3b` (config, trainer, engine)."""

from .methods.p3b.config import BPI_MODES, FAST_BPI_EVERY, FAST_BPI_SUBBATCH, GATE_MODES, P3BConfig
from .methods.p3b.trainer import P3BTrainer, PruningCallback, recipe_departures

__all__ = [
    "P3BConfig",
    "P3BTrainer",
    "PruningCallback",
    "recipe_departures",
    "FAST_BPI_SUBBATCH",
    "FAST_BPI_EVERY",
    "BPI_MODES",
    "GATE_MODES",
]
