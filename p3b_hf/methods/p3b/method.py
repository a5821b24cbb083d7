"""P3B as a pruning method of the run layer: :class:`~.config.P3BConfig` in, a pruned model out.

The whole pruning run is one :class:`~.trainer.P3BTrainer` run: fine-tuning with soft masks, mask updates,
finalisation into a physically smaller model. The common run options (epochs, lr, batch, precision, ...)
come from :class:`~p3b_hf.methods.base.RunContext`; the reference trains at a constant lr with no
clipping, so this run does too (docs/p3b.md §6).
"""

from __future__ import annotations

import dataclasses

from ...errors import BudgetError, P3BError
from ...models.locator import require_plain_vit
from ..base import MethodResult, MethodTraits, RunContext
from .config import P3BConfig

Options = P3BConfig
DESCRIPTION = "P3B (Pruning by Block Benefit): soft masks while fine-tuning, hard pruning at the end"
#: P3B prunes while it fine-tunes (from the source model), reads every common option, distils only from a
#: --teacher (P3B-Dist), spends a parameter or a latency budget, and is defined on plain ViT blocks;
#: ``compare --methods p3b-reference`` is P3B on its reference BPI / gate path
TRAITS = MethodTraits(
    display="P3B",
    kd="teacher",
    budgets=frozenset({"params", "latency"}),
    families=frozenset({"plain"}),
    compare_labels={"p3b": {}, "p3b-reference": {"reference": True}},
    unused_options={
        "measured_loop": "P3B's architecture emerges during training, so there is no plan to time before it; "
        "its budget step closes the loop on what its masks deliver (docs/latency.md)"
    },
)


def check_supported(model: object) -> None:
    """One clear :class:`~p3b_hf.errors.UnsupportedModelError` for Swin / ConvNeXt: P3B's gates, block benefit
    and budget are defined on plain ViT blocks (attention + MLP reading and writing one residual stream)."""
    require_plain_vit(model, "P3B")


def check_reachable(model: object, cfg: P3BConfig) -> None:
    """Refuse, before any training, a whole-model ratio that P3B cannot reach: it prunes the encoder blocks
    only, so the parameters outside them (embeddings, tokens, final norm, classifier) must fit the budget --
    at 95 % on a small model they may not."""
    if cfg.frozen or cfg.handcrafted_keep is not None or cfg.block_param_only or not cfg.prune_ratio:
        return
    from .gates import Dims, block_params, non_block_params

    outside = float(non_block_params(model, reference=bool(cfg.reference_non_block)))
    total = float(block_params(Dims.from_config(model.config)).sum()) + outside
    r = float(cfg.prune_ratio)
    if (1.0 - r) * total < outside:
        raise BudgetError(
            f"--prune-ratio {r:g} is unreachable with P3B on this model: P3B prunes only the encoder blocks, and "
            f"the {outside:,.0f} parameters outside them (patch/position embeddings, tokens, final norm, "
            f"classifier) are {100 * outside / total:.1f} % of its {total:,.0f}, more than the {100 * (1 - r):.1f} % "
            f"a {r:g} cut keeps. Use --prune-ratio < {1 - outside / total:.3f} with --method p3b, or --method "
            "global (it also prunes the embedding channels) for larger cuts."
        )


def resolve_config(options: P3BConfig, prune_ratio: float | None) -> P3BConfig:
    """The run's config: ``options`` with the common ``--prune-ratio`` and every reference/fast default set."""
    if prune_ratio is None and options.handcrafted_keep is None and not options.frozen:
        raise P3BError(
            "--method p3b needs --prune-ratio (fraction of whole-model parameters, e.g. 0.5), or "
            "--handcrafted-keep / --frozen."
        )
    return dataclasses.replace(options, prune_ratio=prune_ratio or 0.0, save_dir=None).resolved()


def run(ctx: RunContext, options: P3BConfig | None = None) -> MethodResult:
    """Run the P3BTrainer on ``ctx`` (tqdm progress from the Trainer) and return the pruned model; its
    ``history`` holds per-update keep ratios / ΔΨ per block, the phase boundaries and the step times."""
    from ...loading import load_model
    from ...training import kd_config
    from .plots import plot_history
    from .trainer import P3BTrainer

    check_supported(ctx.model)  # before any training: Swin / ConvNeXt -> --method vbp / global
    latency = getattr(ctx, "latency", None)
    if latency is not None and ctx.prune_ratio is not None:
        raise P3BError(
            "Give one budget for --method p3b: --target-speedup / --target-latency-ms or --prune-ratio."
        )
    # a latency budget: the nominal ratio 1 - 1/speed-up is only a label, the pruner spends milliseconds
    nominal = 1.0 - 1.0 / latency.target_speedup if latency is not None else ctx.prune_ratio
    cfg = resolve_config(options or P3BConfig(), nominal)
    if latency is None:
        check_reachable(ctx.model, cfg)  # a BudgetError now, not at the first mask update
    teacher = load_model(ctx.kd.teacher) if ctx.kd.teacher else None
    kd = kd_config(ctx.kd)  # an unset --kd-reduction: P3BTrainer applies DeiT's scale
    targs = ctx.training_arguments("p3b", lr_scheduler_type="constant", max_grad_norm=0.0)
    trainer = P3BTrainer(
        model=ctx.model,
        args=targs,
        train_dataset=ctx.train_ds,
        eval_dataset=ctx.eval_ds,
        data_collator=ctx.collator,
        processing_class=ctx.image_processor,
        p3b=cfg,
        teacher=teacher,
        kd=kd,
    )
    if latency is not None:
        from ..latency_budget import P3BLatencyCost

        trainer.pruner.latency = P3BLatencyCost(latency, trainer.pruner.dims)
    trainer.train(resume_from_checkpoint=ctx.resume_checkpoint(targs.output_dir))
    pruned = trainer.pruned_model
    history = trainer.pruning.history
    history["wall_time_train_s"] = trainer.pruning.wall_time_s
    history["step_time"] = trainer.step_timer.summary()
    history["config"] = dataclasses.asdict(cfg)
    metrics = history["finalize"].get("train_end", history["finalize"].get("finalize", {}))
    plots = plot_history(history, ctx.artifacts_dir / "plots")
    history["plots"] = [str(p.name) for p in plots]
    trainer.pruner.detach()
    return MethodResult(
        pruned_model=pruned.cpu(),
        plan=trainer.pruner.plan,
        eval_metrics=dict(metrics.get("pruned", {})),
        history=history,
    )
