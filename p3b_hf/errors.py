"""Exceptions with messages that name the problem and the fix.

All derive from :class:`P3BError` (a ``ValueError``), so callers can catch one type and the CLI
can print the message without a traceback.
"""


class P3BError(ValueError):
    """Base class of every error p3b_hf raises on bad input."""


class UnsupportedModelError(P3BError):
    """The model is not of a family p3b_hf handles (the message names every supported class, generated from
    ``p3b_hf.models.families``), or this method / tool is not defined for its family."""


class PlanError(P3BError):
    """A WidthPlan is malformed or was made for another model."""


class BudgetError(P3BError):
    """A prune ratio or parameter budget is impossible for the chosen method."""


class DataError(P3BError):
    """A data set is missing, empty, or lacks the expected columns/labels."""


class CheckpointError(P3BError):
    """A saved model is unreadable, unsafe (pickle) or disagrees with its config."""


class HubError(P3BError):
    """The Hub cannot be used for a push: offline mode, no token, a rejected token, or no connection."""


class NonFiniteLossError(P3BError):
    """Training diverged (the loss stayed NaN/inf)."""


class OptionsError(P3BError):
    """An option that cannot act: out of its valid range, or one the chosen method / command does not read
    (it would be silently ignored). The message names the flag and the valid range / the option that does
    the job."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGTERM / SIGINT. A ``KeyboardInterrupt`` (not a :class:`P3BError`), so that nothing
    treats it as a refused input and carries on (``compare`` would go to its next cell); the CLI prints its
    message as one line and exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), as a
    shell reports a process killed by that signal."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
