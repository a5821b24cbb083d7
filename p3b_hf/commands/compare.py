"""``p3b-hf compare``: every method at equal whole-model parameter budgets, one table and one plot.

Flags: the compare's own (:class:`~p3b_hf.compare.CompareOptions`), the common data / training / output /
distillation options of ``p3b-hf prune``, and every method's options (they set the method's cells, e.g.
``--update-every 10`` for the P3B cells). Flags may also follow a ``--`` (``compare ... -- --batch-size
128``), as in earlier versions. The run is :func:`p3b_hf.compare.run_compare`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..compare import CompareOptions
    from ..methods import METHODS, get_method
    from ..options import DataOptions, KDOptions, OutputOptions, TrainOptions, add_options

    add_options(parser, CompareOptions, title="compare")
    add_options(parser, DataOptions, title="data")
    add_options(
        parser,
        TrainOptions,
        title="training (every cell: P3B's pruning run, VBP's/global's fine-tune, dense)",
    )
    add_options(parser, OutputOptions, title="output")
    add_options(parser, KDOptions, title="knowledge distillation")
    from ..latency.options import LatencyOptions

    add_options(parser, LatencyOptions, title="latency budget (--budget latency; docs/latency.md)")
    for name in METHODS:
        try:
            method = get_method(name)
        except ImportError:
            continue
        add_options(parser, method.options, title=f"--methods {name}: {method.description}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..compare import CompareJob, CompareOptions, check_given, markdown_table, run_compare
    from ..latency.options import LatencyOptions
    from ..methods import METHODS, get_method
    from ..options import (
        DataOptions,
        KDOptions,
        OutputOptions,
        TrainOptions,
        given_options,
        options_from_namespace,
    )

    check_given(given_options(args))  # --vbp-epochs: every cell trains --epochs
    method_options = {}
    for name in METHODS:
        try:
            method_options[name] = options_from_namespace(get_method(name).options, args)
        except ImportError:
            continue
    job = CompareJob(
        compare=options_from_namespace(CompareOptions, args),
        data=options_from_namespace(DataOptions, args),
        output=options_from_namespace(OutputOptions, args),
        train=options_from_namespace(TrainOptions, args),
        kd=options_from_namespace(KDOptions, args),
        method_options=method_options,
        latency=options_from_namespace(LatencyOptions, args),
    )
    from ..latency.options import check_given_latency

    check_given_latency(
        given_options(args), job.compare.budget == "latency", "add --budget latency --target-speedups X"
    )
    rows = run_compare(job)
    out = Path(job.output.output_dir)
    print(markdown_table(rows))
    print(f"table: {out / 'compare.md'}  plot: {out / 'accuracy_vs_params.png'}")
    return 0
