"""Where an export is written: the file names under ``MODEL/onnx/`` (read back by ``push --with-onnx``), the
staging dir beside the target and the atomic rename at the end, so that a failed export leaves nothing
behind and a previous export is replaced only after success; and the reader of ``export_report.json``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .stack import ExportError

SCHEMA = "p3b_hf.export/1"
ONNX_DIR = "onnx"
FP32_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
REPORT_NAME = "export_report.json"


def _staging(target: Path) -> Path:
    from ..checkpoints import make_staging_dir

    if target.exists() and not target.is_dir():
        raise ExportError(
            f"--output-dir {target} is a file; give a directory (default: MODEL_DIR/{ONNX_DIR})."
        )
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(target)
        probe = staging / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the export dir should read like its siblings
        return staging
    except OSError as e:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(
            f"Cannot write {target}: {e.strerror or e} ({e.filename or target.parent}). Make the model "
            "dir writable or give --output-dir a writable location."
        ) from e


def _commit(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:  # put the previous export back
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _file_info(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size}


def load_export_report(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(model_dir) / ONNX_DIR / REPORT_NAME
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{p} is not valid JSON ({e}); re-run p3b-hf export.") from e
