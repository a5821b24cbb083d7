"""``ImageData``: what the loader returns -- the raw train / eval splits, their columns and label names, every
eval set by name and the domain split. One record, so that every command reads a loaded data set the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImageData:
    """Raw splits plus what the transforms need to read them."""

    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset
    image_column: str
    label_column: str
    labels: list[str]
    source: str = ""
    eval_origin: str = ""  # e.g. "split 'test'" or "stratified 10% of train (seed 0)"
    info: dict[str, Any] = field(default_factory=dict)
    #: every eval set by name, in report order; the first is ``eval`` (the primary one, which the methods
    #: evaluate while they run). One entry unless several eval splits or domains were asked for.
    evals: dict[str, Any] = field(default_factory=dict)
    eval_origins: dict[str, str] = field(default_factory=dict)
    #: the domain split (:meth:`DomainSplit.as_dict`) when ``domain_column`` was used, else None
    domains: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.evals:
            self.evals = {"eval": self.eval}
        if not self.eval_origins:
            self.eval_origins = {name: self.eval_origin for name in self.evals}

    @property
    def primary_eval(self) -> str:
        """Name of the primary eval set (``eval``): the held-out target when domains are used."""
        return next(iter(self.evals))

    @property
    def source_eval(self) -> str | None:
        """Name of the in-domain eval set of the source domains (the gap's reference), if there is one."""
        return (self.domains or {}).get("source_set")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}
