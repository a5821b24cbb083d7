"""Records what every rank computes in a VBP and a P3B ``p3b-hf prune`` run (not a test file).

``torchrun --nproc_per_node 2 tests/ddp_consistency_run.py OUT DATA DENSE GLOBAL_BATCH`` (or the same
:func:`run_all` in-process for one process) runs the real CLI for every entry of :data:`RUNS` -- VBP
statistics + plan (no fine-tune), P3B, VBP again -- with the per-device batch ``GLOBAL_BATCH / world``, and
writes ``OUT/<run>_rank{r}.pt``:

* VBP: the per-rank sample count of the calibration loader, the all-reduced per-layer moments
  (count / mean / M2) and the plan each rank computed *before* ``broadcast_plan`` replaces it by rank 0's;
* P3B: the samples of every training micro-batch, after every mask update the window's ΔΨ, the block keep
  ratios and all mask values, and the finalised plan.

Configuration for a fair 1-vs-N-process comparison: no random augmentation / Mixup / CutMix (their draws come
from per-process RNG streams), BPI heads on every whole micro-batch (``--bpi-subbatch 1 --bpi-every 1``; a
sub-batch is the *leading* rows of each rank's batch, i.e. other samples), and the BPI BatchNorms frozen
(train-mode BN normalises with per-rank batch statistics, a different estimator than one process's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from cli_args import tiny_train_args


def _rank() -> int:
    """The launcher's rank (the process group may not be initialised yet, see the "vbp" run)."""
    return int(os.environ.get("RANK", "0"))


def file_barrier(sync: Path, name: str, timeout: float = 180.0) -> None:
    """Wait until every launched process got here. Test scaffolding for the "vbp" run, which has no process
    group: without it rank 1 can still be loading when rank 0 has already renamed its output into place (and
    then fails the --output-dir check), or write DIR.work/vbp.width_plan.json after rank 0 removed DIR.work
    (see the xfail test in tests/test_distributed_consistency.py)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return
    sync.mkdir(parents=True, exist_ok=True)
    (sync / f"{name}.{_rank()}").touch()
    deadline = time.time() + timeout
    while not all((sync / f"{name}.{r}").exists() for r in range(world)):
        if time.time() > deadline:
            raise TimeoutError(f"file barrier {name}: not every rank arrived")
        time.sleep(0.05)


@contextlib.contextmanager
def recording(sync: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Wrap the VBP / P3B pieces the CLI calls so that each rank's results are kept; restores them on exit.

    ``sync``: folder for the file barriers around VBP's statistics (see :func:`file_barrier`)."""
    import p3b_hf.methods.calibration as common
    import p3b_hf.methods.p3b.method as p3b_mod
    import p3b_hf.methods.vbp as vbp
    from p3b_hf.methods.p3b.pruner import P3BPruner
    from p3b_hf.trainer import P3BTrainer

    rec: dict[str, dict[str, Any]] = {"vbp": {}, "p3b": {"updates": [], "batches": []}}
    saved = {
        (common, "calibration_loader"): common.calibration_loader,
        (vbp, "collect_mlp_activation_stats"): vbp.collect_mlp_activation_stats,
        (vbp, "vbp_plan_from_stats"): vbp.vbp_plan_from_stats,
        (p3b_mod, "run"): p3b_mod.run,
        (P3BPruner, "update"): P3BPruner.update,
        (P3BPruner, "finalize"): P3BPruner.finalize,
        (P3BTrainer, "compute_loss"): P3BTrainer.compute_loss,
        (common, "save_plan_cache"): common.save_plan_cache,
    }

    def loader(dataset: Any, *a: Any, **kw: Any) -> Any:
        file_barrier(sync, "loader")  # every rank has passed prepare_context's --output-dir check
        dl = saved[(common, "calibration_loader")](dataset, *a, **kw)
        rec["vbp"]["local_samples"] = len(dl.dataset)
        return dl

    def plan_cache(*a: Any, **kw: Any) -> None:
        saved[(common, "save_plan_cache")](*a, **kw)
        file_barrier(sync, "plan_cache")  # before rank 0's finish_run removes DIR.work

    def stats(*a: Any, **kw: Any) -> Any:
        s = saved[(vbp, "collect_mlp_activation_stats")](*a, **kw)
        rec["vbp"]["stats"] = [(m.count, m.mean.clone(), m.m2.clone()) for m in s]
        return s

    def plan(*a: Any, **kw: Any) -> Any:
        p = saved[(vbp, "vbp_plan_from_stats")](*a, **kw)
        rec["vbp"]["plan"] = p.to_dict()
        return p

    def p3b_run(
        ctx: Any, options: Any
    ) -> Any:  # the BPI BatchNorms frozen (no batch statistics across ranks)
        return saved[(p3b_mod, "run")](ctx, dataclasses.replace(options, bpi_frozen_bn=True))

    def update(self: P3BPruner, done: int, **kw: Any) -> dict[str, Any]:
        entry = saved[(P3BPruner, "update")](self, done, **kw)
        masks = torch.cat([m.detach().double().reshape(-1).cpu() for _, _, m in self.gates.named_masks()])
        rec["p3b"]["updates"].append(
            {
                "step": done,
                "keep_target": list(entry["keep_target"]),
                "keep_achieved": list(entry["keep_achieved"]),
                "masks": masks,
                "model_keep": entry["model_keep"],
                "dpsi": (entry["dpsi_cls"], entry["dpsi_patch"]),
            }
        )
        return entry

    def finalize(self: P3BPruner, done: int) -> Any:
        p = saved[(P3BPruner, "finalize")](self, done)
        rec["p3b"]["plan"] = p.to_dict()
        return p

    def loss(self: P3BTrainer, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
        if model.training:  # which samples this micro-batch holds: a per-image pixel sum
            rec["p3b"]["batches"].append(
                (self.state.global_step, inputs["pixel_values"].double().sum((1, 2, 3)).cpu())
            )
        return saved[(P3BTrainer, "compute_loss")](self, model, inputs, *a, **kw)

    new = {
        (common, "calibration_loader"): loader,
        (vbp, "collect_mlp_activation_stats"): stats,
        (vbp, "vbp_plan_from_stats"): plan,
        (p3b_mod, "run"): p3b_run,
        (P3BPruner, "update"): update,
        (P3BPruner, "finalize"): finalize,
        (P3BTrainer, "compute_loss"): loss,
        (common, "save_plan_cache"): plan_cache,
    }
    for (owner, name), fn in new.items():
        setattr(owner, name, fn)
    try:
        yield rec
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


#: the runs, in order. "vbp" runs first in a fresh process, like a real VBP run; "vbp_sharded" repeats it after
#: the P3B Trainer has initialised the process group, so that its statistics pass is sharded and all-reduced.
RUNS: dict[str, list[str]] = {
    "vbp": ["--method", "vbp", "--percentage", "0.4", "--vbp-epochs", "0"],
    "p3b": [
        "--method",
        "p3b",
        "--prune-ratio",
        "0.5",
        "--epochs",
        "4",
        "--prune-start-epoch",
        "1",
        "--prune-sparse-epoch",
        "2",
        "--prune-finalize-epoch",
        "4",
        "--update-every",
        "1",
        "--bpi-subbatch",
        "1",
        "--bpi-every",
        "1",
    ],
}
RUNS["vbp_sharded"] = RUNS["vbp"]


def run_all(out: Path, data: Path, dense: Path, global_batch: int, world: int) -> None:
    """Every run of :data:`RUNS` through ``p3b_hf.cli.main``; writes ``OUT/<run>_rank{r}.pt`` per rank."""
    from p3b_hf.cli import main

    common = [
        "--model",
        str(dense),
        "--dataset",
        str(data),
        *tiny_train_args(batch_size=global_batch // world),
        "--seed",
        "0",
        "--logging-steps",
        "100",
    ]
    out.mkdir(parents=True, exist_ok=True)
    for name, argv in RUNS.items():
        with recording(out.parent / f"{out.name}.sync" / name) as rec:
            assert main(["prune", *argv, "--output-dir", str(out / name), *common]) == 0
        key = "p3b" if name == "p3b" else "vbp"
        torch.save(rec[key], out / f"{name}_rank{_rank()}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    out_dir, data_dir, dense_dir, gb = sys.argv[1:5]
    run_all(Path(out_dir), Path(data_dir), Path(dense_dir), int(gb), int(os.environ.get("WORLD_SIZE", "1")))
