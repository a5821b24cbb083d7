"""Two CPU processes (torchrun, gloo) vs one process, through the real ``p3b-hf prune`` CLI.

``tests/ddp_consistency_run.py`` runs VBP (statistics + plan), P3B, and VBP again (after the P3B Trainer has
initialised the process group) once under ``torchrun --nproc_per_node 2`` with per-device batch 8 and once
in this process with batch 16: the same global batch. It records what every rank computed; see its
docstring for the configuration (no random augmentation, BPI on whole micro-batches, frozen BPI BatchNorm).

What "the same result" can mean here:

* across ranks: bit-identical (every reduction is an all-reduce / all-gather in a fixed order);
* 1 vs 2 processes: the global batches are the same samples, but every per-rank float32 reduction (batch
  means of the CE, gradient averages, per-batch activation sums) is grouped differently, so the numbers
  agree to float32 rounding, not bit for bit. VBP ranks neurons by variance; that rounding (~1e-7 relative)
  leaves the ranking and so the plan's kept indices identical here. P3B normalises ΔΨ by max ΔΨ before its
  soft clip γ (slope 14): in a tiny random model ΔΨ is ~1e-3, so a 2e-7 CE rounding moves the block keep
  ratios by ~1e-3 (not 1e-6), which can move a block's integer width by one element; from then on the two
  runs train different masked models. So for P3B the test asserts: identical samples per step, ΔΨ within
  2e-6 at every update whose masks were identical so far, identical masks at the first update, and final
  block keep ratios within 0.05 with the same budget -- not an identical final plan.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_p3b_ddp import _free_port
from test_recipes import _tiny_data, _tiny_dense

HERE = Path(__file__).resolve().parent
GLOBAL_BATCH = 16
TRAIN_IMAGES, TOKENS = 48, 17  # _tiny_data's train split; 16 patches + CLS


def _load(d: Path, run: str, rank: int) -> dict[str, Any]:
    return torch.load(d / f"{run}_rank{rank}.pt", weights_only=False)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ddp_consistency_run import RUNS, run_all

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    root = tmp_path_factory.mktemp("ddp")
    data = _tiny_data(root)
    dense, _ = _tiny_dense(root)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))
    }
    env.update(
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")]),
    )
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(HERE / "ddp_consistency_run.py"),
        str(root / "two"),
        str(data),
        str(dense),
        str(GLOBAL_BATCH),
    ]
    log = root / "torchrun.log"  # a file, not a pipe: nobody reads while the 1-process run goes on
    with log.open("w") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # like the ranks: the thread count can change float sums
        try:
            run_all(root / "one", data, dense, GLOBAL_BATCH, world=1)
        finally:
            torch.set_num_threads(threads)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-6000:]
    rec = {
        run: {"one": _load(root / "one", run, 0), "two": [_load(root / "two", run, r) for r in (0, 1)]}
        for run in RUNS
    }
    return {"root": root, "rec": rec, "runs": list(RUNS)}


def test_two_process_runs_write_one_complete_output_each(records: dict[str, Any]) -> None:
    two = records["root"] / "two"
    names = sorted(p.name for p in two.iterdir() if p.is_dir() or not p.name.endswith(".pt"))
    assert names == sorted(records["runs"])  # no staging / .work / .old dirs left by either rank
    for run in records["runs"]:
        assert (two / run / "width_plan.json").is_file() and (two / run / "model.safetensors").is_file()


@pytest.mark.parametrize("run", ["vbp", "vbp_sharded"])
def test_vbp_statistics_and_plan_identical_on_ranks_and_close_to_one_process(
    records: dict[str, Any], run: str
) -> None:
    one, (r0, r1) = records["rec"][run]["one"], records["rec"][run]["two"]
    if (
        run == "vbp_sharded"
    ):  # the process group is up: each rank reads half the images, the moments are merged
        assert r0["local_samples"] == r1["local_samples"] == TRAIN_IMAGES // 2
    assert one["local_samples"] == TRAIN_IMAGES
    for (c0, m0, v0), (c1, m1, v1), (c, m, v) in zip(r0["stats"], r1["stats"], one["stats"], strict=True):
        assert c0 == c1 == c == TRAIN_IMAGES * TOKENS
        assert torch.equal(m0, m1) and torch.equal(v0, v1)  # bit-identical on every rank
        torch.testing.assert_close(m0, m, rtol=0, atol=1e-7)  # float32 per-batch sums, grouped differently
        torch.testing.assert_close(v0, v, rtol=1e-6, atol=0)
    assert r0["plan"] == r1["plan"]  # each rank's own plan, before broadcast_plan could hide a disagreement
    p2, p1 = r0["plan"], one["plan"]
    assert p2["meta"]["removed_neurons"] == p1["meta"]["removed_neurons"] > 0
    for l2, l1 in zip(p2["layers"], p1["layers"], strict=True):
        assert l2["mlp"] == l1["mlp"]  # identical kept neuron indices
        torch.testing.assert_close(
            torch.tensor(l2["mlp_bias_delta"]), torch.tensor(l1["mlp_bias_delta"]), rtol=1e-6, atol=1e-9
        )


def test_vbp_statistics_pass_is_sharded_in_a_fresh_torchrun_process(records: dict[str, Any]) -> None:
    r0, r1 = records["rec"]["vbp"]["two"]
    assert r0["local_samples"] == r1["local_samples"] == TRAIN_IMAGES // 2


def test_p3b_ranks_identical_and_one_process_agrees_to_float_rounding(records: dict[str, Any]) -> None:
    one, (r0, r1) = records["rec"]["p3b"]["one"], records["rec"]["p3b"]["two"]
    # ranks: the same masks, keep ratios and plan at every update, bit for bit
    assert (
        len(r0["updates"]) == len(r1["updates"]) == len(one["updates"]) == 9
    )  # steps 4..12 (the last at S2)
    for a, b in zip(r0["updates"], r1["updates"], strict=True):
        assert a["step"] == b["step"] and torch.equal(a["masks"], b["masks"])
        assert a["keep_target"] == b["keep_target"] and a["dpsi"] == b["dpsi"]
    assert r0["plan"] == r1["plan"]
    # 1 vs 2 processes: each optimizer step sees the same 16 images (rank 0's 8 + rank 1's 8)
    steps = sorted({s for s, _ in one["batches"]})
    for step in steps:
        single = torch.cat([x for s, x in one["batches"] if s == step]).sort().values
        ranks = torch.cat([x for r in (r0, r1) for s, x in r["batches"] if s == step]).sort().values
        assert torch.equal(single, ranks), step
    # the window statistics agree to float32 rounding while the masks are still the same
    assert torch.equal(r0["updates"][0]["masks"], one["updates"][0]["masks"])
    for a, c in zip(r0["updates"], one["updates"], strict=True):
        assert a["step"] == c["step"]
        d_two, d_one = torch.tensor(a["dpsi"][0] + a["dpsi"][1]), torch.tensor(c["dpsi"][0] + c["dpsi"][1])
        torch.testing.assert_close(d_two, d_one, rtol=0, atol=2e-6)  # ΔΨ itself is ~1e-3
        if not torch.equal(a["masks"], c["masks"]):
            break  # different masked models from here on (see the module docstring)
    # and both end at the budget with close block keep ratios
    k2, k1 = (
        torch.tensor(r0["updates"][-1]["keep_achieved"]),
        torch.tensor(one["updates"][-1]["keep_achieved"]),
    )
    torch.testing.assert_close(k2, k1, rtol=0, atol=0.05)
    for rec in (r0, one):
        assert abs(rec["updates"][-1]["model_keep"] - 0.5) < 0.01
