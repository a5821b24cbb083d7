"""The dense cell: the source model fine-tuned on the task (``OUT/dense``), trained once and reused -- the
reference row, and the start model and KD teacher of the post-training methods."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import P3BError
from ..report import REPORT_NAME
from .options import START_SOURCE, CompareJob
from .reuse import own_epochs
from .rows import eval_set_fields


def dense_row(job: CompareJob, out: Path) -> dict[str, Any]:
    """The dense cell: the source model fine-tuned on the task with the same data and training options
    (:func:`p3b_hf.runner.finetune` with a new head) into ``out``, or ``out`` reused when it is there. It is
    the reference accuracy and the start model and KD teacher of the post-training methods.
    ``epochs_total`` is the epochs its report records (a reused cell may have had another ``--epochs``)."""
    from ..options import FinetuneOptions
    from ..runner import FinetuneJob, finetune

    report_path = out / REPORT_NAME
    if not report_path.exists() or job.output.overwrite:
        try:
            finetune(
                FinetuneJob(
                    finetune=FinetuneOptions(model=job.compare.model, new_head=True),
                    data=job.data,
                    output=dataclasses.replace(job.output, output_dir=str(out), overwrite=True),
                    train=job.train,
                )
            )
        except P3BError as e:
            return {
                "method": "dense",
                "prune_ratio": 0.0,
                "status": "failed",
                "start": START_SOURCE,
                "epochs_total": None,
                "error": f"dense fine-tune failed: {e}",
            }
    rep = json.loads(report_path.read_text())
    ft = rep.get("finetune", rep)
    acc = (ft.get("eval") or {}).get("accuracy")
    from ..cost import count_cost
    from ..loading import load_config

    cost = count_cost(load_config(str(out)))
    sets = eval_set_fields(rep)
    if sets:  # the primary set's accuracy as measured with the others (one eval loop for every column)
        acc = next(iter(sets["eval_sets"].values()))
    return {
        "method": "dense",
        "prune_ratio": 0.0,
        "status": "ok",
        "start": START_SOURCE,
        "epochs_total": own_epochs(rep, job.train.epochs),
        "accuracy": acc,
        "params": cost["params"],
        "macs": cost["macs"],
        "param_reduction": 0.0,
        "throughput_vs_dense": 1.0,
        "deploy_speed_vs_dense": 1.0,
        "wall_time_s": ft.get("wall_time_s", ft.get("train_time_s")),
        **sets,
    }
