"""The method contract: what the run layer hands a pruning method (:class:`RunContext`) and what it gets
back (:class:`MethodResult`).

A method is an options dataclass plus ``run(ctx, options) -> MethodResult`` (registered in
:mod:`p3b_hf.methods`). It chooses channels (a :class:`~p3b_hf.plan.WidthPlan`), lets
:func:`~p3b_hf.slicing.apply_width_plan` slice, and trains what it needs through
:meth:`RunContext.training_arguments`; loading, the classifier head, padding, writing and reporting are
the runner's job (:mod:`p3b_hf.runner`), so a method never touches output directories or the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoints import last_complete_checkpoint
from ..errors import P3BError
from ..options import KDOptions, TrainOptions
from ..plan import WidthPlan
from ..runtime import resolve_device


@dataclass
class MethodResult:
    """What a method hands back to the runner (which pads, saves and reports it)."""

    pruned_model: nn.Module
    plan: WidthPlan
    eval_metrics: dict[str, float] = field(default_factory=dict)
    dense_eval_metrics: dict[str, float] | None = None
    history: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a method needs, built once by the runner.

    ``model`` is the dense fp32 model with its classifier adapted to the target labels
    (``head_reinitialised`` says whether that replaced the source head); ``train_ds`` / ``eval_ds`` are
    transformed datasets and ``collator`` the Trainer's collator (Mixup/CutMix on training batches);
    ``work_dir`` holds Trainer checkpoints (kept across crashes for ``resume``); files a method writes into
    ``artifacts_dir`` (plots) become part of the output directory. ``eval_sets``: every eval set by name
    (transformed; the first is ``eval_ds``); methods evaluate on ``eval_ds``, the runner scores the result on
    the others (per domain, per eval split).
    """

    model: nn.Module
    image_processor: Any
    data: Any  # p3b_hf.data.ImageData
    train_ds: Any
    eval_ds: Any
    collator: Any
    train: TrainOptions
    work_dir: Path
    artifacts_dir: Path
    prune_ratio: float | None = None
    kd: KDOptions = field(default_factory=KDOptions)
    resume: bool = False
    head_reinitialised: bool = False
    started: float = field(default_factory=time.time)
    eval_sets: dict[str, Any] = field(default_factory=dict)
    #: a latency budget (:class:`p3b_hf.latency.LatencyBudget`) instead of ``prune_ratio``: docs/latency.md
    latency: Any = None

    @property
    def num_labels(self) -> int:
        return len(self.data.labels) if self.data is not None else int(self.model.config.num_labels)

    @property
    def device(self) -> str:
        return resolve_device(self.train.device)

    def training_arguments(self, phase: str, **overrides: Any) -> Any:
        """``TrainingArguments`` for one training phase of the method (checkpoints in ``work_dir/phase``)."""
        from ..training import training_arguments

        return training_arguments(self.train, self.work_dir / phase, **overrides)

    def resume_checkpoint(self, output_dir: str | Path) -> str | None:
        """The checkpoint a resumed run continues from (the newest complete one), else None."""
        return last_complete_checkpoint(output_dir) if self.resume else None

    def evaluate(self, model: nn.Module, desc: str = "eval") -> dict[str, float]:
        """Top-1 accuracy and mean CE of ``model`` on the eval split (sharded over DDP ranks)."""
        from ..training import evaluate_accuracy

        batch = self.train.eval_batch_size or self.train.batch_size
        return evaluate_accuracy(model, self.eval_ds, batch_size=batch, device=self.device, desc=desc)

    def evaluate_sets(
        self, model: nn.Module, skip: tuple[str, ...] = (), desc: str = "eval"
    ) -> dict[str, dict[str, float]]:
        """:meth:`evaluate` on every eval set but those in ``skip``: ``{name: {accuracy, loss, samples}}``."""
        from ..training import evaluate_accuracy

        batch = self.train.eval_batch_size or self.train.batch_size
        return {
            name: evaluate_accuracy(model, ds, batch_size=batch, device=self.device, desc=f"{desc} {name}")
            for name, ds in self.eval_sets.items()
            if name not in skip
        }


#: the budgets a method can be given: ``params`` (``--prune-ratio``, a fraction of whole-model parameters),
#: ``channels`` (Torch-Pruning's channel ratio in the options' ``ratio`` field: ``compare --budget channels``),
#: ``latency`` (``--target-speedup`` / ``--target-latency-ms``, docs/latency.md)
BUDGETS = ("params", "channels", "latency")
#: how a method uses the ``--kd-*`` options: ``teacher`` -- only with ``--teacher`` (P3B-Dist: the KD flags
#: without one are refused); ``input`` -- also without ``--teacher`` (VBP distils from the model it prunes; the
#: default, no check); ``none`` -- it does not distil (``compare`` hands its cells no KD options)
KD_MODES = ("teacher", "input", "none")
#: the family kinds (``p3b_hf.models.families`` ``PLAIN`` / ``STAGED``); spelled here so that the methods
#: layer's registry does not import the model records just to name them
FAMILY_KINDS = ("plain", "staged")
#: how an error names a family kind and what a method supporting it prunes
_KIND_TEXT = {
    "plain": "plain ViT blocks (an attention and an MLP reading and writing one residual stream)",
    "staged": "hierarchical models (stages of windowed-attention / convolution blocks)",
}


@dataclass(frozen=True)
class MethodTraits:
    """What a method is, declared once next to its ``Options`` / ``run`` (a module's ``TRAITS``, or
    ``register_method(..., traits=...)``) and read by ``compare``, the runner, the CLI and the error messages --
    no module outside ``p3b_hf/methods/`` branches on a method's name.

    ``post_training``: it prunes a model already trained on the task, so ``compare`` starts its cells from the
    dense cell (the source fine-tuned on the task) and, with ``kd="input"``, distils from it (VBP).
    ``dense_start_optional``: ``compare --global-from dense|source`` picks its start (grouped global pruning).
    ``kd``: one of :data:`KD_MODES`. ``budgets``: the subset of :data:`BUDGETS` it spends (any other is refused
    before loading anything). ``families``: the family kinds it prunes (:data:`FAMILY_KINDS`; a model of another
    kind is one :class:`~p3b_hf.errors.UnsupportedModelError`, an "unsupported" row in ``compare``).
    ``display``: its name in prose (errors). ``unused_options``: the common options (fields of ``TrainOptions``
    / ``KDOptions`` / ...) it does not read, each with what to use instead -- refused on the command line and
    in recipes (:func:`p3b_hf.runner.check_given_options`). ``epochs_option``: its own option holding its
    fine-tune length, which ``compare`` sets to ``--epochs`` in every cell (and refuses from the user).
    ``compare_labels``: the ``compare --methods`` entries it answers to, each with the option overrides of
    that cell (default: its own name, no overrides)."""

    post_training: bool = False
    dense_start_optional: bool = False
    kd: str = "input"
    budgets: frozenset[str] = frozenset({"params"})
    families: frozenset[str] = frozenset(FAMILY_KINDS)
    display: str = ""
    unused_options: Mapping[str, str] = field(default_factory=dict)
    epochs_option: str | None = None
    compare_labels: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        bad = [
            f"{what} {sorted(set(vals) - set(allowed))}"
            for what, vals, allowed in (
                ("kd", {self.kd}, KD_MODES),
                ("budgets", self.budgets, BUDGETS),
                ("families", self.families, FAMILY_KINDS),
            )
            if set(vals) - set(allowed)
        ]
        if bad:
            raise P3BError(
                f"Method traits: unknown {', '.join(bad)}; kd is one of {KD_MODES}, budgets a subset of "
                f"{BUDGETS}, families a subset of {FAMILY_KINDS}."
            )
        # sets given as lists / tuples are stored as frozensets (hashable, and ``in`` reads the same)
        object.__setattr__(self, "budgets", frozenset(self.budgets))
        object.__setattr__(self, "families", frozenset(self.families))
        object.__setattr__(self, "unused_options", dict(self.unused_options))

    @property
    def kd_needs_teacher(self) -> bool:
        """The KD options act only with ``--teacher``."""
        return self.kd == "teacher"


def kind_text(kind: str) -> str:
    """How an error names a family kind."""
    return _KIND_TEXT.get(kind, f"{kind} families")
