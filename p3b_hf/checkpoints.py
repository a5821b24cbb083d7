"""Writing model directories and finding Trainer checkpoints, atomically and crash-safely.

Every output directory p3b_hf writes goes through here: files go into a temporary sibling directory
first (:func:`make_staging_dir`), which then replaces the target in one rename (:func:`publish`), so a
crash mid-save leaves the previous good state (or nothing) -- never a half-written model dir.
:func:`write_model_files` is the one writer of a model directory's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from .plan import WidthPlan

PLAN_NAME = "width_plan.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_staging_dir(target: str | os.PathLike) -> Path:
    """A fresh ``.<name>.staging-<pid>-*`` dir beside ``target``.

    Staging dirs left behind by a killed process (SIGKILL runs no cleanup) are removed first; the pid in
    the name tells whether their owner is still alive, so concurrent ranks never delete each other's.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}.staging-*"):
        pid = old.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))


def publish(staging: str | os.PathLike, target: str | os.PathLike, overwrite: bool = True) -> Path:
    """Move a finished staging dir to ``target`` in one rename; an existing ``target`` is moved aside first
    and removed only after the new one is in place."""
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise FileExistsError(f"{target} exists")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging directory that replaces ``target`` only if the block finishes."""
    staging = make_staging_dir(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, target, overwrite=overwrite)


def write_model_files(
    model: nn.Module, directory: str | os.PathLike, image_processor: Any = None, plan: WidthPlan | None = None
) -> Path:
    """A model directory's files: safetensors + config (per-layer widths) + the ``auto_map`` code files, the
    image processor and ``width_plan.json``. Loadable with ``AutoModelForImageClassification``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if image_processor is not None:
        image_processor.save_pretrained(directory)
    if plan is not None:
        plan.to_json(directory / PLAN_NAME)
    return directory


def save_model_dir(
    model: nn.Module,
    output_dir: str | os.PathLike,
    image_processor: Any = None,
    plan: WidthPlan | None = None,
) -> Path:
    """:func:`write_model_files` into ``output_dir``, atomically."""
    with atomic_dir(output_dir) as staging:
        write_model_files(model, staging, image_processor, plan)
    return Path(output_dir)


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` that was completely written, or None.

    The Trainer writes ``trainer_state.json`` last; a checkpoint without it was interrupted mid-save
    (transformers' ``get_last_checkpoint`` would pick it anyway and the resume would fail).
    """
    folder = Path(folder)
    done = [
        (int(d.name.split("-")[1]), d)
        for d in folder.glob("checkpoint-*")
        if d.name.split("-")[1].isdigit() and (d / "trainer_state.json").is_file()
    ]
    return str(max(done)[1]) if done else None


def remove_if_empty(path: str | os.PathLike) -> None:
    """Remove a directory that holds nothing (e.g. an unused ``.work`` dir of a refused run)."""
    p = Path(path)
    try:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    except OSError:
        pass
