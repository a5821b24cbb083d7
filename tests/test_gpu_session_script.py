"""The prepared device call (scripts/gpu_session.sh): it parses, and refuses unknown parts with one line.

Its real run needs a GPU; ``PYTHON=.venv/bin/python bash scripts/gpu_session.sh smoke`` exercises every
step on the CPU (~4 min, too long for the suite)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("script", ["gpu_session.sh", "gpu_kit.sh"])
def test_script_parses(script: str) -> None:
    r = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unknown_part_is_one_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_session.sh"), "everything"],
        capture_output=True,
        text=True,
        env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHON": "true"},
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "gpu_session: unknown part 'everything' (speed | faithfulness | smoke)"
    )
