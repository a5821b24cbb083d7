"""Reusing finished cells: what a cell's report says it was made from, and the refusal to reuse one that
describes another experiment (another start model, other domains); its epochs and ``start`` column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import P3BError
from ..options import DataOptions
from ..report import REPORT_NAME
from .options import START_DENSE, START_SOURCE


def started_from(report: dict[str, Any], cell: Path | None = None) -> str | None:
    """The model a finished cell was made from (``p3b-hf finetune`` / ``p3b-hf prune`` reports). Reports name
    local models without their machine path (:func:`p3b_hf.report.portable`); a pruned cell's config.json keeps
    the resolved ``base_model_name_or_path``, which is preferred when there is one."""
    if "finetune" in report:  # the dense cell: a finetune report (possibly on top of the input's report)
        return report["finetune"].get("source_model")
    config = cell / "config.json" if cell is not None else None
    if config is not None and config.exists():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if base:
            return str(base)
    return report.get("base_model")


def _same_model(a: str, b: str) -> bool:
    """``a`` (recorded) and ``b`` are the same model: equal, the same resolved path, or ``a`` is the bare name a
    report records for the local path ``b``."""
    if a == b or Path(a).resolve() == Path(b).resolve():
        return True
    return len(Path(a).parts) == 1 and Path(b).exists() and Path(b).resolve().name == a


def _domains_of(report: dict[str, Any]) -> dict[str, Any] | None:
    return report.get("domains") or (report.get("finetune") or {}).get("domains")


def _norm_list(names: Any) -> list[str] | None:
    from ..data import norm_domain

    return None if not names else [norm_domain(n) for n in names]


def check_reusable(cell: Path, start_model: str, data: DataOptions | None = None) -> None:
    """Refuse to reuse a finished cell that was made from another model than this compare would start it
    from (e.g. a VBP cell from an older compare that pruned the source model, or a global cell after
    ``--global-from`` changed), or on other domains than ``data`` asks for (held out / trained on): its row
    would silently describe another experiment. Called for every cell before any training, so a refusal
    leaves nothing half-done."""
    path = cell / REPORT_NAME
    if not path.exists():
        return
    report = json.loads(path.read_text())
    made_from = started_from(report, cell)
    if made_from is not None and not _same_model(made_from, start_model):
        raise P3BError(
            f"{cell} holds a finished run made from {made_from}, but this compare starts that cell "
            f"from {start_model}; delete {cell} to recompute it, or use another --output-dir."
        )
    if data is None:
        return
    made = _domains_of(report) or {}
    for key, wanted, what in (
        ("test", data.test_domains, "held out"),
        ("train", data.train_domains, "trained on"),
    ):
        expect_none = not data.test_domains and not data.train_domains
        if (wanted or expect_none) and _norm_list(made.get(key)) != _norm_list(wanted):
            raise P3BError(
                f"{cell} holds a finished run that {what} domains {made.get(key) or 'none'}, but this "
                f"compare's cell has {wanted or 'none'}; delete {cell} to recompute it, or use another "
                "--output-dir."
            )


def own_epochs(report: dict[str, Any], default: float) -> float:
    """Training epochs of the cell itself, as its report records them (``default``: P3B, whose report
    does not; the compare passes it ``--epochs``)."""
    ft = report.get("finetune") or (report.get("history") or {}).get("finetune") or {}
    return float(ft.get("epochs", default))


def start_label(start: str, dense_epochs: float | None) -> str:
    """The ``start`` column: ``source`` or ``dense (fine-tuned N ep)``."""
    if start == START_DENSE:
        return f"dense (fine-tuned {dense_epochs:g} ep)" if dense_epochs is not None else "dense"
    return START_SOURCE
