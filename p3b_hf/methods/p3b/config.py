"""P3B's configuration: every hyper-parameter, the reference / fast defaults, and their validation.

One dataclass is the whole interface: the Python API (``P3BConfig(...)``), the command line (its fields with
help text become ``p3b-hf prune --method p3b`` flags, :mod:`p3b_hf.options`) and the recipes (YAML keys)
all read it. Algorithm: docs/p3b.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...errors import P3BError
from ...options import option
from .estimator import parse_shadow_spec
from .local import DEFAULT_GATE_SCALES, MASK_FLOOR

#: fast-mode defaults of the BPI patch-head sub-batch fraction and period (see P3BConfig, docs/p3b.md "Step
#: cost"): the patch heads score a quarter of every 4th micro-batch (the class heads every sample)
FAST_BPI_SUBBATCH = 0.25
FAST_BPI_EVERY = 4
BPI_MODES = ("reference", "grouped")
GATE_MODES = ("hooks", "fused")


def parse_gate_scales(text: str | None) -> dict[str, float]:
    """``"attn_out:1.5,mlp_hid:0.75"`` -> the default scales with those replaced."""
    scales = dict(DEFAULT_GATE_SCALES)
    if not text:
        return scales
    for item in str(text).split(","):
        name, _, value = item.partition(":")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = None
        if name not in scales or number is None:
            raise P3BError(f"--gate-scales item {item!r} is not 'gate:value' with gate in {sorted(scales)}.")
        scales[name] = number
    return scales


def parse_floats(text: str) -> list[float]:
    """``"0.5,0.7,..."`` -> floats (``--handcrafted-keep``)."""
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError as e:
        raise P3BError(f"--handcrafted-keep must be comma-separated floats: {e}.") from e


@dataclass
class P3BConfig:
    """Every P3B hyper-parameter, with the paper/reference defaults.

    Phases: ``prune_*_epoch`` (None = the paper's proportions 3/25/50 of the run's epochs) or absolute
    ``prune_*_step`` overrides, all in optimizer steps / epochs of the Trainer. ``update_every``: optimizer
    steps between mask updates (None = spread ~78 updates over the pruning window like the README run).

    Reference quirks (each ``None`` = follow ``reference``; ``reference=True`` switches them all on):

    * ``train_masks``: masks are trained by AdamW at ``mask_lr`` (None = the model lr) in a no-decay group
      between updates (docs/p3b.md §9.1). Clean: masks are only set at updates.
    * ``bpi_frozen_bn``: the BPI BatchNorms stay in eval mode (the reference trains in eval mode, docs/p3b.md §9.2).
    * ``finalize_reselect``: finalisation runs one more update on the last two windows (docs/p3b.md §9.4). Clean:
      finalise from the last applied masks.
    * ``layernorm_mode``: "full_stats" (clean: pruned model == hard-masked model exactly) or
      "subset_stats" (reference: LN over the kept channels only, docs/p3b.md §9.3).
    * ``reference_non_block``: ignore the distillation token / head in the non-block parameter count.
    * ``exact_budget``: False = the reference's pure rank threshold (can miss an attention block's goal by
      up to ~0.75 % of the block, one head-dim element); clean: the head-dim gate may keep one element
      more/fewer so every block lands within 0.25 %.

    Step cost (docs/p3b.md "Step cost"; each ``None`` = reference value with ``reference=True``, else the
    fast default):

    * ``bpi_mode``: "reference" (2L separate head stacks, ~100 kernels each) or "grouped" (all heads in
      one grouped conv / batched matmul per stage; same logits up to float rounding). Fast default: grouped.
    * ``bpi_subbatch``: fraction of each micro-batch the BPI *patch* heads score (its first samples; the
      loader shuffles, so the ΔΨ window mean stays unbiased). The class heads always score the whole
      batch (they cost <1 % of the BPI). Reference 1.0; fast default :data:`FAST_BPI_SUBBATCH`.
    * ``bpi_every``: run the BPI patch heads on every k-th training micro-batch only (their ΔΨ is averaged
      over the micro-batches that ran them). Reference 1; fast default :data:`FAST_BPI_EVERY`, lowered to
      the micro-batches of one update window when the windows are shorter (``bpi_every_auto``), so every
      window scores the patch heads at least once. ``--bpi-every 1`` = the most faithful (and slowest)
      fast setting.
    * ``gate_mode``: "hooks" (multiply each gated activation in a hook, as the reference) or "fused"
      (fold the masks into the LayerNorm affines / Linear weights, same function). Fast default: fused.

    ``mask_floor``: soft-mask values below it are exactly 0 (default 1e-6; 0 = the plain sigmoid). Late in a
    run τ is tiny and the sigmoid gives values like 1e-37, whose products with the weights are subnormal
    floats that make x86 GEMMs many times slower (docs/p3b.md §5.1).

    ``bpi_shadows``: extra BPI estimators ``"SUBBATCH:EVERY"`` (e.g. ``["0.0625:1", "0.25:4"]``) that ride
    along the run without steering it: same initial heads, same micro-batches, their own ΔΨ windows and
    EMA; every mask update records the keep ratios each would have chosen (``history["updates"][i]
    ["shadows"]``). For measuring how faithful a cheap BPI setting is to the one that drives the run
    (:mod:`p3b_hf.methods.p3b.estimator`). Costs the shadows' heads; not resumable.
    """

    prune_ratio: float = option(
        0.5,
        cli=False,
        help="fraction of whole-model parameters to remove (set from the common --prune-ratio)",
    )
    prune_start_epoch: float | None = option(
        None, help="end of warm-up (default 3/50 of --epochs, the paper's proportion)"
    )
    prune_sparse_epoch: float | None = option(
        None, help="end of the sparsify ramp (default 25/50 of --epochs)"
    )
    prune_finalize_epoch: float | None = option(
        None, help="hard masks + physical pruning (default: --epochs)"
    )
    prune_start_step: int | None = None
    prune_sparse_step: int | None = None
    prune_finalize_step: int | None = None
    update_every: int | None = option(
        None, help="optimizer steps between mask updates (default: ~78 updates over the pruning window)"
    )
    bpi_lr: float = option(5e-4, help="constant lr of the BPI heads")
    bpi_weight_decay: float = 0.05
    mask_lr: float | None = option(
        None,
        help="train the masks with AdamW at this lr between updates (reference "
        "behaviour; default: masks are only set at updates)",
    )
    gate_scales: dict[str, float] = option(
        default_factory=lambda: dict(DEFAULT_GATE_SCALES),
        parse=parse_gate_scales,
        help="per-gate rank scales, e.g. 'attn_out:1.5,mlp_hid:0.75,mlp_out:1.5' (the default)",
    )
    pr_gamma: float = option(0.2, help="EMA weight of the new block importance")
    pr_alpha: float = option(0.5, help="weight of the class-head ΔΨ vs the patch head's")
    tau_max: float = option(0.1, help="soft-mask width while sparsifying")
    tau_min: float = option(0.0, help="soft-mask width at the end of sharpening")
    mask_floor: float = option(
        MASK_FLOOR,
        help="soft-mask values below this become exactly 0, so no weight x mask "
        "product is a slow subnormal float (0 = the plain sigmoid)",
    )
    block_imp_scale: float = option(10.0, help="softplus scale s of γ")
    block_param_only: bool = option(
        False, help="the ratio counts block parameters only (default: the whole model)"
    )
    handcrafted_keep: list[float] | None = option(
        None,
        parse=parse_floats,
        metavar="K1,K2,...",
        help="fixed keep ratios, one per sub-block 'attn0,mlp0,attn1,...' (no BPI)",
    )
    frozen: bool = option(False, help="study: freeze the backbone, train only the BPI heads, prune nothing")
    guards: bool = True
    reference: bool = option(
        False,
        help="switch on every reference-code quirk (trained masks, reference BPI on "
        "every sample, frozen BPI BN, hook gates, subset LayerNorm stats, "
        "finalize re-selection, pure rank threshold)",
    )
    train_masks: bool | None = None
    bpi_frozen_bn: bool | None = None
    finalize_reselect: bool | None = None
    layernorm_mode: str | None = option(
        None,
        choices=("full_stats", "subset_stats"),
        help="pruned LayerNorms keep full statistics (default, exact) or normalise "
        "the kept subset (reference)",
    )
    reference_non_block: bool | None = None
    exact_budget: bool | None = None
    bpi_mode: str | None = option(
        None,
        choices=BPI_MODES,
        help="BPI heads as one grouped computation (default) or 2L separate stacks (reference); same logits",
    )
    bpi_subbatch: float | None = option(
        None,
        help="fraction of each batch the BPI patch heads score (default 0.25; "
        "1.0 with --reference); the class heads always score all",
    )
    bpi_every: int | None = option(
        None,
        help="run the BPI patch heads on every k-th micro-batch (default 4, at most "
        "one update window; 1 with --reference; 1 = most faithful)",
    )
    bpi_every_auto: bool = False  # set by resolved(): bpi_every came from the fast default (may be lowered)
    gate_mode: str | None = option(
        None,
        choices=GATE_MODES,
        help="masks folded into LN/Linear weights (default) or activation hooks (reference)",
    )
    bpi_shadows: list[str] = option(
        default_factory=list,
        flag="--bpi-shadow",
        metavar="SUBBATCH:EVERY[:SEED]",
        help="measurement: extra BPI estimators riding along the run without steering "
        "it, e.g. '0.0625:1 0.25:4' (a SEED gives other initial heads: '1:1:1' = "
        "the noise floor)",
    )
    evaluate_pruned: bool = True
    save_dir: str | None = "auto"

    def resolved(self) -> P3BConfig:
        """A copy with every ``None`` quirk flag set from ``reference``."""
        r = self.reference
        c = dataclasses.replace(
            self, gate_scales=dict(self.gate_scales), bpi_shadows=[str(x) for x in self.bpi_shadows]
        )
        c.bpi_every_auto = self.bpi_every_auto or (self.bpi_every is None and not r)
        for name in ("bpi_frozen_bn", "finalize_reselect", "reference_non_block"):
            if getattr(c, name) is None:
                setattr(c, name, r)
        if c.exact_budget is None:
            c.exact_budget = not r
        if c.train_masks is None:
            c.train_masks = r or c.mask_lr is not None
        if c.layernorm_mode is None:
            c.layernorm_mode = "subset_stats" if r else "full_stats"
        for name, ref_value, fast_value in (
            ("bpi_mode", "reference", "grouped"),
            ("bpi_subbatch", 1.0, FAST_BPI_SUBBATCH),
            ("bpi_every", 1, FAST_BPI_EVERY),
            ("gate_mode", "hooks", "fused"),
        ):
            if getattr(c, name) is None:
                setattr(c, name, ref_value if r else fast_value)
        if c.bpi_mode not in BPI_MODES:
            raise P3BError(f"bpi_mode must be one of {BPI_MODES}, got {c.bpi_mode!r}.")
        if c.gate_mode not in GATE_MODES:
            raise P3BError(f"gate_mode must be one of {GATE_MODES}, got {c.gate_mode!r}.")
        if not 0.0 < c.bpi_subbatch <= 1.0:
            raise P3BError(f"bpi_subbatch must be in (0, 1] (fraction of each batch), got {c.bpi_subbatch}.")
        if int(c.bpi_every) != c.bpi_every or c.bpi_every < 1:
            raise P3BError(f"bpi_every must be an integer >= 1, got {c.bpi_every}.")
        c.bpi_every = int(c.bpi_every)
        for spec in c.bpi_shadows:
            parse_shadow_spec(spec)  # raises a P3BError naming the bad spec
        if c.bpi_shadows and c.handcrafted_keep is not None:
            raise P3BError("bpi_shadows need the BPI heads: they cannot be combined with handcrafted_keep.")
        if c.layernorm_mode not in ("full_stats", "subset_stats"):
            raise P3BError(
                f"layernorm_mode must be 'full_stats' or 'subset_stats', got {c.layernorm_mode!r}."
            )
        if not 0.0 <= c.mask_floor < 0.5:
            raise P3BError(
                f"mask_floor must be in [0, 0.5) (mask values below it become 0), got {c.mask_floor}."
            )
        unknown = set(c.gate_scales) - set(DEFAULT_GATE_SCALES)
        if unknown:
            raise P3BError(
                f"Unknown gate(s) in gate_scales: {sorted(unknown)}; use {sorted(DEFAULT_GATE_SCALES)}."
            )
        return c
