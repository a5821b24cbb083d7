"""The speed columns of a row: eager images/s over the dense model's (``throughput_vs_dense``) and the
deployable artefact's (``deploy_speed_vs_dense``, :class:`p3b_hf.export.DeploySpeed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import P3BError


def throughput_ratio(
    model_dir: Path, dense: Any, device: str, batch_size: int | None, repeats: int
) -> float | None:
    """Images/s of the pruned model over its dense original (eager, same run, medians)."""
    from ..bench import run_bench
    from ..loading import load_model

    pruned = load_model(str(model_dir))
    rep = run_bench(pruned, dense, device=device, batch_size=batch_size, repeats=repeats, variants=("eager",))
    return rep["ratios"]["pruned_vs_dense"].get("eager")


def deploy_ratio(deploy: Any, cell: Path) -> float | None:
    """The cell's deployable images/s over the dense model's (:class:`p3b_hf.export.DeploySpeed`); ``None``
    with a printed reason when the artefact cannot be built (the eager speed column stands)."""
    from ..loading import load_model

    try:
        return deploy.measure(load_model(str(cell)))["deploy_speed_vs_dense"]
    except P3BError as e:
        print(f"p3b-hf compare: no deployable speed for {cell.name}: {e}")
        return None
