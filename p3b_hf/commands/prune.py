"""``p3b-hf prune``: fine-tune + prune a ViT/DeiT on a target data set, save a smaller HF model dir.

The flags are generated from the option dataclasses (:mod:`p3b_hf.options`: model/method/budget, data,
training, output, distillation) and from each registered method's options, one group per method; the
run itself is :func:`p3b_hf.runner.prune`. Output (written atomically): ``DIR/model.safetensors``,
``config.json`` (per-layer widths), code files for ``trust_remote_code``, ``preprocessor_config.json``,
``width_plan.json``, ``pruning_report.json`` and ``plots/*.png``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..methods import METHODS, get_method
    from ..options import DataOptions, KDOptions, OutputOptions, PruneOptions, TrainOptions, add_options

    add_options(parser, PruneOptions, title="model, method and budget", choices={"method": list(METHODS)})
    add_options(parser, DataOptions, title="data")
    add_options(parser, TrainOptions, title="training")
    add_options(parser, OutputOptions, title="output")
    add_options(parser, KDOptions, title="knowledge distillation (P3B-Dist, VBP)")
    from ..latency.options import LatencyOptions

    add_options(parser, LatencyOptions, title="latency budget (instead of --prune-ratio; docs/latency.md)")
    for name in METHODS:
        try:
            method = get_method(name)
        except ImportError:  # a method whose optional dependencies are not installed
            continue
        add_options(parser, method.options, title=f"--method {name}: {method.description}")


def job_from_args(args: argparse.Namespace) -> object:
    """The :class:`~p3b_hf.runner.PruneJob` the parsed flags describe; a flag the chosen method would not
    read is one :class:`~p3b_hf.errors.OptionsError` naming the right one
    (:func:`~p3b_hf.runner.check_given_options`)."""
    from ..latency.options import LatencyOptions
    from ..methods import get_method
    from ..options import (
        DataOptions,
        KDOptions,
        OutputOptions,
        PruneOptions,
        TrainOptions,
        given_options,
        options_from_namespace,
    )
    from ..runner import PruneJob, check_given_options

    method = get_method(args.method)
    check_given_options(method.name, given_options(args), options_from_namespace(KDOptions, args))
    return PruneJob(
        prune=options_from_namespace(PruneOptions, args),
        data=options_from_namespace(DataOptions, args),
        output=options_from_namespace(OutputOptions, args),
        train=options_from_namespace(TrainOptions, args),
        kd=options_from_namespace(KDOptions, args),
        method_options=options_from_namespace(method.options, args),
        latency=options_from_namespace(LatencyOptions, args),
    )


def run(args: argparse.Namespace) -> int:
    from ..report import summarize
    from ..runner import prune

    result = prune(job_from_args(args))
    print(summarize(result.report))
    print(f"saved to {result.output_dir}")
    return 0
