"""``p3b-hf cost``: analytic params/MACs of a dense or pruned model, from its config alone."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model dir or Hub id (only config.json is read)")
    parser.add_argument("--image-size", type=int, default=None, help="count at another input resolution")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..cost import count_cost
    from ..loading import load_config

    cfg = load_config(args.model)
    cost = count_cost(cfg, image_size=args.image_size)
    if args.json:
        print(json.dumps(cost))
    else:
        print(f"{'params':>18} {cost['params']:>14,d}  ({cost['params'] / 1e6:.2f} M)")
        print(f"{'MACs/image':>18} {cost['macs']:>14,d}  ({cost['macs'] / 1e9:.3f} G)")
        print(f"{'block params':>18} {cost['block_params']:>14,d}")
        print(f"{'non-block params':>18} {cost['non_block_params']:>14,d}")
    return 0
