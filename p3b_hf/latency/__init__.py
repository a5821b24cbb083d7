"""Latency budgets (docs/latency.md): a latency model of the deployed artefact, fitted on a timed grid of the
family's prunable structures and cached per device / backend / dtype / threads / batch; the budget a method
spends; the verification of the speed-up it achieved."""

from .budget import LatencyBudget
from .model import Clock, Curve, LatencyError, LatencyModel, Probe, cache_dir, cache_key, calibrate, fit_curve
from .options import LatencyOptions
from .structures import Structure, structures

__all__ = [
    "Clock",
    "Curve",
    "LatencyBudget",
    "LatencyError",
    "LatencyModel",
    "LatencyOptions",
    "Probe",
    "Structure",
    "cache_dir",
    "cache_key",
    "calibrate",
    "fit_curve",
    "structures",
]
