"""Running one cell: an ordinary :func:`p3b_hf.runner.prune` run into the cell's directory, its finished
report reused, a refusal turned into a row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BudgetError, P3BError, UnsupportedModelError
from ..report import REPORT_NAME


def run_cell(job: Any) -> dict[str, Any]:
    """Run one cell (a :class:`~p3b_hf.runner.PruneJob`); reuse an existing finished report (so a compare can
    be resumed). An unreachable budget or a refused input becomes a row, not a crash."""
    from ..runner import prune
    from ..runtime import barrier

    out = Path(job.output.output_dir)
    if (out / REPORT_NAME).exists() and not job.output.overwrite:
        return json.loads((out / REPORT_NAME).read_text())
    ratio = (
        job.prune.prune_ratio
        if job.prune.prune_ratio is not None
        else getattr(job.method_options, "ratio", None)
    )
    what = f"{job.prune.method} at --prune-ratio {ratio}"
    latency = getattr(job, "latency", None)
    if latency is not None and latency.active:
        what = f"{job.prune.method} at --target-speedup {latency.target_speedup}"
    try:
        report = prune(job).report
        barrier()  # under DDP the main process writes the cell: the others wait until it is there
        return report
    except BudgetError as e:
        print(f"p3b-hf compare: {what}: unreachable: {e}")
        return {"status": "unreachable", "error": str(e)}
    except UnsupportedModelError as e:
        print(f"p3b-hf compare: {what}: unsupported: {e}")
        return {"status": "unsupported", "error": str(e)}
    except P3BError as e:
        print(f"p3b-hf compare: {what}: failed: {e}")
        return {"status": "failed", "error": str(e)}
