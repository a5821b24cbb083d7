"""``p3b-hf prune`` -- not implemented yet (filled in by a later issue)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Not implemented yet."


def run(args: argparse.Namespace) -> int:
    raise SystemExit("p3b-hf prune is not implemented yet.")
