"""Run ``p3b-hf prune`` and stop it at a chosen optimizer step (not a test file).

``python tests/crash_resume_run.py STEP MARKER -- <prune args>``: runs the real CLI in this process; once the
checkpoint of optimizer step STEP is completely written it creates MARKER and sleeps, so that the test can
SIGKILL the process at a well-defined point (a crash timed by polling would race the next checkpoint).

``python tests/crash_resume_run.py --term STEP MARKER -- <prune args>``: at the end of optimizer step STEP it
creates MARKER and waits until a signal has arrived (the test sends SIGTERM), then lets the run go on, so the
signal lands at a known step. Exits with the CLI's status.
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
    from p3b_hf.training import GracefulStop

    torch.set_num_threads(1)
    term = argv[0] == "--term"
    argv = argv[1:] if term else argv
    stop_step, marker = int(argv[0]), Path(argv[1])
    if term:
        original_step_end = GracefulStop.on_step_end

        def wait_for_signal(self: GracefulStop, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == stop_step:
                marker.write_text(str(stop_step))
                deadline = time.time() + 120
                while self.signum is None and time.time() < deadline:
                    time.sleep(0.02)  # the handler runs between these sleeps
            original_step_end(self, args, state, control, **kw)

        GracefulStop.on_step_end = wait_for_signal
    else:
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
