"""Crash safety of ``p3b-hf prune --method p3b``: SIGKILL in the middle of the sparsify phase, then ``--resume``.

One module fixture pays for the runs (tiny ViT, 16 training images, batch 8 -> 2 optimizer steps per epoch,
8 epochs: warm-up [0, 2), sparsify [2, 10), sharpening [10, 16), one checkpoint per epoch):

* an uninterrupted reference run (in-process, 1 thread);
* the same command in a subprocess (``tests/crash_resume_run.py``) that is SIGKILLed right after the
  checkpoint of step 6 (mid-sparsify, 4 mask updates done) is complete;
* ``--resume`` of the killed run (in-process), which must end exactly where the reference ended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_recipes import _tiny_data, _tiny_dense

HERE = Path(__file__).resolve().parent
KILL_STEP = 6  # 3 epochs of 2 steps; sparsify runs over steps [2, 10)
WIDTH_LISTS = {
    "layer_num_heads",
    "layer_head_dims",
    "layer_intermediate_sizes",
    "layer_attn_in",
    "layer_attn_out",
    "layer_mlp_in",
    "layer_mlp_out",
}


def _prune_args(data: Path, dense: Path, out: Path) -> list[str]:
    return [
        "prune",
        "--method",
        "p3b",
        "--model",
        str(dense),
        "--dataset",
        str(data),
        "--output-dir",
        str(out),
        "--prune-ratio",
        "0.5",
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--max-train-samples",
        "16",
        "--prune-start-epoch",
        "1",
        "--prune-sparse-epoch",
        "5",
        "--prune-finalize-epoch",
        "8",
        "--update-every",
        "1",
        "--device",
        "cpu",
        "--augment",
        "basic",
        "--logging-steps",
        "100",
        "--seed",
        "0",
    ]


def _run_in_process(argv: list[str]) -> int:
    """The CLI in this process with 1 intra-op thread, like the subprocess (thread count can change float sums)."""
    from p3b_hf.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def _staging_dirs(parent: Path, out: Path) -> list[str]:
    return sorted(p.name for p in parent.glob(f".{out.name}.staging-*"))


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))
    }
    env.update(
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]),
    )
    return env


TERM_STEP = 3  # mid-epoch 2: only --save-steps 1 (or the SIGTERM itself) checkpoints it


def _start_sigterm_run(root: Path, data: Path, dense: Path) -> tuple[subprocess.Popen, Path, Path, Path]:
    """The same prune command in a subprocess that receives SIGTERM during optimizer step TERM_STEP."""
    out, marker, log = root / "termed", root / "termed.marker", root / "termed.log"
    cmd = [
        sys.executable,
        str(HERE / "crash_resume_run.py"),
        "--term",
        str(TERM_STEP),
        str(marker),
        "--",
        *_prune_args(data, dense, out),
    ]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd, cwd=root, env=_child_env(), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return proc, out, marker, log


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("crash")
    data = _tiny_data(root)
    dense, _ = _tiny_dense(root)
    ref, out = root / "reference", root / "resumed"
    marker = root / "killed.marker"
    env = _child_env()
    cmd = [
        sys.executable,
        str(HERE / "crash_resume_run.py"),
        str(KILL_STEP),
        str(marker),
        "--",
        *_prune_args(data, dense, out),
    ]
    log = root / "killed.log"  # a file, not a pipe: an unread pipe that fills up would stall the run
    with log.open("w") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    term_proc, term_out, term_marker, term_log = _start_sigterm_run(root, data, dense)
    try:
        # the reference runs while the subprocesses import (2 cores)
        assert _run_in_process(_prune_args(data, dense, ref)) == 0
        deadline = time.time() + 240
        while not term_marker.exists() and term_proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert term_marker.exists(), f"never reached step {TERM_STEP}: " + term_log.read_text()[-3000:]
        term_proc.send_signal(signal.SIGTERM)
        term_proc.wait(timeout=120)
        term_work = term_out.with_name(term_out.name + ".work")
        after_term = {
            "returncode": term_proc.returncode,
            "log": term_log.read_text(),
            "output_exists": term_out.exists(),
            "checkpoints": sorted(p.name for p in (term_work / "p3b").glob("checkpoint-*")),
            "staging": _staging_dirs(root, term_out),
            "lock": (root / ".termed.lock").exists(),
            "wall_time_s": json.loads((term_work / "run.json").read_text())["wall_time_s"],
        }
        assert _run_in_process([*_prune_args(data, dense, term_out), "--resume"]) == 0
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the run never reached checkpoint-{KILL_STEP}: " + log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        for p in (proc, term_proc):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
    work = out.with_name(out.name + ".work")
    after_kill = {
        "returncode": proc.returncode,
        "output_exists": out.exists(),
        "checkpoints": sorted(p.name for p in (work / "p3b").glob("checkpoint-*")),
        "state": json.loads((work / "p3b" / f"checkpoint-{KILL_STEP}" / "p3b_state.json").read_text()),
        "staging": _staging_dirs(root, out),
    }
    spare = root / "spare.work"  # an untouched copy for the incomplete-checkpoint test
    shutil.copytree(work, spare)
    assert _run_in_process([*_prune_args(data, dense, out), "--resume"]) == 0
    return {
        "root": root,
        "data": data,
        "dense": dense,
        "ref": ref,
        "out": out,
        "work": work,
        "after_kill": after_kill,
        "spare": spare,
        "termed": term_out,
        "after_term": after_term,
    }


def _widths(d: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = json.loads((d / "config.json").read_text())
    plan = json.loads((d / "width_plan.json").read_text())
    lists = {k: v for k, v in cfg.items() if k.startswith("layer_")}  # per-layer widths and kept indices
    assert WIDTH_LISTS <= lists.keys()
    return lists, plan


def test_sigkill_mid_sparsify_leaves_no_output_and_a_resumable_checkpoint(runs: dict[str, Any]) -> None:
    k = runs["after_kill"]
    assert k["returncode"] == -signal.SIGKILL
    assert not k["output_exists"]  # --output-dir only ever appears complete (atomic rename)
    assert f"checkpoint-{KILL_STEP}" in k["checkpoints"]
    st = k["state"]
    assert not st["finalized"] and st["num_updates"] == KILL_STEP - 2  # updates after steps 3..6
    assert [h["phase"] for h in st["history"]] == ["sparsify"] * (KILL_STEP - 2)
    assert st["history"][-1]["model_keep"] < 0.95  # masks had really moved when the process died


def test_resume_ends_exactly_like_an_uninterrupted_run(runs: dict[str, Any]) -> None:
    ref, out = runs["ref"], runs["out"]
    (ref_lists, ref_plan), (out_lists, out_plan) = _widths(ref), _widths(out)
    assert out_lists == ref_lists
    assert out_plan["layers"] == ref_plan["layers"]  # kept head / head-dim / neuron indices, bias deltas
    assert any(n != 64 for n in ref_lists["layer_intermediate_sizes"])  # something was pruned
    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(
        torch.equal(a[n], b[n]) for n in a
    )  # bit-for-bit, as state.py promises
    r_ref = json.loads((ref / "pruning_report.json").read_text())
    r_out = json.loads((out / "pruning_report.json").read_text())
    assert r_out["pruned"] == r_ref["pruned"] and r_out["eval"] == r_ref["eval"]


def test_resume_removes_its_work_and_staging_dirs(runs: dict[str, Any]) -> None:
    assert not runs["work"].exists()  # checkpoints deleted after success (no --keep-checkpoints)
    killed_staging = set(runs["after_kill"]["staging"])
    assert len(killed_staging) == 1  # the killed run had created its staging dir
    new = set(_staging_dirs(runs["root"], runs["out"])) - killed_staging
    assert not new  # the resumed run's own staging dir became --output-dir
    assert not list(runs["root"].glob(".resumed.old-*"))


def test_resume_removes_the_staging_dir_of_the_killed_run(runs: dict[str, Any]) -> None:
    assert _staging_dirs(runs["root"], runs["out"]) == []


def test_resume_after_a_kill_during_checkpoint_writing(runs: dict[str, Any]) -> None:
    """A kill while the Trainer writes checkpoint-8 leaves it without optimizer / RNG / trainer state (the
    model and ``p3b_state.*`` are written first). ``--resume`` must fall back to the complete checkpoint-6."""
    out = runs["root"] / "torn"
    work = out.with_name(out.name + ".work")
    shutil.copytree(runs["spare"], work)
    done, torn = work / "p3b" / f"checkpoint-{KILL_STEP}", work / "p3b" / f"checkpoint-{KILL_STEP + 2}"
    torn.mkdir()
    for name in ("model.safetensors", "config.json", "p3b_state.safetensors", "p3b_state.json"):
        shutil.copy(done / name, torn / name)
    assert _run_in_process([*_prune_args(runs["data"], runs["dense"], out), "--resume"]) == 0
    assert _widths(out) == _widths(runs["ref"])


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(runs: dict[str, Any]) -> None:
    """SIGTERM (a scheduler, ``docker stop``) in the middle of an epoch: the step finishes, a checkpoint of
    it is written, the process exits 143 (128 + SIGTERM) with one line and no traceback, no output dir;
    ``--resume`` then ends exactly like the uninterrupted run and reports the wall time of both parts."""
    t = runs["after_term"]
    assert t["returncode"] == 128 + signal.SIGTERM, t["log"][-3000:]
    assert "Traceback" not in t["log"] and "KeyboardInterrupt" not in t["log"]
    assert f"p3b-hf prune: stopped by SIGTERM after step {TERM_STEP}; the newest checkpoint is in" in t["log"]
    assert f"checkpoint-{TERM_STEP}" in t["checkpoints"]  # mid-epoch: epoch checkpoints are at 2, 4, ...
    assert not t["output_exists"] and t["staging"] == [] and not t["lock"]
    assert t["wall_time_s"] > 0
    out, ref = runs["termed"], runs["ref"]
    report, ref_report = (json.loads((d / "pruning_report.json").read_text()) for d in (out, ref))
    # a mid-epoch resume continues the same schedule to the same budget (the augmentation draws of the
    # rest of that epoch differ from an uninterrupted run's: the Trainer restores RNG per checkpoint)
    assert report["history"]["schedule"] == ref_report["history"]["schedule"]
    assert (
        abs(report["pruned"]["params"] - ref_report["pruned"]["params"])
        < 0.02 * ref_report["dense"]["params"]
    )
    assert report["wall_time_s"] > t["wall_time_s"]  # the interrupted part counts too
