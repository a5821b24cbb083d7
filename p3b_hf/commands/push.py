"""``p3b-hf push``: upload a pruned model dir (weights, per-layer-width config, remote code, image
processor, report, plots and a generated model card) to the Hub in one commit, after a pre-flight check of
offline mode, the token and the connection (:func:`p3b_hf.hub.check_hub_access`). The flags are generated
from :class:`p3b_hf.options.PushOptions`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import PushOptions, add_options

    add_options(parser, PushOptions)


def run(args: argparse.Namespace) -> int:
    from ..hub import push
    from ..options import PushOptions, options_from_namespace

    result = push(options_from_namespace(PushOptions, args))
    print(
        f"pushed {len(result.files)} files to {result.repo_id}"
        + (f"@{result.revision}" if result.revision else "")
        + f": {result.commit_url}"
    )
    for name in result.files:
        print(f"  {name}")
    return 0
