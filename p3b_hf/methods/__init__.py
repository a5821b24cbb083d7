"""Pruning methods. Each turns scores into a :class:`~p3b_hf.plan.WidthPlan` and hands it to the shared
slicer; each module exposes ``add_cli_arguments(parser)`` and ``run_cli(args, ctx) -> MethodResult``.

- ``p3b``: Pruning by Block Benefit (soft masks during fine-tuning).
- ``vbp``: variance-based pruning of MLP neurons + mean-shift fold + KD fine-tune.
- ``global``: grouped structural global pruning (Hessian / Taylor / L1 / L2 / Random).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from torch import nn

from ..plan import WidthPlan

METHODS: dict[str, str] = {
    "p3b": "p3b_hf.methods.p3b",
    "vbp": "p3b_hf.methods.vbp",
    "global": "p3b_hf.methods.global_pruning",
}


@dataclass
class MethodResult:
    """What a method hands back to ``p3b-hf prune`` (which saves and reports it)."""

    pruned_model: nn.Module
    plan: WidthPlan
    eval_metrics: dict[str, float] = field(default_factory=dict)
    dense_eval_metrics: dict[str, float] | None = None
    history: dict[str, Any] = field(default_factory=dict)


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        from ..errors import P3BError

        raise P3BError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return importlib.import_module(METHODS[name])
