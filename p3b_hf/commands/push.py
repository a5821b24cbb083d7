"""``p3b-hf push``: upload a pruned model dir (weights, per-layer-width config, remote code, image
processor, report, plots and a generated model card) to the Hub in one commit, after a pre-flight check of
offline mode, the token and the connection (:func:`p3b_hf.hub.check_hub_access`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model dir written by `p3b-hf prune` or `p3b-hf finetune`"
    )
    parser.add_argument("--repo-id", required=True, help="target Hub repo, e.g. me/deit-small-cifar100-p3b50")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it is new)")
    parser.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    parser.add_argument(
        "--create-pr", action="store_true", help="open a pull request instead of pushing to a branch"
    )
    parser.add_argument("--commit-message", default=None)
    parser.add_argument(
        "--token",
        default=None,
        help="Hub token (default: HF_TOKEN / `hf auth login`); it and the connection are checked before the "
        "model is read (offline mode, no token, a rejected token, no connection: one line, exit 2)",
    )
    parser.add_argument(
        "--dataset-name",
        default=None,
        help="Hub data set id for the model card (default: the one in pruning_report.json)",
    )
    parser.add_argument("--license", default=None, help="license tag for the model card, e.g. apache-2.0")
    parser.add_argument(
        "--no-model-card",
        action="store_true",
        help="do not generate README.md (an existing README.md in the dir is uploaded instead)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the load + forward check before uploading"
    )
    parser.add_argument(
        "--with-onnx",
        action="store_true",
        help="also upload onnx/ (model.onnx, model_int8.onnx, export_report.json from `p3b-hf export`) "
        "and describe it in the model card",
    )


def run(args: argparse.Namespace) -> int:
    from ..hub import push_pruned

    result = push_pruned(
        args.model,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        create_pr=args.create_pr,
        dataset=args.dataset_name,
        license=args.license,
        model_card=not args.no_model_card,
        verify=not args.no_verify,
        with_onnx=args.with_onnx,
    )
    print(
        f"pushed {len(result.files)} files to {result.repo_id}"
        + (f"@{result.revision}" if result.revision else "")
        + f": {result.commit_url}"
    )
    for name in result.files:
        print(f"  {name}")
    return 0
