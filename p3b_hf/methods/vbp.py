"""Variance-Based Pruning (VBP, Berisha et al., ICCV'25), clean-room, on the shared WidthPlan path.

1. Statistics: mean and (unbiased) variance of every MLP neuron's post-GELU activation over every
   token of the target training split (eval transforms, model in eval mode; float64 Chan merge,
   reducible across DDP ranks -- :func:`~p3b_hf.methods.statistics.collect_mlp_activation_stats`).
2. Selection: one global ranking of all ``L*F`` MLP neurons by raw variance; the lowest
   ``floor(p * L * F)`` are removed (``p = --percentage``), keeping at least one neuron per layer.
   Swin / ConvNeXt: every block of every stage in the same ranking (post-GELU activations at every
   spatial position; ConvNeXt's fold goes into ``pwconv2``'s bias, which the layer scale then multiplies
   exactly as it multiplies the dense output). ``--prune-ratio`` is converted on the ranking itself
   (:func:`~p3b_hf.methods.budget_convert.neurons_for_prune_ratio`).
3. Mean-shift fold, computed from the *dense* weights: ``b2' = b2 + W2[:, R] @ mu[R]`` (the
   plan's ``mlp_bias_delta``), so the pruned model equals the dense model with every removed
   activation replaced by its mean. Only :func:`~p3b_hf.slicing.apply_width_plan` slices weights.
4. Fine-tune with knowledge distillation from the dense (target-fine-tuned) model: 10 epochs,
   AdamW 1.5e-5, cosine, wd 0.01 by default. The paper does not state its KD loss; we use
   ``0.5 * CE(student, y) + 0.5 * KL(softmax(t) || softmax(s))`` at T = 1, the KL per sample
   (:data:`KD_REDUCTION` "batchmean"; for two-headed DeiT students the KL acts on the distillation head).
   ``--kd-alpha`` / ``--kd-temperature`` / ``--kd-kind`` (``hard``: DeiT's ``CE(s, argmax t)``) /
   ``--kd-reduction`` change it (:func:`vbp_kd`). The common ``--epochs / --lr / --weight-decay`` are not
   read (:data:`UNUSED_OPTIONS`: the CLI refuses them, naming ``--vbp-*``).

VBP is a *post-training* method: its input must already be trained on the target task. A model whose
classifier ``p3b-hf prune`` had to re-initialise for the data set's labels is refused unless ``--teacher``
names the task-trained model (``p3b-hf compare`` starts VBP from its fine-tuned dense cell).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import BudgetError, P3BError
from ..models.locator import locate_mlps
from ..options import KDOptions, option
from ..plan import LayerPlan, WidthPlan
from ..slicing import apply_width_plan
from ..training import KDConfig, kd_config, resolve_kd
from .base import MethodResult, MethodTraits, RunContext
from .budget_convert import check_vbp_prune_ratio, neurons_for_percentage, neurons_for_prune_ratio
from .statistics import RunningMoments, collect_mlp_activation_stats

PAPER_RECIPE = {"epochs": 10.0, "lr": 1.5e-5, "weight_decay": 0.01}
#: VBP's soft-KD scaling when --kd-reduction is not given: the KL per sample (``KDConfig`` "batchmean")
KD_REDUCTION = "batchmean"
#: common options VBP does not read, and what it reads instead (the CLI / recipes refuse them in one line)
UNUSED_OPTIONS = {
    "epochs": "its fine-tune length is --vbp-epochs (paper: 10)",
    "lr": "its fine-tune learning rate is --vbp-lr (paper: 1.5e-5)",
    "weight_decay": "its fine-tune weight decay is --vbp-weight-decay (paper: 0.01)",
}
VBP_NEEDS_TASK_MODEL = (
    "VBP prunes a model trained on this task: fine-tune it first with `p3b-hf finetune`, or pass `--teacher`"
)


# ====================================================================== plain API
@torch.no_grad()
def vbp_plan_from_stats(
    model: nn.Module,
    stats: list[RunningMoments],
    percentage: float | None = None,
    *,
    prune_ratio: float | None = None,
    min_keep: int = 1,
    latency: Any = None,
) -> WidthPlan:
    """WidthPlan (kept MLP neurons + mean-shift ``mlp_bias_delta``) from per-layer / per-block activation moments.

    One global ranking over every MLP neuron of every layer / block (Swin / ConvNeXt: all stages together, as
    the paper). Budget: ``percentage`` (fraction of all MLP neurons) or ``prune_ratio`` (fraction of
    whole-model parameters: the fewest lowest-variance neurons whose removal reaches it, each costing
    ``2 C_i + 1`` in its block; see :mod:`.budget_convert`) or ``latency`` (a
    :class:`~p3b_hf.latency.LatencyBudget`: the fewest lowest-variance neurons meeting its target).
    """
    if latency is not None and percentage is None and prune_ratio is None:
        percentage = 0.0  # replaced below by the latency selection
    if (percentage is None) == (prune_ratio is None):
        raise P3BError(
            "Give exactly one of percentage (fraction of MLP neurons) or prune_ratio (fraction of "
            "whole-model parameters) to vbp_plan_from_stats."
        )
    view = locate_mlps(model)
    widths = [b.width for b in view.blocks]
    if len(stats) != len(widths) or any(s.mean.numel() != f for s, f in zip(stats, widths)):
        raise P3BError(
            f"VBP statistics do not match the model ({len(widths)} layers / blocks with {widths} "
            "neurons); collect them with collect_mlp_activation_stats(model, ...) on this model."
        )
    var = [s.variance().cpu() for s in stats]  # float64
    # the min_keep highest-variance neurons of every layer / block are never candidates
    ranked = torch.cat(
        [v.scatter(0, torch.topk(v, min(min_keep, len(v))).indices, float("inf")) for v in var]
    )
    order = torch.argsort(ranked, stable=True)
    n_candidates = sum(f - min(min_keep, f) for f in widths)
    if prune_ratio is not None:
        # one hidden unit: fc1 row + bias and fc2 column (a gated MLP: + the up row and bias)
        reads = [2 if b.up is not None else 1 for b in view.blocks]
        cost = torch.cat(
            [torch.full((f,), r * (b.dim + 1) + b.dim) for b, f, r in zip(view.blocks, widths, reads)]
        )
        n_remove = neurons_for_prune_ratio(model.config, prune_ratio, cost[order[:n_candidates]].tolist())
        percentage = n_remove / sum(widths)
    else:
        n_remove = neurons_for_percentage(model.config, percentage)
    if n_remove > n_candidates:
        raise BudgetError(
            f"VBP --percentage {percentage} would remove {n_remove} of {sum(widths)} MLP neurons, "
            f"but {min_keep} per layer must stay; use --percentage <= "
            f"{n_candidates / sum(widths):.4f}."
        )
    removed = torch.zeros(len(ranked), dtype=torch.bool)
    removed[order[:n_remove]] = True

    def _layers(gone_all: torch.Tensor, fold: bool = True) -> tuple[list[LayerPlan], list[int]]:
        """Every block's kept neurons under ``gone_all`` and (``fold``) VBP's bias fold of the removed ones."""
        layers, kept, start = [], [], 0
        for blk, s, f in zip(view.blocks, stats, widths):
            gone = gone_all[start : start + f]
            start += f
            r = gone.nonzero().flatten()
            delta = None
            if fold and len(r):
                fc2 = blk.fc2.weight.detach().double().cpu()
                delta = (fc2[:, r] @ s.mean.detach().double().cpu()[r]).tolist()
            keep = (~gone).nonzero().flatten().tolist()
            layers.append(LayerPlan(mlp=keep if len(keep) < f else None, mlp_bias_delta=delta))
            kept.append(len(keep))
        return layers, kept

    rounds: list[dict[str, float]] = []
    if latency is not None:
        from .latency_budget import measured_loop, vbp_latency_removed

        def shape_only(r: torch.Tensor) -> nn.Module:  # the architecture of a removed mask, to be timed
            shaped = WidthPlan.full(model.config)
            shaped.layers = _layers(r, fold=False)[0]
            return apply_width_plan(model, shaped)

        removed, rounds = measured_loop(
            latency, lambda b: vbp_latency_removed(b, widths, order, n_candidates, var), shape_only
        )
        n_remove = int(removed.sum())
        percentage = n_remove / sum(widths)

    plan = WidthPlan.full(model.config)
    layers, kept = _layers(removed)
    plan.layers = layers
    plan.meta.update(method="vbp", percentage=float(percentage), removed_neurons=int(n_remove), kept_mlp=kept)
    if rounds:
        plan.meta["latency_loop"] = rounds
    plan.validate()
    return plan


def vbp_plan(
    model: nn.Module,
    dataloader: Iterable[Any],
    percentage: float | None = None,
    *,
    prune_ratio: float | None = None,
    max_batches: int | None = None,
    min_keep: int = 1,
) -> WidthPlan:
    """Collect statistics over ``dataloader`` and return VBP's WidthPlan.

    Give either ``percentage`` (fraction of all MLP neurons, the paper's knob) or ``prune_ratio``
    (fraction of whole-model parameters; converted exactly, :class:`BudgetError` if unreachable).
    """
    if (percentage is None) == (prune_ratio is None):
        raise P3BError(
            "Give exactly one of percentage (fraction of MLP neurons) or prune_ratio (fraction of "
            "whole-model parameters) to vbp_plan."
        )
    if percentage is None:
        check_vbp_prune_ratio(model.config, prune_ratio, min_keep)  # BudgetError before the statistics pass
    stats = collect_mlp_activation_stats(model, dataloader, max_batches=max_batches)
    return vbp_plan_from_stats(model, stats, percentage, prune_ratio=prune_ratio, min_keep=min_keep)


# ====================================================================== run-layer method
@dataclass
class VBPOptions:
    """VBP's own options (the budget is the common ``--prune-ratio`` unless ``percentage`` is given; the KD
    teacher and weights are the common distillation options)."""

    percentage: float | None = option(
        None,
        help="VBP: fraction of ALL MLP neurons to remove (the paper's knob); alternative to --prune-ratio",
    )
    vbp_epochs: float = option(
        PAPER_RECIPE["epochs"],
        help="VBP: KD fine-tune epochs (paper: 10; the common --epochs is refused with --method vbp)",
    )
    vbp_lr: float = option(PAPER_RECIPE["lr"], help="VBP: AdamW lr of the KD fine-tune (paper: 1.5e-5)")
    vbp_weight_decay: float = option(PAPER_RECIPE["weight_decay"], help="VBP: weight decay (paper: 0.01)")
    stats_batches: int | None = option(
        None, help="VBP: limit the statistics pass to N batches (default: the whole training split)"
    )


Options = VBPOptions
DESCRIPTION = "VBP: MLP neurons by activation variance, mean-shift fold, KD fine-tune (post-training)"
#: VBP is post-training (compare starts it from the dense cell and distils from it), its fine-tune length is
#: --vbp-epochs (compare sets it to --epochs), any family kind (it prunes MLP neurons only)
TRAITS = MethodTraits(
    display="VBP",
    post_training=True,
    kd="input",
    budgets=frozenset({"params", "latency"}),
    families=frozenset({"plain", "staged"}),
    unused_options=UNUSED_OPTIONS,
    epochs_option="vbp_epochs",
)


def run(ctx: RunContext, options: VBPOptions | None = None) -> MethodResult:
    """Statistics -> plan -> slice -> KD fine-tune from the task-trained dense model."""
    from .calibration import (
        broadcast_plan,
        cached_plan,
        calibration_dataset,
        calibration_loader,
        finetune,
        save_plan_cache,
    )

    opts = options or VBPOptions()
    if ctx.head_reinitialised and ctx.kd.teacher is None:
        # VBP is a post-training method: its mean-shift fold and its default KD teacher (the input model)
        # assume the input already solves this task. With a fresh random head the student would distil
        # from random logits. Refuse before any statistics work.
        raise P3BError(VBP_NEEDS_TASK_MODEL)
    percentage, prune_ratio = opts.percentage, ctx.prune_ratio
    latency = getattr(ctx, "latency", None)
    if latency is not None and (percentage is not None or prune_ratio is not None):
        raise P3BError(
            "Give one budget for --method vbp: --target-speedup / --target-latency-ms, or a parameter one."
        )
    if percentage is not None and prune_ratio is not None:
        raise P3BError(
            "Give either --percentage (fraction of MLP neurons) or --prune-ratio (fraction of "
            "whole-model params) for --method vbp, not both."
        )
    if percentage is None and prune_ratio is None and latency is None:
        raise P3BError(
            "--method vbp needs --prune-ratio (fraction of whole-model params, e.g. 0.5) or "
            "--percentage (fraction of MLP neurons, the paper's knob, e.g. 0.55)."
        )
    model = ctx.model.to(ctx.device)
    if percentage is None and latency is None:
        check_vbp_prune_ratio(model.config, prune_ratio)  # BudgetError before any work
    timings: dict[str, float] = {}
    dense_eval = ctx.evaluate(model, "dense eval")

    plan = cached_plan(ctx, "vbp")
    if plan is None:
        t0 = time.time()
        loader = calibration_loader(
            calibration_dataset(ctx), ctx.train.batch_size, num_workers=ctx.train.num_workers, shard=True
        )
        stats = collect_mlp_activation_stats(model, loader, max_batches=opts.stats_batches)
        timings["statistics_s"] = time.time() - t0
        plan = broadcast_plan(
            vbp_plan_from_stats(model, stats, percentage, prune_ratio=prune_ratio, latency=latency)
        )
        save_plan_cache(ctx, "vbp", plan)
    plan.meta.update(method="vbp", prune_ratio=prune_ratio)

    pruned = apply_width_plan(model, plan, provenance={"method": "vbp"})
    before_ft = ctx.evaluate(pruned, "pruned eval (before fine-tune)")
    teacher = _load_teacher(ctx.kd.teacher, model)
    kd = vbp_kd(ctx.kd)
    train = finetune(
        ctx,
        pruned,
        phase="vbp_kd",
        epochs=opts.vbp_epochs,
        lr=opts.vbp_lr,
        weight_decay=opts.vbp_weight_decay,
        teacher=teacher,
        kd=kd,
    )
    final = ctx.evaluate(pruned, "pruned eval")
    dense_acc = dense_eval.get("accuracy")
    history = {
        "method": "vbp",
        "percentage": float(plan.meta["percentage"]),
        "prune_ratio": prune_ratio,
        "removed_neurons": plan.meta["removed_neurons"],
        "kept_mlp": plan.meta["kept_mlp"],
        "accuracy_before_finetune": before_ft.get("accuracy"),
        "retained_accuracy_before_finetune": (before_ft["accuracy"] / dense_acc) if dense_acc else None,
        "eval_before_finetune": before_ft,
        "finetune": train,
        "timings": timings,
        "kd": {"loss": describe_kd(kd), "teacher": ctx.kd.teacher or "dense input model"},
    }
    return MethodResult(
        pruned_model=pruned, plan=plan, eval_metrics=final, dense_eval_metrics=dense_eval, history=history
    )


def vbp_kd(kd: KDOptions) -> KDConfig:
    """VBP's distillation from the common KD options: VBP always distils (from ``--teacher``, else the dense
    input model); ``--kd-kind`` / ``--kd-alpha`` / ``--kd-temperature`` act, an unset ``--kd-reduction`` is
    :data:`KD_REDUCTION`."""
    return resolve_kd(kd_config(kd, always=True), KD_REDUCTION)


def describe_kd(kd: KDConfig) -> str:
    """The loss a :class:`KDConfig` trains with, for the report."""
    if kd.kind == "hard":
        return f"{1 - kd.alpha:g}*CE + {kd.alpha:g}*CE(student, argmax teacher) (DeiT hard distillation)"
    return (
        f"{1 - kd.alpha:g}*CE + {kd.alpha:g}*T^2*KL(teacher||student), T={kd.temperature:g}, "
        f"reduction={kd.reduction}"
    )


def _load_teacher(path: str | None, dense: nn.Module) -> nn.Module:
    if path is None:
        return copy.deepcopy(dense).eval()
    from ..loading import load_model

    teacher = load_model(path)
    if teacher.config.num_labels != dense.config.num_labels:
        raise P3BError(
            f"--teacher {path} has {teacher.config.num_labels} classes but the target data has "
            f"{dense.config.num_labels}; give the dense model fine-tuned on this data set."
        )
    return teacher.eval()
