"""Pruning methods. Each one is an options dataclass plus ``run(ctx, options) -> MethodResult``
(:mod:`p3b_hf.methods.base`): it turns scores into a :class:`~p3b_hf.plan.WidthPlan` and hands it to the
shared slicer. The registry maps a name to the module that defines ``Options``, ``run`` and
``DESCRIPTION`` (imported only when the method is used), or to a :class:`Method` registered at run time.

- ``p3b``: Pruning by Block Benefit (soft masks during fine-tuning).
- ``vbp``: variance-based pruning of MLP neurons + mean-shift fold + KD fine-tune.
- ``global``: grouped structural global pruning (Hessian / Taylor / L1 / L2 / Random).

Adding a method: one options dataclass, one ``run`` function, one registry line --
``register_method("name", Options, run)`` (docs/architecture.md has a complete example). What a method is
(post-training? how KD applies, which budgets, which family kinds) is its :class:`MethodTraits` -- a module's
``TRAITS``, a plug-in's ``register_method`` keywords -- which compare, the runner and the errors read.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import P3BError
from .base import BUDGETS, FAMILY_KINDS, KD_MODES, MethodResult, MethodTraits, RunContext, kind_text

METHODS: dict[str, Any] = {
    "p3b": "p3b_hf.methods.p3b.method",
    "vbp": "p3b_hf.methods.vbp",
    "global": "p3b_hf.methods.global_pruning",
}


@dataclass(frozen=True)
class Method:
    """A registered method: its options dataclass, its run function, a one-line description and its
    :class:`MethodTraits`."""

    name: str
    options: type
    run: Callable[[RunContext, Any], MethodResult]
    description: str = ""
    traits: MethodTraits = field(default_factory=MethodTraits)

    @property
    def unused_options(self) -> Mapping[str, str]:
        return self.traits.unused_options

    @property
    def kd_needs_teacher(self) -> bool:
        return self.traits.kd_needs_teacher

    @property
    def display(self) -> str:
        """The method's name in prose (``P3B``), else ``--method NAME``."""
        return self.traits.display or f"--method {self.name}"

    def compare_labels(self) -> dict[str, dict[str, Any]]:
        """``compare --methods`` entry -> the option overrides of its cells."""
        labels = self.traits.compare_labels
        return {self.name: {}} if labels is None else {k: dict(v) for k, v in labels.items()}


def register_method(
    name: str,
    options: type,
    run: Callable[[RunContext, Any], MethodResult],
    description: str = "",
    *,
    traits: MethodTraits | None = None,
    replace: bool = False,
    **trait_fields: Any,
) -> Method:
    """Make ``name`` available to ``p3b-hf prune --method`` / ``compare`` / recipes / :func:`p3b_hf.runner.prune`.

    The method's :class:`MethodTraits` come as ``traits=`` or as its fields (``post_training=True``,
    ``budgets={"params", "latency"}``, ``unused_options={...}``, ``kd="none"``, ...). A name already taken is
    refused (a silent overwrite would run another method under a known name); ``replace=True`` says the
    overwrite is meant, e.g. when a notebook re-registers its own method."""
    if name in METHODS and not replace:
        raise P3BError(
            f"A method named {name!r} is already registered; choose another name, or pass replace=True to "
            "register_method if you mean to replace it."
        )
    if "kd_needs_teacher" in trait_fields:  # the keyword before the traits record: kept for plug-ins
        needs = trait_fields.pop("kd_needs_teacher")
        trait_fields.setdefault("kd", "teacher" if needs else "input")
    if traits is not None and trait_fields:
        traits = dataclasses.replace(traits, **trait_fields)
    try:
        traits = traits or MethodTraits(**trait_fields)
    except TypeError as e:
        raise P3BError(
            f"register_method({name!r}, ...): {e}; the trait keywords are "
            f"{', '.join(f.name for f in dataclasses.fields(MethodTraits))}."
        ) from e
    method = Method(name, options, run, description, traits)
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
        getattr(module, "TRAITS", MethodTraits()),
    )


def all_methods() -> list[Method]:
    """Every registered method whose module imports (one whose optional dependencies are missing is left out)."""
    out = []
    for name in METHODS:
        try:
            out.append(get_method(name))
        except ImportError:
            continue
    return out


def require_family_kind(method: Method, model_or_config: Any) -> None:
    """Refuse, with one :class:`~p3b_hf.errors.UnsupportedModelError` generated from the traits, a model whose
    family kind ``method`` does not prune (P3B on Swin / ConvNeXt), naming the methods that do. Called by the
    runner before anything is trained or written; a model of no registered family is left to the loader's
    error."""
    from ..errors import UnsupportedModelError
    from ..models.families import families, family_of

    fam = family_of(model_or_config)
    if fam is None or fam.kind in method.traits.families:
        return
    subject = getattr(model_or_config, "module", model_or_config)
    cls = type(subject).__name__ if hasattr(subject, "config") else fam.name
    ok_kinds = sorted(method.traits.families)
    supported = ", ".join(c for k in ok_kinds for f in families(k) for c in f.classes)
    what = " or ".join(kind_text(k) for k in ok_kinds)
    others = [m for m in all_methods() if fam.kind in m.traits.families]
    use = " or ".join(f"--method {m.name}" for m in others) or "another method"
    raise UnsupportedModelError(
        f"{method.display} is defined for {what} (supported: {supported}), but {cls} is one of the "
        f"{kind_text(fam.kind)}, which p3b_hf prunes with {use}. Use "
        f"{'one of those' if len(others) > 1 else 'that'} for this model, or load a model of a supported class."
    )


__all__ = [
    "BUDGETS",
    "FAMILY_KINDS",
    "KD_MODES",
    "METHODS",
    "Method",
    "MethodResult",
    "MethodTraits",
    "RunContext",
    "all_methods",
    "get_method",
    "register_method",
    "require_family_kind",
]
