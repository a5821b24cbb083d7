"""Reading a data source into a ``DatasetDict``: a preset name, a Hub id, a ``save_to_disk`` dir, parquet files
or an imagefolder. One place decides what a ``--dataset`` string means and turns every unreadable layout into
one :class:`DataError` naming the layouts it accepts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .presets import PRESETS, Preset


def _is_save_to_disk(p: Path) -> bool:
    return p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists())


def _parquet_files(p: Path) -> list[Path]:
    if p.is_file():
        return [p] if p.suffix == ".parquet" else []
    return sorted(p.rglob("*.parquet"))


def _split_of(
    parts: Sequence[str], splits: Sequence[str] = ("train", "validation", "valid", "val", "test")
) -> str:
    """Split named by the file name (``train-00000-of-00001.parquet``) or else its nearest folder."""
    for name in reversed(parts):
        stem = name.lower()
        for s in splits:
            if stem == s or stem.startswith((s + "-", s + "_", s + ".")):
                return s
    return "train"


def _load_raw(source: Any) -> tuple[Any, str]:
    """Return (DatasetDict, how it was loaded)."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        dd = datasets.DatasetDict({"train": source}) if isinstance(source, datasets.Dataset) else source
        return dd, "in-memory"
    source = os.fspath(source)
    p = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or source.count("/") > 1 or p.exists()
    if looks_local and not p.exists():
        raise DataError(
            f"Data path {source!r} does not exist. Give an existing save_to_disk / imagefolder / "
            "parquet directory, a Hub id like uoft-cs/cifar100, or a preset "
            f"({', '.join(PRESETS)})."
        )
    if p.exists():
        try:
            if _is_save_to_disk(p):
                ds = datasets.load_from_disk(str(p))
                how = "load_from_disk"
            elif pq := _parquet_files(p):
                files: dict[str, list[str]] = {}
                for f in pq:
                    split = _split_of(f.relative_to(p).parts) if p.is_dir() else "train"
                    files.setdefault(split, []).append(str(f))
                ds = datasets.load_dataset("parquet", data_files=files)
                how = "parquet"
            elif p.is_dir():
                ds = datasets.load_dataset("imagefolder", data_dir=str(p))
                how = "imagefolder"
            else:
                raise DataError(
                    f"{source} is a file but not a .parquet file. Give a directory "
                    "(save_to_disk, imagefolder or parquet files) or a .parquet file."
                )
        except DataError:
            raise
        except Exception as e:  # datasets raises many types for unreadable layouts
            raise DataError(
                f"Cannot read {source!r} as a data set ({type(e).__name__}: {e}). Expected a "
                "datasets.save_to_disk directory, parquet files, or an imagefolder layout "
                "<dir>/<split>/<class>/<image> (see docs/data.md)."
            ) from e
    else:
        try:
            ds = datasets.load_dataset(source)
            how = "hub"
        except Exception as e:
            offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get(
                "HF_DATASETS_OFFLINE"
            ) in ("1", "true", "True")
            hint = (
                (
                    " HF_HUB_OFFLINE is set, so only data sets already in the HF cache load; run once online "
                    "or point --dataset at a local copy."
                )
                if offline
                else ""
            )
            raise DataError(
                f"Cannot load data set {source!r} from the Hub ({type(e).__name__}: {e}).{hint} "
                "Check the id, or give a local save_to_disk/imagefolder/parquet path."
            ) from e
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    return ds, how


def _resolve_source(source: Any, preset: str | None) -> tuple[Any, Preset | None, str]:
    """(what to load, the preset or None, its key): a preset name stands for its Hub id."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    key = (preset or (source if isinstance(source, str) and source in PRESETS else "")).lower()
    if preset is not None and key not in PRESETS:
        raise DataError(f"Unknown preset {preset!r}; known: {', '.join(PRESETS)}.")
    pre = PRESETS.get(key)
    if pre is not None and source == key:
        if pre.hub_id is None:
            raise DataError(
                f"Preset {key!r} has no Hub repo: {pre.note}. Build that layout locally and pass "
                f"its directory: --dataset /path/to/{key} (see docs/data.md)."
            )
        source = pre.hub_id
    return source, pre, key
