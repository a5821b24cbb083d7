"""P3B's phase schedule in optimizer steps (docs/p3b.md §5.3): warm-up [0, S0), sparsify [S0, S1) with a
linear ramp of the ratio at τ_max, sharpening [S1, S2) with τ going linearly to τ_min, finalize at S2.

Steps are ``TrainerState.global_step`` (optimizer steps). The reference counts micro-batches; with
gradient accumulation A its ``U`` and ``S*`` are A times ours for the same wall-clock schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...errors import P3BError

#: paper proportions of a 50-epoch run: warm-up 3, sparsify 22, sharpening 25 epochs
PAPER_EPOCHS = (3.0, 25.0, 50.0, 50.0)
#: the README CIFAR-100 run makes 78 mask updates over its pruning window (U = window // 78 gives >= 78)
DEFAULT_NUM_UPDATES = 78


def default_phase_epochs(epochs: float) -> tuple[float, float, float]:
    """(start, sparse, finalize) epochs scaled from the paper's 3/25/50 of 50 epochs."""
    s, sp, f, total = PAPER_EPOCHS
    return epochs * s / total, epochs * sp / total, epochs * f / total


@dataclass(frozen=True)
class Schedule:
    start: int  # S0: first step that accumulates scores
    sparse: int  # S1: ratio fully reached
    finalize: int  # S2: hard masks + physical pruning
    update_every: int
    tau_max: float = 0.1
    tau_min: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.sparse <= self.finalize:
            raise P3BError(
                f"P3B phases must satisfy 0 <= start < sparse <= finalize (got {self.start}, "
                f"{self.sparse}, {self.finalize} steps). Fix --prune-start-epoch/--prune-sparse-epoch/"
                "--prune-finalize-epoch (or train longer)."
            )
        if self.update_every < 1:
            raise P3BError("--update-every must be >= 1 optimizer step.")
        if self.update_every >= self.finalize - self.start:
            raise P3BError(
                f"--update-every {self.update_every} is not shorter than the pruning window ({self.finalize - self.start} "
                f"optimizer steps from step {self.start} to {self.finalize}): no mask would ever be updated. Use "
                f"--update-every <= {max(1, (self.finalize - self.start) // 2)}, or train longer (--epochs)."
            )

    @classmethod
    def from_epochs(
        cls,
        steps_per_epoch: int,
        start_epoch: float,
        sparse_epoch: float,
        finalize_epoch: float,
        update_every: int | None,
        tau_max: float = 0.1,
        tau_min: float = 0.0,
    ) -> Schedule:
        s0 = int(round(start_epoch * steps_per_epoch))
        s1 = max(s0 + 1, int(round(sparse_epoch * steps_per_epoch)))
        s2 = max(s1, int(round(finalize_epoch * steps_per_epoch)))
        u = update_every or max(1, (s2 - s0) // DEFAULT_NUM_UPDATES)
        return cls(s0, s1, s2, int(u), tau_max, tau_min)

    def accumulating(self, step: int) -> bool:
        """Does optimizer step ``step`` (0-based, the one being computed) feed ΔΨ and Taylor sums?"""
        return self.start <= step < self.finalize

    def is_update(self, done: int) -> bool:
        """After ``done`` optimizer steps: is a mask update due? Every U steps in (S0, S2]: the last one
        falls on S2 itself when U divides the window, so its statistics are used before finalisation."""
        return self.start < done <= self.finalize and (done - self.start) % self.update_every == 0

    def rho(self, done: int) -> float:
        return min(max((done - self.start) / (self.sparse - self.start), 0.0), 1.0)

    def tau(self, done: int) -> float:
        if self.finalize == self.sparse:
            return self.tau_max if done < self.sparse else self.tau_min
        frac = min(max((done - self.sparse) / (self.finalize - self.sparse), 0.0), 1.0)
        return self.tau_max + (self.tau_min - self.tau_max) * frac

    def phase(self, done: int) -> str:
        if done < self.start:
            return "warmup"
        if done < self.sparse:
            return "sparsify"
        if done < self.finalize:
            return "sharpening"
        return "finalized"

    def num_updates(self) -> int:
        """Mask updates of the schedule: ``floor((S2 - S0) / U)`` (README run: 7800 / 100 = 78)."""
        return (self.finalize - self.start) // self.update_every

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
