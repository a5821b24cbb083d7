"""The ``--methods`` entries: each label a registered method declares (its ``compare_labels`` trait) parsed
into a :class:`MethodSpec` -- which method, which option overrides, which model its cells start from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import P3BError
from .options import START_DENSE, START_SOURCE


def _labels_text(method: Any) -> str:
    """A method's ``--methods`` labels in an error: ``global-*`` when all of them are ``NAME-<variant>``."""
    labels = list(method.compare_labels())
    if len(labels) > 1 and all(label.startswith(f"{method.name}-") for label in labels):
        return f"{method.name}-*"
    return ", ".join(labels)


def compare_labels() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every ``--methods`` entry -> (registered method, option overrides of its cells), from the methods'
    declared ``compare_labels`` (:class:`~p3b_hf.methods.MethodTraits`): ``p3b``, ``p3b-reference``,
    ``vbp``, ``global-<criterion>``, and each plug-in's own name."""
    from ..methods import all_methods

    return {label: (m.name, over) for m in all_methods() for label, over in m.compare_labels().items()}


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``--methods``: a label a registered method declares (``p3b``, ``p3b-reference`` = P3B with
    ``reference=True``, ``vbp``, ``global-<criterion>``, or the name of one added with
    :func:`~p3b_hf.methods.register_method`). ``overrides`` are set on the method's options for this cell."""

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        name = text.strip().lower()
        labels = compare_labels()
        if name in labels:
            method, over = labels[name]
            return cls(name, method, tuple(over.items()))
        raise P3BError(
            f"Unknown method {text!r} in --methods; use one of {', '.join(labels)} (e.g. p3b,vbp,global-taylor)."
        )

    @property
    def traits(self) -> Any:
        from ..methods import get_method

        return get_method(self.method).traits

    def options(self, base: Any, epochs: float) -> Any:
        """The cell's method options: ``base`` (what the user set for this method) with the spec's overrides;
        a method's own fine-tune length (its ``epochs_option``, VBP's ``vbp_epochs``) gets the compare's
        epochs."""
        extra = dict(self.overrides)
        if self.traits.epochs_option:
            extra[self.traits.epochs_option] = epochs
        return dataclasses.replace(base, **extra) if extra else base

    def start(self, global_from: str = START_SOURCE) -> str:
        """The model this method's cells prune: ``"dense"`` (the dense cell, fine-tuned on the task) or
        ``"source"`` (``--model``, whose head ``p3b-hf prune`` replaces for the target labels).

        A post-training method (VBP) always starts from the dense cell: from the source model it would distil
        from a random head. One that prunes during fine-tuning (P3B) starts from the source. One whose start
        is optional (global pruning) follows ``--global-from``.
        """
        traits = self.traits
        if traits.post_training or (traits.dense_start_optional and global_from == START_DENSE):
            return START_DENSE
        return START_SOURCE


def parse_methods(text: str) -> list[MethodSpec]:
    specs = [MethodSpec.parse(t) for t in text.split(",") if t.strip()]
    if not specs:
        raise P3BError("--methods is empty; e.g. --methods p3b,vbp,global-taylor")
    return specs
