"""The compare's entry point: :func:`run_compare` checks the source model, then runs one compare
(:func:`~p3b_hf.compare.single.run_single`) or one per held-out domain (:func:`~p3b_hf.compare.lodo.run_lodo`)."""

from __future__ import annotations

from typing import Any

from .lodo import run_lodo
from .options import CompareJob
from .single import check_source, run_single


def run_compare(job: CompareJob) -> list[dict[str, Any]]:
    """Every method x ratio cell (and the dense cell when needed): rows, written as ``compare.json`` /
    ``.csv`` / ``.md`` and ``accuracy_vs_params.png`` into ``job.output.output_dir`` after every cell.
    ``--protocol lodo``: :func:`~p3b_hf.compare.lodo.run_lodo`."""
    if job.compare.protocol == "lodo":
        check_source(job)  # once for the whole run, before any fold (each fold checks it again)
        return run_lodo(job)
    return run_single(job)
