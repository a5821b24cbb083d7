"""Writing model directories and finding Trainer checkpoints, atomically and crash-safely.

Every output directory p3b_hf writes goes through here: files go into a temporary sibling directory
first (:func:`make_staging_dir`), which then replaces the target in one rename (:func:`publish`), so a
crash mid-save leaves the previous good state (or nothing) -- never a half-written model dir.
:func:`write_model_files` is the one writer of a model directory's files.

A run also owns its output directory while it works (:func:`output_lock`, a ``.<name>.lock`` file beside it
that names the owner's pid), puts back a model that a killed ``--overwrite`` left aside
(:func:`recover_output_dir`), and records what defines it next to its checkpoints (:func:`check_run_record`),
so that ``--resume`` continues the same run or refuses in one line.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, P3BError
from .plan import WidthPlan

PLAN_NAME = "width_plan.json"
#: what defines a run (options, labels) and its wall time so far, in ``OUTPUT_DIR.work/``
RUN_RECORD = "run.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(name: str, marker: str) -> int | None:
    """The owner pid in a ``.<name><marker><pid>[-...]`` sibling's name."""
    pid = name.rsplit(marker, 1)[1].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a dir, recursively) the permissions of a plain ``mkdir`` / ``open`` under the user's umask.

    ``tempfile.mkdtemp`` creates staging dirs 0700 and some writers create files 0600 (temp file + rename);
    a published model dir must be as readable as one ``save_pretrained`` writes directly."""
    mask = _umask()
    root = Path(path)
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


def make_staging_dir(target: str | os.PathLike) -> Path:
    """A fresh ``.<name>.staging-<pid>-*`` dir beside ``target``.

    Staging dirs left behind by a killed process (SIGKILL runs no cleanup) are removed first; the pid in
    the name tells whether their owner is still alive, so concurrent ranks never delete each other's.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}.staging-*"):
        pid = _pid_of(old.name, ".staging-")
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15, glibc >= 2.28); False
    where the platform or file system cannot (then :func:`publish` uses two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(staging: str | os.PathLike, target: str | os.PathLike, overwrite: bool = True) -> Path:
    """Move a finished staging dir to ``target``; an existing ``target`` is replaced.

    Where the system can, the two directories are swapped in one atomic exchange, so the old or the new
    model is always at ``target``; elsewhere the old one is first renamed to ``.<name>.old-<pid>`` and a kill
    between the two renames is repaired by the next run (:func:`recover_output_dir`). The published dir
    gets the user's umask (:func:`apply_umask`)."""
    staging, target = Path(staging), Path(target)
    apply_umask(staging)
    if target.exists():
        if not overwrite:
            shutil.rmtree(staging, ignore_errors=True)
            raise FileExistsError(f"{target} exists")
        if _exchange(staging, target):  # staging now holds the old model: a stale staging dir if killed here
            shutil.rmtree(staging, ignore_errors=True)
            return target
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        return target
    os.replace(staging, target)
    return target


def recover_output_dir(target: str | os.PathLike) -> list[str]:
    """Repair what a process killed inside :func:`publish` left beside ``target`` (call it holding
    :func:`output_lock`): a ``.<name>.old-<pid>`` of a dead process is moved back to ``target`` when
    ``target`` is missing (the new model never arrived: the previous one returns), and deleted when
    ``target`` is there (the new model did arrive). Returns one line per repair."""
    target = Path(target)
    done: list[str] = []
    if not target.parent.is_dir():
        return done
    for old in sorted(target.parent.glob(f".{target.name}.old-*")):
        pid = _pid_of(old.name, ".old-")
        if pid is None or (pid != os.getpid() and _pid_alive(pid)):
            continue
        if not target.exists():
            os.replace(old, target)
            done.append(f"restored {target} from {old.name}, left by a run killed while replacing it")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(
                f"removed {old.name}, the previous {target.name} left by a run killed after replacing it"
            )
    return done


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


# ------------------------------------------------------------------------------------------- the output lock
def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def _read_lock(path: Path) -> tuple[int | None, str]:
    try:
        fields = path.read_text().split()
    except OSError:
        return None, ""
    pid = int(fields[0]) if fields and fields[0].isdigit() else None
    return pid, fields[1] if len(fields) > 1 else ""


@contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Own ``target`` for the duration of a run: a ``.<name>.lock`` file beside it holding ``PID HOST``.

    A second run on the same output dir is refused in one :class:`P3BError` (two runs would replace each
    other's model and delete each other's checkpoints). A lock whose process is gone (same host, dead pid:
    a killed run) is stale and taken over. Only the main process of a multi-process run locks."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid, host = _read_lock(path)
            if pid is not None and (host not in ("", socket.gethostname()) or _pid_alive(pid)):
                where = f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
                raise P3BError(
                    f"--output-dir {target} is in use by another run ({where}, lock file {path}). Wait "
                    f"for it to finish or choose another --output-dir (delete {path.name} only if that "
                    "run is gone)."
                ) from None
            try:  # stale: move it aside (only one contender can) and try again
                os.replace(path, path.with_name(f"{path.name}.stale-{os.getpid()}"))
                os.unlink(path.with_name(f"{path.name}.stale-{os.getpid()}"))
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise P3BError(
            f"Cannot take the lock {path} of --output-dir {target}; delete it if no run is using it."
        )
    try:
        yield path
    finally:
        try:
            if path.read_text() == me:
                path.unlink()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------- before a run
def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_location(output_dir: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--output-dir`` the run could not publish: the current directory or
    one above it (it is replaced as a whole), one below a file, or in a read-only / unwritable place.
    Returns the absolute path."""
    given = str(output_dir)
    out = Path(output_dir).expanduser().absolute()
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved.parent == resolved:
        raise P3BError(
            f"--output-dir {given} is the current directory or one above it; a run replaces its output "
            "directory as a whole, so give a new subdirectory (e.g. --output-dir ./pruned)."
        )
    if out.is_file():
        raise P3BError(f"--output-dir {given} is a file; give a directory path.")
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise P3BError(
            f"--output-dir {given}: {base} is a file, not a directory; give a path below a directory."
        )
    try:  # a real write: os.access is wrong for root and for some read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".p3b_write_probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise P3BError(
            f"--output-dir {given}: cannot write in {base} ({e.strerror or e}); give a writable location."
        ) from None
    return out


#: a Trainer checkpoint is about this many times the fp32 weights (weights, AdamW's two moments, the
#: RNG / scheduler state; P3B adds masks and scores): measured on the tiny ViT of the tests and a ViT-B
CHECKPOINT_FACTOR = 12.0


def required_space(model_bytes: int, checkpoints: int = 2) -> int:
    """Bytes a run needs beside its output dir: ``checkpoints`` Trainer checkpoints (the Trainer keeps at most
    two) plus the staged output model."""
    return int(model_bytes * (CHECKPOINT_FACTOR * checkpoints + 1))


def check_free_space(output_dir: str | os.PathLike, model_bytes: int, checkpoints: int = 2) -> None:
    """Refuse a run that cannot write its checkpoints and model (disk full after an epoch otherwise)."""
    base = _nearest_existing(Path(output_dir).absolute().parent)
    need = required_space(model_bytes, checkpoints)
    free = shutil.disk_usage(base).free
    if free < need:
        raise P3BError(
            f"--output-dir {output_dir}: {base} has {free / 2**20:,.0f} MiB free but the run needs about "
            f"{need / 2**20:,.0f} MiB ({checkpoints} checkpoints of ~{CHECKPOINT_FACTOR:g}x the "
            f"{model_bytes / 2**20:,.1f} MiB model, plus the model); free space or choose another --output-dir."
        )


def output_error(exc: BaseException, output_dir: str | os.PathLike) -> P3BError | None:
    """The one-line error for a write that failed mid-run (disk full, read-only, no permission), else None."""
    err = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    full = err == errno.ENOSPC or "No space left on device" in text
    ro = err in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only file system" in text
    if not (full or ro):
        return None
    what = "the disk is full" if full else "the location became unwritable"
    work = Path(output_dir).with_name(Path(output_dir).name + ".work")
    return P3BError(
        f"Writing the run's files failed: {what} ({text.splitlines()[0] if text else type(exc).__name__}). "
        f"Free space (or fix the permissions) and rerun the same command with --resume: the complete "
        f"checkpoints in {work} (if any) are kept; --output-dir {output_dir} was not written."
    )


# ------------------------------------------------------------------------------------------- model files
def write_model_files(
    model: nn.Module, directory: str | os.PathLike, image_processor: Any = None, plan: WidthPlan | None = None
) -> Path:
    """A model directory's files: safetensors + config (per-layer widths) + the ``auto_map`` code files and the
    shared modules they import relatively (``save_pretrained`` copies both), the image processor and
    ``width_plan.json``. Loadable with ``AutoModelForImageClassification``."""
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


# ------------------------------------------------------------------------------------------- checkpoints
def _file_problem(path: Path) -> str | None:
    """Why a checkpoint file is unusable (truncated / garbage), from cheap structural checks, else None."""
    try:
        size = path.stat().st_size
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with path.open("rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    return "truncated"
                n = struct.unpack("<Q", head)[0]
                if n > size - 8:
                    return "truncated header"
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end != size:
                return f"{size} bytes, its header describes {8 + n + end}"
        elif path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as z:  # torch.save's format; the central directory is at the end
                z.infolist()
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, struct.error) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why a ``checkpoint-N`` dir cannot be resumed from (incomplete or a damaged file), else None."""
    d = Path(checkpoint)
    if not (d / "trainer_state.json").is_file():
        return "incomplete (no trainer_state.json: interrupted while it was written)"
    for f in sorted(d.iterdir()):
        if f.is_file():
            problem = _file_problem(f)
            if problem:
                return f"{f.name} is damaged ({problem})"
    return None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    return sorted(
        (int(d.name.split("-")[1]), d)
        for d in folder.glob("checkpoint-*")
        if d.is_dir() and d.name.split("-")[1].isdigit()
    )


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` that was completely written and reads back, or None.

    The Trainer writes ``trainer_state.json`` last; a checkpoint without it was interrupted mid-save
    (transformers' ``get_last_checkpoint`` would pick it anyway and the resume would fail). A checkpoint
    with a damaged file (truncated, garbage) is skipped with a one-line notice, and the previous one used;
    when every checkpoint is damaged that is one :class:`CheckpointError`.
    """
    found = _checkpoints(Path(folder))
    damaged: list[str] = []
    for _, d in reversed(found):
        problem = checkpoint_problem(d)
        if problem is None:
            if damaged:
                print(f"p3b-hf: resuming from {d.name}: skipped {'; '.join(damaged)}", file=sys.stderr)
            return str(d)
        if not problem.startswith("incomplete"):
            damaged.append(f"{d.name} ({problem})")
    if damaged:
        raise CheckpointError(
            f"--resume: every checkpoint in {folder} is damaged ({'; '.join(damaged)}). Delete {folder} to "
            "start the run afresh, or restore the checkpoints from a backup."
        )
    return None


def remove_if_empty(path: str | os.PathLike) -> None:
    """Remove a directory tree that holds no file (e.g. the unused ``.work`` dir of a refused run, with its
    empty per-phase subdirectories)."""
    p = Path(path)
    if not p.is_dir():
        return
    for dirpath, _dirnames, _files in sorted(os.walk(p), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)  # fails (kept) when it holds anything
        except OSError:
            pass


# ------------------------------------------------------------------------------------------- the run record
def _show(key: str, value: Any) -> str:
    return f"{len(value)} labels" if key == "labels" and isinstance(value, list) else repr(value)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"KEY was A, now B"`` for every key whose value differs."""
    return [
        f"{key} was {_show(key, old.get(key))}, now {_show(key, new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_run_record(
    work_dir: str | os.PathLike, identity: dict[str, Any], resume: bool, write: bool
) -> float:
    """Start or continue the run in ``work_dir``; returns the wall time (s) the run already spent.

    ``identity``: what defines the run (method, model, data set, label set, budget, method options ...).
    A fresh run records it in ``work_dir/run.json``; ``--resume`` refuses, in one :class:`P3BError` naming
    the differing options, to continue checkpoints made with other ones, and says so (one line) when
    there is nothing to resume. ``write``: this process records (the main process)."""
    work = Path(work_dir)
    record_path = work / RUN_RECORD
    identity = _json_roundtrip(identity)
    prior = 0.0
    has_checkpoint = any(work.glob("*/checkpoint-*")) or any(work.glob("checkpoint-*"))
    if resume:
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except ValueError:
                record = {}
            diff = _differences(record.get("identity", {}), identity) if "identity" in record else []
            if diff:
                raise P3BError(
                    f"--resume: the checkpoints in {work} belong to a run with other options ({'; '.join(diff)}). "
                    "Resume with the same options, or drop --resume to start afresh (replacing those checkpoints)."
                )
            prior = float(record.get("wall_time_s", 0.0))
        if not has_checkpoint:
            print(f"p3b-hf: --resume: no checkpoint in {work}; starting from scratch.", file=sys.stderr)
            prior = 0.0
    if write:
        work.mkdir(parents=True, exist_ok=True)
        _write_json(record_path, {"identity": identity, "started": time.time() - prior, "wall_time_s": prior})
    return prior


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def record_wall_time(work_dir: str | os.PathLike) -> None:
    """Store the run's wall time so far in ``work_dir/run.json`` (at every checkpoint), so that a resumed
    run's report counts the time of the interrupted part that its checkpoints hold."""
    path = Path(work_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
        record["wall_time_s"] = time.time() - float(record["started"])
        _write_json(path, record)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record (a Trainer used outside a run): nothing to accumulate
