"""``p3b-hf cost``: analytic params/MACs of a dense or pruned model, from its config alone. The flags are
generated from :class:`p3b_hf.options.CostOptions`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..options import CostOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import CostOptions, add_options

    add_options(parser, CostOptions)


def cost(opts: CostOptions) -> dict[str, Any]:
    """The model's :func:`p3b_hf.cost.count_cost` (its config only, at ``--image-size`` if given)."""
    from ..cost import count_cost
    from ..loading import load_config

    return count_cost(load_config(opts.model), image_size=opts.image_size)


def run(args: argparse.Namespace) -> int:
    from ..options import CostOptions, options_from_namespace

    opts = options_from_namespace(CostOptions, args)
    result = cost(opts)
    if opts.json:
        print(json.dumps(result))
    else:
        print(f"{'params':>18} {result['params']:>14,d}  ({result['params'] / 1e6:.2f} M)")
        print(f"{'MACs/image':>18} {result['macs']:>14,d}  ({result['macs'] / 1e9:.3f} G)")
        print(f"{'block params':>18} {result['block_params']:>14,d}")
        print(f"{'non-block params':>18} {result['non_block_params']:>14,d}")
    return 0
