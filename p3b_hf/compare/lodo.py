"""Leave-one-domain-out (``--protocol lodo``): the single-protocol compare once per held-out domain
(``OUT/<domain>/``, dense cell included), then one row per method and ratio averaged over the domains, as the
DG papers' tables do."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..errors import P3BError
from .cells import _cells
from .options import CompareJob
from .outputs import write_lodo_outputs
from .single import run_single


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def fold_dir_name(domain: str) -> str:
    """A held-out domain's sub-directory name (``Real World`` -> ``Real_World``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", domain).strip("_.") or "domain"


def lodo_folds(job: CompareJob) -> list[str]:
    """The domains held out in turn: ``--test-domains`` (as the data spells them) or every domain."""
    from ..data import list_domains, resolve_domains

    d = job.data
    if d.train_domains:
        raise P3BError(
            "--protocol lodo holds out each domain in turn and trains on all the others; pick the "
            "held-out domains with --test-domains, not --train-domains."
        )
    available = list_domains(
        d.dataset, domain_column=d.domain_column, train_split=d.train_split, eval_split=d.eval_split
    )
    if len(available) < 2:
        raise P3BError(f"--protocol lodo needs at least two domains; the data set has {available}.")
    folds = resolve_domains(d.test_domains, available, "--test-domains") if d.test_domains else available
    dirs = [fold_dir_name(f) for f in folds]
    if len(set(dirs)) != len(dirs):
        raise P3BError(
            f"Domains {folds} map to clashing directory names {dirs}; rename them in the data set."
        )
    return folds


def fold_job(job: CompareJob, domain: str) -> CompareJob:
    """The single-protocol compare of one fold: ``domain`` held out, every other domain trained on, into
    ``OUT/<domain>``, with the dense cell (the reference of the gap's change)."""
    return dataclasses.replace(
        job,
        compare=dataclasses.replace(job.compare, protocol="single", dense_baseline=True),
        data=dataclasses.replace(job.data, test_domains=[domain], train_domains=None),
        output=dataclasses.replace(
            job.output, output_dir=str(Path(job.output.output_dir) / fold_dir_name(domain))
        ),
    )


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def lodo_rows(fold_rows: dict[str, list[dict[str, Any]]], folds: list[str]) -> list[dict[str, Any]]:
    """One row per method and ratio over the folds: ``per_domain`` (accuracy on each held-out domain),
    ``accuracy`` (their mean, as the DG tables' "Avg."), mean ``source_accuracy`` / ``gap`` / ``gap_change``
    and mean cost. A cell that is not ``ok`` in some fold makes the row that fold's status."""
    keys: list[tuple[str, float]] = []
    for d in folds:
        for r in fold_rows.get(d, []):
            if (r["method"], r["prune_ratio"]) not in keys:
                keys.append((r["method"], r["prune_ratio"]))
    out = []
    for method, ratio in keys:
        per = {
            d: next(
                (r for r in fold_rows.get(d, []) if (r["method"], r["prune_ratio"]) == (method, ratio)), None
            )
            for d in folds
        }
        first = next(r for r in per.values() if r is not None)
        row: dict[str, Any] = {
            "method": method,
            "prune_ratio": ratio,
            "protocol": "lodo",
            "start": first.get("start"),
            "epochs_total": first.get("epochs_total"),
            "per_domain": {d: (r or {}).get("accuracy") for d, r in per.items()},
        }
        missing = [d for d, r in per.items() if r is None]
        bad = [(d, r) for d, r in per.items() if r is not None and r["status"] != "ok"]
        if bad:
            d, r = bad[0]
            out.append({**row, "status": r["status"], "error": f"held out {d}: {r['error']}"})
            continue
        if missing:
            out.append(
                {**row, "status": "incomplete", "error": f"not run yet with {', '.join(missing)} held out"}
            )
            continue
        rs = list(per.values())
        row.update(
            status="ok",
            accuracy=_mean([r["accuracy"] for r in rs]),
            source_accuracy=_mean(
                [(r.get("eval_sets") or {}).get(r.get("source_set") or "source") for r in rs]
            ),
            gap=_mean([r.get("gap") for r in rs]),
            gap_change=_mean([r.get("gap_change") for r in rs]),
            params=_mean([r["params"] for r in rs]),
            macs=_mean([r["macs"] for r in rs]),
            param_reduction=_mean([r["param_reduction"] for r in rs]),
            throughput_vs_dense=_mean([r.get("throughput_vs_dense") for r in rs]),
            deploy_speed_vs_dense=_mean([r.get("deploy_speed_vs_dense") for r in rs]),
            wall_time_s=sum(float(r.get("wall_time_s") or 0.0) for r in rs),
        )
        out.append(row)
    return out


def run_lodo(job: CompareJob) -> list[dict[str, Any]]:
    """Leave-one-domain-out: the single-protocol compare once per held-out domain (``OUT/<domain>/``, with
    its dense cell), then :func:`lodo_rows`. Every fold's finished cells are checked before any training and
    reused on re-runs; the averaged outputs are rewritten after every fold."""
    folds = lodo_folds(job)
    jobs = {d: fold_job(job, d) for d in folds}
    job.train.check()
    for fj in jobs.values():  # refuse bad options / stale cells of every fold before training any
        _cells(fj)
    out_dir = Path(job.output.output_dir)
    settings = {
        "compare": dataclasses.asdict(job.compare),
        "data": dataclasses.asdict(job.data),
        "train": dataclasses.asdict(job.train),
        "kd": dataclasses.asdict(job.kd),
        "folds": folds,
    }
    fold_rows: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for i, d in enumerate(folds, 1):
        print(
            f"p3b-hf compare: leave-one-domain-out fold {i}/{len(folds)}: {d!r} held out -> "
            f"{relative(Path(jobs[d].output.output_dir))}"
        )
        fold_rows[d] = run_single(jobs[d])
        rows = lodo_rows(fold_rows, folds)
        write_lodo_outputs(out_dir, rows, fold_rows, folds, settings)
    return rows
