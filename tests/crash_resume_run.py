"""Run ``p3b-hf prune`` and stop dead right after a chosen Trainer checkpoint (not a test file).

``python tests/crash_resume_run.py STEP MARKER -- <prune args>``: runs the real CLI in this process; once the
checkpoint of optimizer step STEP is completely written it creates MARKER and sleeps, so that the test can
SIGKILL the process at a well-defined point (a crash timed by polling would race the next checkpoint).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    import torch
    from transformers import Trainer

    from p3b_hf.cli import main as cli_main

    torch.set_num_threads(1)
    stop_step, marker = int(argv[0]), Path(argv[1])
    original = Trainer._save_checkpoint

    def save_then_hang(self: Trainer, model: Any, trial: Any) -> None:
        original(self, model, trial)
        if self.state.global_step == stop_step:
            marker.write_text(str(stop_step))
            time.sleep(600)  # the test kills us here

    Trainer._save_checkpoint = save_then_hang
    return cli_main(argv[3:] if argv[2] == "--" else argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
