"""``p3b-hf`` command line (also ``python -m p3b_hf``).

Each subcommand lives in ``p3b_hf/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the command given is imported (``p3b-hf --help`` imports none),
so the top-level help is fast. Errors derived from :class:`p3b_hf.P3BError` are printed as one line (no
traceback), exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Any

COMMANDS: dict[str, str] = {
    "prune": "Fine-tune and prune a ViT/DeiT (P3B, VBP or grouped global pruning) -> smaller HF model dir.",
    "finetune": "Fine-tune a (pruned) model with the standard DeiT recipe, optionally with KD.",
    "cost": "Print params and MACs of a model dir, Hub id or config (dense or pruned).",
    "push": "Upload a pruned model dir (weights, config, code, processor, model card) to the Hub.",
    "bench": "Images/s of a pruned model vs its dense original vs an ideal plain ViT of equal shapes.",
    "export": "Export a pruned model dir to ONNX (+ int8), verified in onnxruntime against PyTorch.",
    "compare": "Run several methods at equal whole-model parameter budgets and tabulate/plot them.",
    "demo": "Offline end-to-end demo: transfer-prune a small ViT on generated glyph data (< 5 min on CPU).",
}


ALL = "*"


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The ``p3b-hf`` parser; ``command`` = the one subcommand whose flags are built (``ALL``: every one,
    ``None``: none -- just the command list)."""
    parser = argparse.ArgumentParser(prog="p3b-hf", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"p3b_hf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if command in (ALL, name):
            module = importlib.import_module(f"p3b_hf.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import P3BError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if (
        command == "compare" and "--" in argv
    ):  # `compare ... -- --batch-size 128`: the flags are compare's own
        argv.remove("--")
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    previous = stop_on_sigterm()
    try:
        return int(args._module.run(args) or 0)
    except P3BError as e:
        print(f"p3b-hf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # SIGINT / SIGTERM (RunInterrupted): one line, nothing half-written
        from .errors import RunInterrupted

        code = e.exit_code if isinstance(e, RunInterrupted) else 130
        why = str(e) or "interrupted (SIGINT)"
        print(f"p3b-hf {args.command}: {why}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stop_on_sigterm() -> Any:
    """SIGTERM (schedulers, ``docker stop``) outside training raises like Ctrl-C does, so the run cleans up
    its staging dir and the CLI exits with one line (training checkpoints first: ``training.GracefulStop``).
    Returns the previous handler (None when not in the main thread). ``recipes/run.py`` installs it too."""
    from .errors import RunInterrupted

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise RunInterrupted(
            "stopped by SIGTERM; nothing was written to --output-dir (rerun the command, with --resume if "
            "checkpoints were written)",
            signum,
        )

    return signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
