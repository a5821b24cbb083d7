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


class NonFiniteLossError(P3BError):
    """Training diverged (the loss stayed NaN/inf)."""
