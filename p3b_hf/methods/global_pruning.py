"""Grouped structural global pruning (DepGraph / Torch-Pruning semantics, as in arXiv 2504.04196), natively.

Groups (found by the module locator, no graph tracing): the embedding channels (patch projection,
cls/dist tokens, position embeddings, every LayerNorm, q/k/v/fc1 inputs, attention-output/fc2
outputs, final norm, classifier inputs), the head dimensions of each layer (q/k/v/o coupled, shared
by all heads; heads themselves are kept) and the MLP neurons of each layer. Criteria
(``--importance``): ``hessian`` (grouped OBD, ``sum w^2 * E[g^2]`` with per-sample gradients
averaged over all samples), ``taylor`` (``sum |w * g|``, g = sum of batch-mean gradients over
``--taylor-batches`` batches), ``l1`` / ``l2`` (``sum |w|^p``, no root), ``random``; group reduction
``mean`` and normaliser ``mean`` as Torch-Pruning's defaults. One global ranking over all channels.

Budget: ``--ratio`` is Torch-Pruning's *channel* ratio (the paper's 50/75/95 %); ``--prune-ratio``
(whole-model params to remove) or ``--target-params`` selects a parameter-matched plan instead.
Then the standard fine-tune (common ``--epochs/--lr/--weight-decay``, :class:`FineTuneTrainer`), without
knowledge distillation: neither Torch-Pruning's ViT recipe nor arXiv 2504.04196 distils, so ``--teacher`` and
the other KD options are refused with ``--method global`` (:data:`UNUSED_OPTIONS`); distil the pruned model
afterwards with ``p3b-hf finetune --teacher DIR``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..cost import plan_cost
from ..errors import OptionsError, P3BError
from ..options import option
from ..plan import WidthPlan
from ..slicing import apply_width_plan
from .base import MethodResult, MethodTraits, RunContext
from .budget_convert import target_params_for_prune_ratio
from .importance import CRITERIA, StructureScores, compute_structure_scores
from .selectors import global_channel_plan, kept_counts, param_matched_plan


# ====================================================================== plain API
def global_plan(
    model: nn.Module,
    dataloader: Iterable[Any] | None,
    importance: str = "taylor",
    *,
    ratio: float | None = None,
    target_params: int | None = None,
    prune_ratio: float | None = None,
    round_to: int | None = None,
    taylor_batches: int = 10,
    hessian_samples: int = 640,
    seed: int = 0,
    scores: StructureScores | None = None,
    latency: Any = None,
) -> WidthPlan:
    """Score every structure of ``model`` with ``importance`` and select globally.

    Exactly one budget: ``ratio`` (channel ratio, Torch-Pruning semantics), ``target_params``
    (whole-model parameter count) or ``prune_ratio`` (fraction of whole-model params to remove).
    ``dataloader`` yields ``{"pixel_values", "labels"}`` batches (only taylor/hessian use it).
    ``latency``: a :class:`~p3b_hf.latency.LatencyBudget` instead (importance per unit latency, as HALP).
    """
    given = [b is not None for b in (ratio, target_params, prune_ratio, latency)]
    if sum(given) != 1:
        raise P3BError(
            "Give exactly one budget: ratio (channel ratio, e.g. 0.5), target_params, "
            "prune_ratio (fraction of whole-model parameters to remove) or a latency budget."
        )
    if scores is None:
        scores = compute_structure_scores(
            model,
            importance,
            dataloader,
            taylor_batches=taylor_batches,
            hessian_samples=hessian_samples,
            seed=seed,
        )
    if latency is not None:
        from ..slicing import apply_width_plan
        from .latency_budget import latency_matched_plan, measured_loop

        plan, rounds = measured_loop(
            latency, lambda b: latency_matched_plan(model, scores, b), lambda p: apply_width_plan(model, p)
        )
        if rounds:
            plan.meta["latency_loop"] = rounds
    elif ratio is not None:
        plan = global_channel_plan(model, scores, ratio, round_to=round_to)
    else:
        if target_params is None:
            target_params = target_params_for_prune_ratio(model, prune_ratio)
        plan = param_matched_plan(model, scores, int(target_params), round_to=round_to)
    plan.meta.update(method="global", importance=importance, kept=kept_counts(plan))
    if prune_ratio is not None:
        plan.meta["prune_ratio"] = prune_ratio
    return plan


# ====================================================================== run-layer method
_NO_KD = (
    "its fine-tune does not distil (Torch-Pruning's ViT recipe and arXiv 2504.04196 do not); distil the "
    "pruned model afterwards with `p3b-hf finetune --model OUT --teacher DIR`"
)
#: common options grouped global pruning does not read (the CLI / recipes refuse them in one line)
UNUSED_OPTIONS = {
    name: _NO_KD for name in ("teacher", "kd_alpha", "kd_temperature", "kd_kind", "kd_reduction")
}


@dataclass
class GlobalOptions:
    """Grouped global pruning's options (budget: the common ``--prune-ratio``, or ``ratio`` /
    ``target_params``; the fine-tune uses the common ``--epochs/--lr/--weight-decay``)."""

    importance: str = option("taylor", choices=CRITERIA, help="global: structure importance criterion")
    ratio: float | None = option(
        None,
        help="global: Torch-Pruning CHANNEL ratio (as in arXiv 2504.04196: "
        "0.5/0.75/0.95); alternative to the param-matched --prune-ratio",
    )
    target_params: int | None = option(None, help="global: whole-model parameter target (alternative budget)")
    round_to: int | None = option(None, help="global: round kept widths to a multiple (e.g. 8)")
    taylor_batches: int = option(10, help="global/taylor: gradient batches (TP: 10)")
    hessian_samples: int = option(
        640, help="global/hessian: samples for the per-sample squared gradients (TP: 10 x 64)"
    )
    calib_batch_size: int = option(64, help="global: calibration batch size (TP: 64)")


Options = GlobalOptions
DESCRIPTION = "grouped structural global pruning (Hessian / Taylor / L1 / L2 / Random), then fine-tune"
#: global pruning starts from the source model or, with ``compare --global-from dense``, the dense cell; it
#: does not distil; every budget (``ratio`` is Torch-Pruning's channel ratio); any family kind. In compare it
#: is named by its criterion (``global-taylor``), never bare
TRAITS = MethodTraits(
    display="grouped global pruning",
    dense_start_optional=True,
    kd="none",
    budgets=frozenset({"params", "channels", "latency"}),
    families=frozenset({"plain", "staged"}),
    unused_options=UNUSED_OPTIONS,
    compare_labels={f"global-{c}": {"importance": c} for c in CRITERIA},
)


def run(ctx: RunContext, options: GlobalOptions | None = None) -> MethodResult:
    """Score -> select globally -> slice -> fine-tune."""
    from .calibration import (
        broadcast_plan,
        cached_plan,
        calibration_dataset,
        calibration_loader,
        finetune,
        save_plan_cache,
    )

    opts = options or GlobalOptions()
    if ctx.kd.teacher:  # the Python API's form of `--method global --teacher` (the CLI refuses it earlier)
        raise OptionsError(f"--teacher is not used by --method global: {_NO_KD}.")
    ratio, target, prune_ratio = opts.ratio, opts.target_params, ctx.prune_ratio
    latency = getattr(ctx, "latency", None)
    if sum(v is not None for v in (ratio, target, prune_ratio, latency)) != 1:
        raise P3BError(
            "--method global needs exactly one budget: --ratio (Torch-Pruning channel ratio, e.g. "
            "0.5), --prune-ratio (fraction of whole-model params, e.g. 0.5), --target-params or "
            "--target-speedup / --target-latency-ms."
        )
    model = ctx.model.to(ctx.device)
    dense_eval = ctx.evaluate(model, "dense eval")
    timings: dict[str, float] = {}
    seed = ctx.train.seed
    plan = cached_plan(ctx, "global")
    if plan is None:
        t0 = time.time()
        loader = calibration_loader(
            calibration_dataset(ctx),
            opts.calib_batch_size,
            shuffle=True,
            seed=seed,
            num_workers=ctx.train.num_workers,
        )
        plan = global_plan(
            model,
            loader,
            opts.importance,
            ratio=ratio,
            target_params=target,
            prune_ratio=prune_ratio,
            round_to=opts.round_to,
            latency=latency,
            taylor_batches=opts.taylor_batches,
            hessian_samples=opts.hessian_samples,
            seed=seed,
        )
        timings["scoring_s"] = time.time() - t0
        plan = broadcast_plan(plan)
        save_plan_cache(ctx, "global", plan)
    pruned = apply_width_plan(model, plan, provenance={"method": "global"})
    before_ft = ctx.evaluate(pruned, "pruned eval (before fine-tune)")
    train = finetune(
        ctx,
        pruned,
        phase="global_ft",
        epochs=ctx.train.epochs,
        lr=ctx.train.lr,
        weight_decay=ctx.train.weight_decay,
    )
    final = ctx.evaluate(pruned, "pruned eval")
    dense_acc = dense_eval.get("accuracy")
    history = {
        "method": "global",
        "criterion": opts.importance,
        "channel_ratio": plan.meta.get("channel_ratio"),
        "selector": plan.meta.get("selector"),
        "target_params": plan.meta.get("target_params"),
        "prune_ratio": prune_ratio,
        "round_to": opts.round_to,
        "kept": kept_counts(plan),
        "params_after_pruning": plan_cost(model, plan)["params"],
        "accuracy_before_finetune": before_ft.get("accuracy"),
        "retained_accuracy_before_finetune": (before_ft["accuracy"] / dense_acc) if dense_acc else None,
        "eval_before_finetune": before_ft,
        "finetune": train,
        "timings": timings,
    }
    return MethodResult(
        pruned_model=pruned, plan=plan, eval_metrics=final, dense_eval_metrics=dense_eval, history=history
    )
