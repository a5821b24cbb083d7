"""Two CPU processes (torchrun, gloo), ONE launch (``tests/p3b_ddp_run.py``) for every P3B DDP case:

* every rank computes the same masks at every update (``find_unused_parameters=False``);
* the Python quick start with HF's default ``TrainingArguments`` (DDP's ``find_unused_parameters=True``), and
  ``p3b-hf prune --epochs 2 --prune-finalize-epoch 1`` (``find_unused_parameters=False``) both train past
  finalisation: they finish, the ranks end bit-identical, and the saved pruned model is the trained one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_recipes import _tiny_data, _tiny_dense

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    root = tmp_path_factory.mktemp("p3b_ddp")
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
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")]),
    )
    out = root / "out"
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(HERE / "p3b_ddp_run.py"),
        str(out),
        str(data),
        str(dense),
    ]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def _recs(out: Path, name: str) -> list[dict[str, Any]]:
    return [torch.load(out / f"{name}_rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
def test_two_ranks_have_identical_masks_after_every_update(ddp_out: Path) -> None:
    d = ddp_out / "masks"
    r0 = (d / "masks_rank0.txt").read_text().splitlines()
    r1 = (d / "masks_rank1.txt").read_text().splitlines()
    # 128 images / (2 ranks x 16) = 4 steps per epoch; updates every 2 steps in (4, 16] (the last at S2 = 16)
    assert [line.split()[0] for line in r0] == ["6", "8", "10", "12", "14", "16"]
    assert r0 == r1
    assert len({line.split()[1] for line in r0}) == len(r0)  # the masks really change between updates
    assert (d / "final_rank0.txt").read_text() == (d / "final_rank1.txt").read_text()
    assert abs(float(r0[-1].split()[2]) - 0.5) < 0.01
    # ΔΨ windows are summed over ranks: the script runs the heads on every 2nd micro-batch (bpi_every=2), so a
    # 2-step window has 1 BPI forward per rank x 2 ranks (the heads are outside DDP's reducer, so skipping them
    # needs nothing with find_unused_parameters off); Taylor sums are averaged (2 steps)
    assert all(line.split()[3:] == ["2", "2"] for line in r0)


@pytest.mark.slow
@pytest.mark.parametrize("run, steps, finalize", [("api", 8, 4), ("cli", 6, 3)])
def test_training_past_finalize_on_two_ranks(ddp_out: Path, run: str, steps: int, finalize: int) -> None:
    """api: 64 images / (2 x 8) = 4 steps per epoch, hard masks after epoch 1 of 2; cli: 48 / (2 x 8) = 3."""
    from safetensors.torch import load_file

    r0, r1 = _recs(ddp_out, run)
    assert (r0["global_step"], r0["finalize_step"]) == (steps, finalize)
    # the pruned model was rebuilt from the weights trained after finalisation
    assert r0["stages"] == ["finalize", "train_end"]
    # ranks bit-identical: pruned weights, masks, and the BPI heads (averaged by hand outside DDP's reducer)
    assert r0["mask_hash"] == r1["mask_hash"]
    for key in ("pruned_state", "heads"):
        assert r0[key].keys() == r1[key].keys()
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key]), key
    # the pruned model computes what the trained hard-masked model computes
    torch.testing.assert_close(r0["pruned_logits"], r0["hard_logits"], atol=1e-5, rtol=1e-5)
    # the saved model is the trained one, bit for bit
    saved_dir = ddp_out / ("api_pruned" if run == "api" else "cli_pruned")
    saved = load_file(str(saved_dir / "model.safetensors"))
    assert saved.keys() == r0["pruned_state"].keys()
    assert all(torch.equal(saved[k], r0["pruned_state"][k]) for k in saved)
    assert not (ddp_out.parent / "out" / "cli_pruned.work").exists()
