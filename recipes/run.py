#!/usr/bin/env python
"""Run a YAML recipe (prune -> fine-tune -> optional push, or a compare) on 1..N processes.

    accelerate launch --config_file recipes/accelerate/4gpu_bf16.yaml recipes/run.py \
        recipes/p3b/deit_small_cifar100_p50.yaml [--set vars.dataset=/data/cifar100] [--stages prune]

A recipe is YAML with
  ``base``: another recipe file to inherit from (deep-merged; this file wins),
  ``vars``: strings substituted into every ``{name}`` of the stage args (``output_root`` et al.),
  ``stages``: ``name -> {command: prune|finetune|compare, global_batch_size: N?, args: {option: value}}`` run
      in order; args are the command's options by field name (``prune_ratio: 0.5`` is ``--prune-ratio 0.5``; a
      method's options too, e.g. ``update_every``); they become the typed options of :mod:`p3b_hf.options` and
      the stage runs :func:`p3b_hf.runner.prune` / :func:`p3b_hf.runner.finetune` /
      :func:`p3b_hf.compare.run_compare` (no command line is built),
  ``push_to_hub`` / ``hub_repo_id`` / ``hub_private``: push the last stage's output dir with
      :func:`p3b_hf.hub.push_pruned` (main process only).

``global_batch_size`` keeps a recipe's optimisation identical on any number of processes: the runner sets
``--grad-accum-steps`` (when the command has it) or the per-device ``--batch-size`` so that
per-device x processes x accumulation equals it. Mixed precision and ``--cpu`` come from the accelerate
config (``ACCELERATE_MIXED_PRECISION`` / ``ACCELERATE_USE_CPU``) unless the stage sets them.
``--fingerprint-dir DIR``: every rank writes ``DIR/<stage>.rank<r>.json`` (per-layer widths + sha256 of its
final weights) for stages whose command returns its model -- the DDP consistency check used by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

COMMANDS = ("prune", "finetune", "compare")


# ------------------------------------------------------------------------------------------- recipe files
def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe and the chain of ``base`` files it inherits from."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"recipe {path} does not exist (see recipes/README.md for the list)")
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("base", None)
    if base:
        data = deep_merge(load_recipe(path.parent / base), data)
    return data


def apply_overrides(recipe: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``--set a.b.c=value`` (value parsed as YAML: numbers, true/false, null, strings)."""
    recipe = copy.deepcopy(recipe)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: use dotted.key=value, e.g. stages.prune.args.epochs=1")
        parts = key.split(".")
        if parts[0] in recipe.get("stages", {}) and parts[0] not in ("vars", "stages"):
            parts = ["stages", parts[0], "args", *parts[1:]]  # shorthand: prune.epochs=1
        node = recipe
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return recipe


def _substitute(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{" in value:
        try:
            return value.format_map(variables)
        except KeyError as e:
            raise SystemExit(f"recipe value {value!r} uses {{{e.args[0]}}}, which is not in vars") from e
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    return value


def resolve_vars(raw: dict[str, Any]) -> dict[str, str]:
    """Vars may refer to each other (``dataset: "{data_root}/ifood2019"``); resolve until nothing changes."""
    variables = {k: str(v) for k, v in raw.items()}
    for _ in range(len(variables) + 1):
        new = {k: _substitute(v, variables) for k, v in variables.items()}
        if new == variables:
            if not any("{" + k + "}" in v for k in variables for v in variables.values()):
                return variables
            break
        variables = new
    raise SystemExit(f"recipe vars refer to each other in a cycle: {variables}")


def world() -> tuple[int, int]:
    """(rank, processes) of this launch (p3b_hf.runtime: the process group's, else the launcher's env)."""
    from p3b_hf.runtime import rank, world_size

    return rank(), world_size()


def stage_job(stage: dict[str, Any], variables: dict[str, Any], name: str = "stage") -> tuple[str, Any]:
    """``(command, job)`` of a stage for this launch: vars substituted, the global batch split over the
    processes (per-device batch, or gradient accumulation where the command has it), precision and
    device from the accelerate config. Unknown or mistyped options are one error naming them."""
    from p3b_hf.methods import METHODS, get_method
    from p3b_hf.options import (
        FINETUNE_DEFAULTS,
        DataOptions,
        FinetuneOptions,
        KDOptions,
        OutputOptions,
        PruneOptions,
        TrainOptions,
        options_from_mapping,
    )
    from p3b_hf.runner import FinetuneJob, PruneJob, check_given_kd, check_given_options

    command = stage.get("command", name)
    if command not in COMMANDS:
        raise SystemExit(f"unknown command {command!r} in recipe; use one of {COMMANDS}")
    args = {k: _substitute(v, variables) for k, v in (stage.get("args") or {}).items()}
    defaults = FINETUNE_DEFAULTS if command == "finetune" else {}
    _, n_proc = world()
    gbs = stage.get("global_batch_size")
    if gbs:
        per_device = int(args.get("batch_size") or defaults.get("batch_size") or TrainOptions().batch_size)
        if command == "finetune" and gbs % (per_device * n_proc) == 0:
            args["grad_accum_steps"] = gbs // (per_device * n_proc)
        elif gbs % n_proc == 0:
            args["batch_size"] = gbs // n_proc
            args.pop("grad_accum_steps", None)
        else:
            raise SystemExit(
                f"global_batch_size {gbs} is not divisible by {n_proc} processes; change "
                "--num_processes or the recipe's global_batch_size"
            )
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision in ("bf16", "fp16") and not args.get("bf16") and not args.get("fp16"):
        args[precision] = True
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        args["device"] = "cpu"
    common = [DataOptions, TrainOptions, OutputOptions, KDOptions]
    what = f"recipe stage {name!r} ({command})"
    if command == "finetune":
        o = options_from_mapping([FinetuneOptions, *common], args, what, defaults=defaults)
        with _named(what):
            check_given_kd(set(args), o[KDOptions], "p3b-hf finetune", needs_teacher=True)
        return command, FinetuneJob(
            finetune=o[FinetuneOptions],
            data=o[DataOptions],
            output=o[OutputOptions],
            train=o[TrainOptions],
            kd=o[KDOptions],
        )
    if command == "compare":
        from p3b_hf.compare import CompareJob, CompareOptions, check_given

        methods = {name: get_method(name).options for name in METHODS}
        o = options_from_mapping([CompareOptions, *common, *methods.values()], args, what)
        with _named(what):
            check_given(args)  # vbp_epochs: every cell trains `epochs`
        return command, CompareJob(
            compare=o[CompareOptions],
            data=o[DataOptions],
            output=o[OutputOptions],
            train=o[TrainOptions],
            kd=o[KDOptions],
            method_options={name: o[cls] for name, cls in methods.items()},
        )
    method = get_method(str(args.get("method", "p3b")))
    # every method's keys are known, so another method's option is refused by name, not as "unknown"
    others = [get_method(n).options for n in METHODS if n != method.name]
    o = options_from_mapping([PruneOptions, *common, method.options, *others], args, what)
    with _named(what):
        check_given_options(method.name, set(args), o[KDOptions])
    return command, PruneJob(
        prune=o[PruneOptions],
        data=o[DataOptions],
        output=o[OutputOptions],
        train=o[TrainOptions],
        kd=o[KDOptions],
        method_options=o[method.options],
    )


@contextlib.contextmanager
def _named(what: str) -> Any:
    """Prefix an option error with the recipe stage it comes from."""
    from p3b_hf.errors import OptionsError

    try:
        yield
    except OptionsError as e:
        raise OptionsError(f"{what}: {e}") from e


def describe(command: str, job: Any) -> str:
    """The equivalent ``p3b-hf`` command line (printed; never parsed)."""
    from p3b_hf.options import command_line

    parts = [getattr(job, k, None) for k in ("prune", "finetune", "compare", "data", "train", "output", "kd")]
    options = getattr(job, "method_options", None)
    parts += list(options.values()) if isinstance(options, dict) else [options]
    return f"p3b-hf {command} " + command_line(*parts)


def fingerprint(model: Any) -> dict[str, Any]:
    from p3b_hf.report import model_fingerprint

    return model_fingerprint(model)


def barrier() -> None:
    """Wait for every rank (the Trainer has set up the process group; nothing to wait for otherwise)."""
    from p3b_hf.runtime import barrier as _barrier

    _barrier()


def push_output(
    recipe: dict[str, Any], output_dir: str | None, variables: dict[str, str], api: Any = None
) -> Any:
    """``push_to_hub: true``: upload the last stage's model dir (weights, code, processor, report, card)."""
    from p3b_hf.hub import push_pruned

    repo = _substitute(recipe.get("hub_repo_id"), variables)
    if not repo or output_dir is None:
        raise SystemExit("push_to_hub: true needs hub_repo_id and at least one stage that ran")
    result = push_pruned(output_dir, repo, private=recipe.get("hub_private"), api=api)
    print(f"pushed {output_dir} to {result.commit_url}")
    return result


def _run_stages(
    opts: argparse.Namespace,
    stages: dict[str, Any],
    chosen: list[str],
    variables: dict[str, Any],
    rank: int,
    n_proc: int,
) -> str | None | bool:
    """Run the chosen stages in order; the last stage's output dir (None after a compare), False on an error
    (printed as one line)."""
    from p3b_hf.compare import run_compare
    from p3b_hf.errors import P3BError
    from p3b_hf.runner import finetune, prune

    last_output = None
    for name in chosen:
        try:
            command, job = stage_job(stages[name], variables, name)
        except P3BError as e:  # one line, as `p3b-hf` prints it
            print(f"[rank {rank}] stage {name}: error: {e}", file=sys.stderr)
            return False
        print(f"[rank {rank}/{n_proc}] stage {name}: {describe(command, job)}", flush=True)
        if opts.dry_run:
            continue
        try:
            if command == "compare":  # its cells are prune/finetune runs; the table is its output
                run_compare(job)
                barrier()
                last_output = None
                continue
            result = prune(job) if command == "prune" else finetune(job)
        except P3BError as e:
            print(f"[rank {rank}] stage {name}: error: {e}", file=sys.stderr)
            return False
        if opts.fingerprint_dir:
            out = Path(opts.fingerprint_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.rank{rank}.json").write_text(json.dumps(fingerprint(result.model)))
        barrier()
        last_output = job.output.output_dir
    return last_output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="recipe YAML")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value: vars.dataset=/data/x, prune.epochs=1, push_to_hub=true",
    )
    ap.add_argument("--stages", default=None, help="comma-separated subset of the recipe's stages to run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    ap.add_argument("--fingerprint-dir", default=None, help="write per-rank model fingerprints here")
    opts = ap.parse_args(argv)

    recipe = apply_overrides(load_recipe(opts.recipe), opts.set)
    variables = resolve_vars(recipe.get("vars") or {})
    stages: dict[str, Any] = recipe.get("stages") or {}
    chosen = opts.stages.split(",") if opts.stages else list(stages)
    unknown = [s for s in chosen if s not in stages]
    if unknown:
        raise SystemExit(f"stages {unknown} are not in the recipe (it has {list(stages)})")
    from p3b_hf.cli import stop_on_sigterm
    from p3b_hf.errors import RunInterrupted

    rank, n_proc = world()
    previous = stop_on_sigterm()  # SIGTERM like Ctrl-C: checkpoints, staging cleaned up, one line below
    try:
        last_output = _run_stages(opts, stages, chosen, variables, rank, n_proc)
    except KeyboardInterrupt as e:  # SIGINT / SIGTERM (RunInterrupted): one line, as `p3b-hf` prints it
        code = e.exit_code if isinstance(e, RunInterrupted) else 130
        print(f"[rank {rank}] {str(e) or 'interrupted (SIGINT)'}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if last_output is False:
        return 2
    if recipe.get("push_to_hub") and not opts.dry_run and rank == 0:
        push_output(recipe, last_output, variables)
    print(f"[rank {rank}/{n_proc}] recipe {opts.recipe} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    sys.exit(main())
