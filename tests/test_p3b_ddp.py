"""Two CPU processes (torchrun, gloo): every rank computes the same masks at every update."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_have_identical_masks_after_every_update(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(HERE / "p3b_tiny_run.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = (tmp_path / "masks_rank0.txt").read_text().splitlines()
    r1 = (tmp_path / "masks_rank1.txt").read_text().splitlines()
    # 128 images / (2 ranks x 16) = 4 steps per epoch; updates every 2 steps in (4, 16] (the last at S2 = 16)
    assert [line.split()[0] for line in r0] == ["6", "8", "10", "12", "14", "16"]
    assert r0 == r1
    assert len({line.split()[1] for line in r0}) == len(r0)  # the masks really change between updates
    assert (tmp_path / "final_rank0.txt").read_text() == (tmp_path / "final_rank1.txt").read_text()
    assert abs(float(r0[-1].split()[2]) - 0.5) < 0.01
    # ΔΨ windows are summed over ranks: the script runs the heads on every 2nd micro-batch (bpi_every=2), so a
    # 2-step window has 1 BPI forward per rank x 2 ranks (skipped forwards keep the heads in the DDP graph
    # through a zero term: find_unused_parameters is off); Taylor sums are averaged (2 steps)
    assert all(line.split()[3:] == ["2", "2"] for line in r0)
