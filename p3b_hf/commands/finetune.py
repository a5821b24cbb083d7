"""``p3b-hf finetune``: plain DeiT-recipe fine-tune of a (pruned) model dir, optionally with KD.

This is P3B's second stage (README: "fine-tune pruned model"): the physically pruned model is trained
like any DeiT -- AdamW, cosine schedule to ``--min-lr``, Mixup 0.8 / CutMix 1.0 / label smoothing 0.1,
the DeiT augmentations -- with no masks. The defaults are the reference fine-tune recipe
(docs/p3b.md §7, §8): 300 epochs, lr 5e-4 for a global batch of 512 (scaled linearly with the global
batch unless ``--lr`` is given), weight decay 0.05, no warm-up, min lr 1e-5.

Works on any ``AutoModelForImageClassification`` dir of a supported family (pruned or stock). A classifier
whose labels differ from the data set's is replaced by a fresh head, as ``p3b-hf prune`` does (one WARNING
line: old -> new label count; ``--new-head`` is kept for compatibility). ``--teacher DIR`` adds knowledge distillation. The run is :func:`p3b_hf.runner.finetune`;
its output's ``pruning_report.json`` is the input's report plus a ``finetune`` section, so
``p3b-hf push`` shows both accuracies. Runs under ``accelerate launch`` / ``torchrun`` unchanged.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import (
        FINETUNE_DEFAULTS,
        DataOptions,
        FinetuneOptions,
        KDOptions,
        OutputOptions,
        TrainOptions,
        add_options,
    )

    add_options(parser, FinetuneOptions, title="model and schedule")
    add_options(parser, DataOptions, title="data")
    add_options(
        parser,
        TrainOptions,
        title="training (defaults: the P3B reference fine-tune)",
        defaults=FINETUNE_DEFAULTS,
    )
    add_options(parser, OutputOptions, title="output")
    add_options(parser, KDOptions, title="knowledge distillation", defaults=FINETUNE_DEFAULTS)


def job_from_args(args: argparse.Namespace) -> object:
    """The :class:`~p3b_hf.runner.FinetuneJob` the parsed flags describe (KD flags that cannot act -- no
    ``--teacher`` -- are refused, :func:`~p3b_hf.runner.check_given_kd`)."""
    from ..options import (
        DataOptions,
        FinetuneOptions,
        KDOptions,
        OutputOptions,
        TrainOptions,
        given_options,
        options_from_namespace,
    )
    from ..runner import FinetuneJob, check_given_kd

    kd = options_from_namespace(KDOptions, args)
    check_given_kd(given_options(args), kd, "p3b-hf finetune", needs_teacher=True)
    return FinetuneJob(
        finetune=options_from_namespace(FinetuneOptions, args),
        data=options_from_namespace(DataOptions, args),
        output=options_from_namespace(OutputOptions, args),
        train=options_from_namespace(TrainOptions, args),
        kd=kd,
    )


def run(args: argparse.Namespace) -> int:
    from ..runner import finetune

    result = finetune(job_from_args(args))
    acc = result.metrics.get("accuracy")
    print(
        f"fine-tuned {args.model} for {args.epochs:g} epochs"
        + (f": eval accuracy {100 * acc:.2f} %" if acc is not None else "")
    )
    from ..report import eval_set_lines

    ft = result.report.get("finetune") or {}
    for line in eval_set_lines(ft.get("eval_sets"), gap=ft.get("domain_gap")):
        print(line)
    print(f"saved to {result.output_dir}")
    return 0
