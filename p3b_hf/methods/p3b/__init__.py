"""P3B -- Pruning by Block Benefit -- as soft-mask pruning during fine-tuning in a HF Trainer.

Pieces (one job each): :mod:`.gates` (masks + hooks + parameter counting), :mod:`.bpi` (block
performance indicator heads), :mod:`.estimator` (a head set + its ΔΨ window; shadow estimators),
:mod:`.budget` (block keep ratios), :mod:`.local` (Taylor ranks, soft
masks, threshold search), :mod:`.schedule`, :mod:`.state` (checkpointed state), :mod:`.pruner` (the
update / finalize engine) and :mod:`.plots`. The Trainer integration is :mod:`p3b_hf.trainer`.

CLI: ``p3b-hf prune --method p3b ...`` calls :func:`add_cli_arguments` / :func:`run_cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...errors import P3BError
from .bpi import BPIHeads, BPITaps, PatchHead, per_head_ce
from .budget import block_importance, ema, gamma, ramp, solve_keep_ratios
from .estimator import BPIEstimator, make_shadow, parse_shadow_spec
from .fast_bpi import GroupedBPIHeads
from .fast_gates import install_fused_gates
from .gates import GATES, Dims, GateSet, block_params, install_gates, non_block_params, param_per_element
from .local import (
    DEFAULT_GATE_SCALES,
    MASK_FLOOR,
    block_masks,
    rank_normalise,
    soft_mask_values,
    taylor_score,
)
from .pruner import P3BPruner
from .schedule import Schedule, default_phase_epochs
from .state import P3BState

__all__ = [
    "GATES", "Dims", "GateSet", "block_params", "install_gates", "non_block_params", "param_per_element",
    "BPIHeads", "BPITaps", "BPIEstimator", "make_shadow", "parse_shadow_spec", "GroupedBPIHeads", "install_fused_gates", "PatchHead", "per_head_ce", "gamma", "block_importance", "ema", "solve_keep_ratios", "ramp",
    "DEFAULT_GATE_SCALES", "block_masks", "rank_normalise", "soft_mask_values", "taylor_score", "P3BPruner",
    "Schedule", "default_phase_epochs", "P3BState", "add_cli_arguments", "run_cli", "config_from_args",
    "parse_gate_scales",
]


def _add(parser: Any, flag: str, **kwargs: Any) -> None:
    """``add_argument`` unless another method already registered the flag (shared --teacher / --kd-*)."""
    if flag not in getattr(parser, "_option_string_actions", {}):
        parser.add_argument(flag, **kwargs)


def add_cli_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """P3B-specific flags (the common ones -- --prune-ratio, --epochs, --lr ... -- come from ``prune``)."""
    g = parser
    g.add_argument("--update-every", type=int, default=None,
                   help="P3B: optimizer steps between mask updates (default: ~78 updates over the pruning window)")
    g.add_argument("--prune-start-epoch", type=float, default=None,
                   help="P3B: end of warm-up (default 3/50 of --epochs, the paper's proportion)")
    g.add_argument("--prune-sparse-epoch", type=float, default=None,
                   help="P3B: end of the sparsify ramp (default 25/50 of --epochs)")
    g.add_argument("--prune-finalize-epoch", type=float, default=None,
                   help="P3B: hard masks + physical pruning (default: --epochs)")
    g.add_argument("--bpi-lr", type=float, default=5e-4, help="P3B: constant lr of the BPI heads (5e-4)")
    g.add_argument("--mask-lr", type=float, default=None,
                   help="P3B: train the masks with AdamW at this lr between updates (reference behaviour; "
                        "default: masks are only set at updates)")
    g.add_argument("--gate-scales", default=None,
                   help="P3B: per-gate rank scales, e.g. 'attn_out:1.5,mlp_hid:0.75,mlp_out:1.5' (the default)")
    g.add_argument("--pr-gamma", type=float, default=0.2, help="P3B: EMA weight of the new block importance")
    g.add_argument("--pr-alpha", type=float, default=0.5, help="P3B: weight of the class-head ΔΨ vs the patch head")
    g.add_argument("--tau-max", type=float, default=0.1, help="P3B: soft-mask width while sparsifying")
    g.add_argument("--tau-min", type=float, default=0.0, help="P3B: soft-mask width at the end of sharpening")
    g.add_argument("--mask-floor", type=float, default=MASK_FLOOR,
                   help="P3B: soft-mask values below this become exactly 0, so no weight x mask product is a slow "
                        "subnormal float (default 1e-6; 0 = the plain sigmoid)")
    g.add_argument("--block-imp-scale", type=float, default=10.0, help="P3B: softplus scale s of γ")
    g.add_argument("--block-param-only", action="store_true",
                   help="P3B: the ratio counts block parameters only (default: the whole model)")
    g.add_argument("--handcrafted-keep", default=None,
                   help="P3B: fixed keep ratios, one per sub-block 'attn0,mlp0,attn1,...' (no BPI)")
    g.add_argument("--frozen", action="store_true",
                   help="P3B study: freeze the backbone, train only the BPI heads, prune nothing")
    g.add_argument("--reference", action="store_true",
                   help="P3B: switch on every reference quirk (trained masks, frozen BPI BN, finalize "
                        "re-selection, subset LayerNorm stats, pure rank threshold)")
    g.add_argument("--layernorm-mode", choices=["full_stats", "subset_stats"], default=None,
                   help="P3B: pruned LayerNorms keep full statistics (default, exact) or normalise the subset")
    g.add_argument("--bpi-mode", choices=["reference", "grouped"], default=None,
                   help="P3B: BPI heads as 2L separate stacks (reference) or one grouped computation "
                        "(default; same logits, far fewer kernels)")
    g.add_argument("--bpi-subbatch", type=float, default=None,
                   help="P3B: fraction of each batch the BPI patch heads score (default 0.25; 1.0 with "
                        "--reference); the class heads always score the whole batch")
    g.add_argument("--bpi-every", type=int, default=None,
                   help="P3B: run the BPI patch heads on every k-th micro-batch (default 4, at most one update "
                        "window; 1 with --reference; 1 = most faithful, ~2.3x the CPU cost of 4)")
    g.add_argument("--bpi-shadow", nargs="+", default=None, metavar="SUBBATCH:EVERY[:SEED]",
                   help="P3B measurement: extra BPI estimators riding along the run without steering it, e.g. "
                        "'0.0625:1 0.25:4' (a SEED gives the shadow other initial heads: '1:1:1' = the noise "
                        "floor); the report's history records the keep ratios each would choose")
    g.add_argument("--gate-mode", choices=["hooks", "fused"], default=None,
                   help="P3B: masks as activation hooks (reference) or folded into LN/Linear weights (default)")
    _add(g, "--teacher", default=None, help="KD teacher model dir/Hub id (P3B-Dist, VBP)")
    _add(g, "--kd-alpha", type=float, default=0.5, help="weight of the KD term (default 0.5)")
    _add(g, "--kd-temperature", type=float, default=1.0, help="KD temperature (default 1)")
    _add(g, "--kd-kind", choices=["soft", "hard"], default="soft",
         help="P3B-Dist: soft KL or DeiT's hard distillation (default soft)")
    _add(g, "--kd-reduction", choices=["deit", "batchmean"], default=None,
         help="soft KD scale: 'deit' = KL summed / (batch x classes), DeiT's DistillationLoss (P3B-Dist default); "
              "'batchmean' = / batch, K times larger (VBP default)")


def parse_gate_scales(text: str | None) -> dict[str, float]:
    scales = dict(DEFAULT_GATE_SCALES)
    if not text:
        return scales
    for item in text.split(","):
        name, _, value = item.partition(":")
        name = name.strip()
        if name not in scales or not value:
            raise P3BError(f"--gate-scales item {item!r} is not 'gate:value' with gate in {sorted(scales)}.")
        scales[name] = float(value)
    return scales


def config_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~p3b_hf.trainer.P3BConfig` from parsed CLI args."""
    from ...trainer import P3BConfig

    keep = None
    if getattr(args, "handcrafted_keep", None):
        try:
            keep = [float(x) for x in args.handcrafted_keep.split(",")]
        except ValueError as e:
            raise P3BError(f"--handcrafted-keep must be comma-separated floats: {e}.") from e
    ratio = getattr(args, "prune_ratio", None)
    if ratio is None and keep is None and not getattr(args, "frozen", False):
        raise P3BError("--method p3b needs --prune-ratio (fraction of whole-model parameters, e.g. 0.5), or "
                       "--handcrafted-keep / --frozen.")
    return P3BConfig(
        prune_ratio=ratio if ratio is not None else 0.0, prune_start_epoch=args.prune_start_epoch,
        prune_sparse_epoch=args.prune_sparse_epoch, prune_finalize_epoch=args.prune_finalize_epoch,
        update_every=args.update_every, bpi_lr=args.bpi_lr, mask_lr=args.mask_lr,
        train_masks=True if args.mask_lr is not None else None, gate_scales=parse_gate_scales(args.gate_scales),
        pr_gamma=args.pr_gamma, pr_alpha=args.pr_alpha, tau_max=args.tau_max, tau_min=args.tau_min,
        mask_floor=getattr(args, "mask_floor", MASK_FLOOR),
        block_imp_scale=args.block_imp_scale, block_param_only=args.block_param_only, handcrafted_keep=keep,
        frozen=args.frozen, reference=args.reference, layernorm_mode=args.layernorm_mode, save_dir=None,
        bpi_mode=getattr(args, "bpi_mode", None), bpi_subbatch=getattr(args, "bpi_subbatch", None),
        bpi_every=getattr(args, "bpi_every", None), gate_mode=getattr(args, "gate_mode", None),
        bpi_shadows=list(getattr(args, "bpi_shadow", None) or []),
    ).resolved()


def run_cli(args: argparse.Namespace, ctx: Any) -> Any:
    """Run the P3BTrainer on ``ctx`` (tqdm progress from the Trainer) and return a ``MethodResult`` whose
    ``history`` holds per-update keep ratios / ΔΨ per block and the phase boundaries."""
    from ...loading import load_model
    from ...pipeline import resume_checkpoint, training_arguments
    from ...trainer import P3BTrainer
    from ...training import KDConfig
    from .. import MethodResult
    from .plots import plot_history

    cfg = config_from_args(args)
    teacher = load_model(args.teacher) if getattr(args, "teacher", None) else None
    kd = KDConfig(alpha=args.kd_alpha, temperature=args.kd_temperature, kind=getattr(args, "kd_kind", "soft"),
                  reduction=getattr(args, "kd_reduction", None) or "deit") if teacher is not None else None
    # the reference keeps the lr constant while pruning (no scheduler)
    targs = training_arguments(ctx, "p3b", epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                               lr_scheduler_type="constant", max_grad_norm=0.0)
    trainer = P3BTrainer(model=ctx.model, args=targs, train_dataset=ctx.train_ds, eval_dataset=ctx.eval_ds,
                         data_collator=ctx.collator, processing_class=ctx.image_processor, p3b=cfg,
                         teacher=teacher, kd=kd)
    trainer.train(resume_from_checkpoint=resume_checkpoint(args, targs.output_dir))
    pruned = trainer.pruned_model
    history = trainer.pruning.history
    history["wall_time_train_s"] = trainer.pruning.wall_time_s
    history["step_time"] = trainer.step_timer.summary()
    history["config"] = {k: v for k, v in vars(cfg).items()}
    metrics = history["finalize"].get("train_end", history["finalize"].get("finalize", {}))
    eval_metrics = dict(metrics.get("pruned", {}))
    plots = plot_history(history, Path(ctx.staging_dir) / "plots")
    history["plots"] = [str(p.name) for p in plots]
    trainer.pruner.detach()
    return MethodResult(pruned_model=pruned.cpu(), plan=trainer.pruner.plan, eval_metrics=eval_metrics,
                        dense_eval_metrics=None, history=history)
