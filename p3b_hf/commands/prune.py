"""``p3b-hf prune``: fine-tune + prune a ViT/DeiT on a target data set, save a smaller HF model dir.

Common flags live here; each method adds its own (``p3b_hf.methods.<m>.add_cli_arguments``).
Output (written atomically): ``DIR/model.safetensors``, ``config.json`` (per-layer widths),
code files for ``trust_remote_code``, ``preprocessor_config.json``, ``width_plan.json``,
``pruning_report.json`` and ``plots/*.png``.
"""

from __future__ import annotations

import argparse
import copy
import importlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..methods import METHODS

    g = parser.add_argument_group("common")
    g.add_argument("--method", choices=list(METHODS), default="p3b", help="pruning method (default p3b)")
    g.add_argument("--model", required=True, help="Hub id or local model dir (ViT/DeiT image classifier)")
    g.add_argument("--dataset", required=True,
                   help="Hub dataset name, local save_to_disk dir, or imagefolder dir")
    g.add_argument("--image-column", default=None, help="image column (auto: img/image)")
    g.add_argument("--label-column", default=None, help="label column (auto: fine_label/label)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--eval-split", default=None, help="eval split (auto: validation/test, else carved from train)")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir (after success)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep DIR.work/ Trainer checkpoints")
    g.add_argument("--prune-ratio", type=float, default=None,
                   help="fraction of whole-model parameters to remove, e.g. 0.5")
    g.add_argument("--epochs", type=float, default=50.0)
    g.add_argument("--batch-size", type=int, default=64, help="per-device batch size")
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--weight-decay", type=float, default=0.05)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--num-workers", type=int, default=0)
    g.add_argument("--augment", choices=["deit", "glyph", "basic", "none"], default="deit")
    g.add_argument("--mixup", type=float, default=0.8)
    g.add_argument("--cutmix", type=float, default=1.0)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--max-train-samples", type=int, default=None)
    g.add_argument("--max-eval-samples", type=int, default=None)
    g.add_argument("--logging-steps", type=int, default=50)
    g.add_argument("--resume", action="store_true", help="resume from the last checkpoint in DIR.work/")
    g.add_argument("--pad-to", type=int, default=None, metavar="N",
                   help="save the pruned model with every width zero-padded to a multiple of N (e.g. 8): "
                        "exactly the same function, aligned shapes for GPU kernels (p3b_hf.align)")
    for name, module_path in METHODS.items():
        try:
            module = importlib.import_module(module_path)
        except ImportError:  # a method not installed in this build
            continue
        module.add_cli_arguments(parser.add_argument_group(f"--method {name}"))


def run(args: argparse.Namespace) -> int:
    from ..methods import method_module
    from ..pipeline import finish_run, prepare_context, remove_if_empty, summarize

    module = method_module(args.method)
    pad = getattr(args, "pad_to", None)
    if pad is not None and pad < 1:  # fail before training, not after
        from ..errors import P3BError

        raise P3BError(f"--pad-to {pad} is invalid; give a positive channel multiple such as 8 (or leave it out).")
    ctx = prepare_context(args)
    dense = copy.deepcopy(ctx.model).cpu()
    try:
        result = module.run_cli(args, ctx)
    except BaseException:
        import shutil

        shutil.rmtree(ctx.staging_dir, ignore_errors=True)
        remove_if_empty(ctx.work_dir)  # refused before training (e.g. an unreachable budget): no trace left
        raise
    report = finish_run(ctx, result, dense)
    print(summarize(report))
    print(f"saved to {args.output_dir}")
    return 0
