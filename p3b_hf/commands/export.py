"""``p3b-hf export``: a pruned model dir -> ``DIR/onnx/model.onnx`` (+ ``model_int8.onnx``), verified in
onnxruntime against PyTorch before anything is written (see :mod:`p3b_hf.export`, docs/export.md). The flags are
generated from :class:`p3b_hf.export.ExportOptions`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import ExportOptions
    from ..options import add_options

    add_options(parser, ExportOptions)


def run(args: argparse.Namespace) -> int:
    from ..export import ExportOptions, export
    from ..options import options_from_namespace

    result = export(options_from_namespace(ExportOptions, args))
    sizes = {f["file"]: f["bytes"] for f in result.report["files"].values()}
    print(
        f"wrote {result.output_dir}: "
        + ", ".join(
            f"{name} ({sizes[name] / 1e6:.2f} MB)" if name in sizes else name for name in result.files
        )
    )
    return 0
