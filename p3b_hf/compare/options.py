"""What a compare is asked: :class:`CompareOptions` (its own flags), :class:`CompareJob` (those plus the common
data / training / distillation / latency options and the methods' own), and the method options a compare
sets itself in every cell (:func:`check_given` refuses them from the user)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..latency.options import LatencyOptions
from ..options import DataOptions, KDOptions, OutputOptions, TrainOptions, option

PROTOCOLS = ("single", "lodo")
BUDGETS = ("params", "channels", "latency")
#: how the budget refusal names each budget
BUDGET_TEXT = {
    "params": "whole-model parameter fractions",
    "channels": "Torch-Pruning channel ratios",
    "latency": "speed-up targets",
}


GLOBAL_CRITERIA = ("hessian", "taylor", "l1", "l2", "random")
START_SOURCE, START_DENSE = "source", "dense"  # what a cell prunes: the --model, or the dense cell OUT/dense


@dataclass
class CompareOptions:
    """What ``p3b-hf compare`` adds to the common data / training / distillation options and the methods' own."""

    model: str = option(help="source model dir or Hub id (every cell starts from it or from the dense cell)")
    methods: str = option(
        "p3b,vbp,global-taylor,global-hessian",
        help="comma list of p3b, p3b-reference (P3B with --reference: the reference BPI/gate "
        "path), vbp, global-<hessian|taylor|l1|l2|random>, or a registered method",
    )
    prune_ratio: str = option("0.5,0.75", help="comma list of whole-model parameter fractions to remove")
    dense_baseline: bool = option(
        False,
        help="also fine-tune the dense model with the same budget (reference "
        "accuracy); the dense cell is trained anyway when a method starts "
        "from it (vbp, --global-from dense)",
    )
    global_from: str = option(
        START_SOURCE,
        choices=(START_SOURCE, START_DENSE),
        help="what global-* cells prune: the --model (source, default; their fine-tune "
        "trains the new head) or the dense cell fine-tuned on the task (dense). VBP, a "
        "post-training method, always starts from the dense cell and distils from it",
    )
    pad_to: int | None = option(
        None, metavar="N", help="save every pruned cell zero-padded to multiples of N"
    )
    bench_device: str = option(
        "auto", choices=("auto", "cpu", "cuda"), help="where the speed column is measured"
    )
    bench_batch_size: int | None = option(None, help="throughput batch (default: 1024 on GPU, 1 on CPU)")
    bench_repeats: int = option(5, help="timed repeats of the speed column (median)")
    no_bench: bool = option(False, help="skip the throughput measurement")
    deploy_backend: str = option(
        "auto",
        choices=("auto", "onnxruntime", "fast", "none"),
        help="deployable path of the deploy_speed_vs_dense column (CPU, batch "
        "--bench-batch-size or 1): ONNX Runtime fp32 of the folded export when "
        "installed (auto), optimize_for_inference (fast), or none",
    )
    protocol: str = option(
        "single",
        choices=PROTOCOLS,
        help="single: one compare on the data as given; lodo: leave-one-domain-out -- the whole "
        "compare once per held-out domain (needs a domain column: --domain-column, or a "
        "preset such as pacs; --test-domains picks the domains held out, default all), dense cell included, averaged over domains",
    )
    budget: str = option(
        "params",
        choices=BUDGETS,
        help="what --prune-ratio means: params (fraction of whole-model parameters, every method) "
        "or channels (Torch-Pruning's channel ratio, as arXiv 2504.04196 reports its "
        "50/75/95 %%; global-* cells only); latency: cells at the --target-speedups instead "
        "(measured on --speed-backend / --speed-device; docs/latency.md)",
    )
    target_speedups: str | None = option(
        None,
        help="--budget latency: comma list of speed-up targets of the deployed model, e.g. 2,3 "
        "(default: --target-speedup)",
    )


@dataclass
class CompareJob:
    """Everything a compare needs. ``method_options``: per registered method name, the options its cells
    start from (e.g. ``{"p3b": P3BConfig(update_every=10)}``); missing = the method's defaults."""

    compare: CompareOptions
    data: DataOptions
    output: OutputOptions
    train: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    kd: KDOptions = dataclasses.field(default_factory=KDOptions)
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    latency: LatencyOptions = dataclasses.field(default_factory=LatencyOptions)


def compare_sets() -> dict[str, str]:
    """Method options a compare sets itself in every cell, and why a user's value cannot act (each method's
    ``epochs_option``: ``--vbp-epochs``)."""
    from ..methods import all_methods

    return {
        m.traits.epochs_option: (
            f"every cell trains --epochs ({m.display}'s {'' if m.traits.kd == 'none' else 'KD '}fine-tune too)"
        )
        for m in all_methods()
        if m.traits.epochs_option
    }


def check_given(given: Any) -> None:
    """Refuse, as one :class:`~p3b_hf.errors.OptionsError`, an option given to ``compare`` that the compare
    overrides in every cell (``--vbp-epochs``: the cells train ``--epochs``)."""
    from ..errors import OptionsError

    given = {str(g).replace("-", "_") for g in given}
    for name, why in compare_sets().items():
        if name in given:
            raise OptionsError(f"--{name.replace('_', '-')} is not used by compare: {why}.")
