"""Pruning methods. Each one is an options dataclass plus ``run(ctx, options) -> MethodResult``
(:mod:`p3b_hf.methods.base`): it turns scores into a :class:`~p3b_hf.plan.WidthPlan` and hands it to the
shared slicer. The registry maps a name to the module that defines ``Options``, ``run`` and
``DESCRIPTION`` (imported only when the method is used), or to a :class:`Method` registered at run time.

- ``p3b``: Pruning by Block Benefit (soft masks during fine-tuning).
- ``vbp``: variance-based pruning of MLP neurons + mean-shift fold + KD fine-tune.
- ``global``: grouped structural global pruning (Hessian / Taylor / L1 / L2 / Random).

Adding a method: one options dataclass, one ``run`` function, one registry line --
``register_method("name", Options, run)`` (docs/architecture.md has a complete example).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import P3BError
from .base import MethodResult, RunContext

METHODS: dict[str, Any] = {
    "p3b": "p3b_hf.methods.p3b.method",
    "vbp": "p3b_hf.methods.vbp",
    "global": "p3b_hf.methods.global_pruning",
}


@dataclass(frozen=True)
class Method:
    """A registered method: its options dataclass, its run function and a one-line description.

    ``unused_options``: the common options (fields of ``TrainOptions`` / ``KDOptions`` / ...) the method does
    not read, each with what to use instead (a module's ``UNUSED_OPTIONS``); the command line and recipes
    refuse them (:func:`p3b_hf.runner.check_given_options`). Every other common option is read.
    ``kd_needs_teacher``: the KD options act only with ``--teacher`` (a module's ``KD_NEEDS_TEACHER``, P3B);
    VBP distils from the dense input model without one."""

    name: str
    options: type
    run: Callable[[RunContext, Any], MethodResult]
    description: str = ""
    unused_options: Mapping[str, str] = field(default_factory=dict)
    kd_needs_teacher: bool = False


def register_method(
    name: str,
    options: type,
    run: Callable[[RunContext, Any], MethodResult],
    description: str = "",
    *,
    unused_options: Mapping[str, str] | None = None,
    kd_needs_teacher: bool = False,
    replace: bool = False,
) -> Method:
    """Make ``name`` available to ``p3b-hf prune --method`` / ``compare`` / recipes / :func:`p3b_hf.runner.prune`.

    ``unused_options``: common options the method does not read -> what to use instead (refused on the
    command line and in recipes). A name already taken is refused (a silent overwrite would run another
    method under a known name); ``replace=True`` says the overwrite is meant, e.g. when a notebook
    re-registers its own method."""
    if name in METHODS and not replace:
        raise P3BError(
            f"A method named {name!r} is already registered; choose another name, or pass replace=True to "
            "register_method if you mean to replace it."
        )
    method = Method(name, options, run, description, dict(unused_options or {}), kd_needs_teacher)
    METHODS[name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name`` (its module is imported now)."""
    entry = METHODS.get(name)
    if entry is None:
        raise P3BError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    if isinstance(entry, Method):
        return entry
    module = importlib.import_module(entry)
    return Method(
        name,
        module.Options,
        module.run,
        getattr(module, "DESCRIPTION", ""),
        dict(getattr(module, "UNUSED_OPTIONS", {})),
        bool(getattr(module, "KD_NEEDS_TEACHER", False)),
    )


__all__ = ["METHODS", "Method", "MethodResult", "RunContext", "get_method", "register_method"]
