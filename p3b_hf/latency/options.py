"""The latency budget's options (``--target-speedup`` / ``--target-latency-ms`` and where speed is measured).

One dataclass shared by ``p3b-hf prune`` and ``p3b-hf compare`` (``--budget latency``); see docs/latency.md.
"""

from __future__ import annotations

import dataclasses

from ..errors import BudgetError, P3BError
from ..options import option

SPEED_BACKENDS = ("onnxruntime", "torch")
SPEED_DEVICES = ("cpu", "cuda")


@dataclasses.dataclass
class LatencyOptions:
    """A latency budget: prune until the *deployed* artefact on the named device runs ``target_speedup`` times
    faster than the dense one (or takes ``target_latency_ms``), then measure that it does."""

    target_speedup: float | None = option(
        None,
        help="latency budget: prune until the deployed model is X times faster than the dense one on "
        "--speed-backend / --speed-device (alternative to --prune-ratio; docs/latency.md)",
    )
    target_latency_ms: float | None = option(
        None, help="latency budget: prune until one batch takes T ms on the named backend / device"
    )
    speed_backend: str = option(
        "onnxruntime",
        choices=SPEED_BACKENDS,
        help="what the latency model times and the verification measures: ONNX Runtime fp32 of the "
        "deployable module, or PyTorch eager",
    )
    speed_device: str = option("cpu", choices=SPEED_DEVICES, help="device of the latency budget")
    speed_batch_size: int = option(1, help="batch size of the latency budget")
    threads: int | None = option(
        None, help="CPU threads for latency calibration and verification (default: torch's)"
    )
    latency_cache: str | None = option(
        None,
        help="directory of calibrated latency models (default: $P3B_HF_LATENCY_CACHE or "
        "~/.cache/p3b_hf/latency)",
    )
    recalibrate: bool = option(False, help="time the latency grid again even if a cached model matches")
    measured_loop: bool = option(
        True,
        help="global / VBP: time the planned architecture against the dense one before training and re-plan "
        "(at most twice) when it misses the target by more than 5 %% (--no-measured-loop: the latency "
        "model's plan as is)",
    )

    @property
    def active(self) -> bool:
        """Whether a latency budget was asked for."""
        return self.target_speedup is not None or self.target_latency_ms is not None

    def check(self) -> None:
        """Refuse impossible values before anything is loaded."""
        if self.target_speedup is not None and self.target_latency_ms is not None:
            raise BudgetError(
                "Give one latency budget: --target-speedup (e.g. 2) or --target-latency-ms, not both."
            )
        if self.target_speedup is not None and not self.target_speedup > 1.0:
            raise BudgetError(
                f"--target-speedup {self.target_speedup} is impossible: pruning can only make the model "
                "faster; give a factor > 1, e.g. 2."
            )
        if self.target_latency_ms is not None and not self.target_latency_ms > 0:
            raise BudgetError(f"--target-latency-ms {self.target_latency_ms} must be > 0 (milliseconds).")
        if self.speed_batch_size < 1:
            raise P3BError(f"--speed-batch-size {self.speed_batch_size} must be >= 1.")
        if self.threads is not None and self.threads < 1:
            raise P3BError(f"--threads {self.threads} must be >= 1 (or left out).")
        if self.speed_device == "cuda" and self.speed_backend == "onnxruntime":
            raise P3BError(
                "--speed-backend onnxruntime times the CPU execution provider only; use --speed-backend "
                "torch with --speed-device cuda (or --speed-device cpu)."
            )


#: the options that name the latency budget itself; every other field only says how to measure it
TARGETS = ("target_speedup", "target_latency_ms")


def check_given_latency(given: frozenset[str] | set[str], active: bool, how: str) -> None:
    """Refuse a latency option given without a latency budget (``active``: the run has one; ``how``: how to
    ask for one) -- it would be silently unused."""
    from ..options import cli_fields, flag_of

    if active:
        return
    for f in cli_fields(LatencyOptions):
        if f.name in given and f.name not in TARGETS:
            raise P3BError(f"{flag_of(f)} only applies to a latency budget: {how}, or drop it.")
