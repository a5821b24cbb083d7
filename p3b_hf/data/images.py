"""Image checks: every image a run will read is opened (and decoded, or its end marker read) before any
training, so that a truncated, empty, not-an-image or decompression-bomb file is named in one
:class:`DataError` -- or left out, up to ``--max-bad-images`` -- instead of stopping a run mid-way."""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..options import IMAGE_CHECKS

logger = logging.getLogger(__name__)

#: how many bad images an error or the log lists by name (the rest are counted)
BAD_IMAGES_LISTED = 10
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def open_image(value: Any) -> Any:
    """A stored image as a loaded PIL image: a PIL image, a ``{"bytes", "path"}`` dict (the ``Image``
    feature's storage, also what parquet files written without HF metadata hold), raw encoded bytes, a
    file path, or a pixel array."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        raw, path = value.get("bytes"), value.get("path")
        if raw is None and not path:
            raise DataError("an image entry with neither bytes nor a path")
        value = raw if raw is not None else path
    if isinstance(value, (bytes, bytearray, memoryview)):
        im = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, (str, os.PathLike)):
        im = Image.open(value)
    else:
        return Image.fromarray(np.asarray(value))
    im.load()
    return im


def _tail(raw: bytes | None, path: str | None, n: int = 64) -> bytes:
    if raw is not None:
        return raw[-n:]
    with open(path or "", "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read()


def image_problem(value: Any, mode: str = "full") -> str | None:
    """Why this stored image cannot be used for training (``None``: it can), without decoding it fully where
    that is not needed.

    ``mode="full"``: open, check the size against ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb is
    refused before any pixel is decoded), then decode (JPEG at 1/8 scale via ``draft``: every byte is still
    read, so truncation shows, at a fraction of the cost). ``"header"``: open and size check, plus the PNG /
    JPEG end-of-file marker; only an image whose marker is missing is decoded to confirm it is truncated.
    """
    from PIL import Image, UnidentifiedImageError

    raw, path = None, None
    if isinstance(value, dict):
        raw, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
    elif not isinstance(value, Image.Image):
        try:
            open_image(value)
        except Exception as e:
            return f"not an image array ({type(e).__name__}: {e})"
        return None
    else:
        return None
    if raw is None and not path:
        return "no image (neither bytes nor a path)"
    try:
        if (len(raw) if raw is not None else os.path.getsize(path or "")) == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked explicitly below
            im = Image.open(io.BytesIO(raw) if raw is not None else path)
        with im:
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and w * h > limit:
                return (
                    f"decompression bomb: its header claims {w}x{h} = {w * h:,} pixels > "
                    f"PIL.Image.MAX_IMAGE_PIXELS = {limit:,} (raise that limit if the image is genuine)"
                )
            if mode == "header":
                end = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(im.format or "")
                if end is None or end in _tail(raw, path):
                    return None
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image PIL can read (another file type, or a corrupt header)"
    except Image.DecompressionBombError:
        return (
            "decompression bomb: its header claims more than twice PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels (raise that limit if the image is genuine)"
        )
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... for broken data
        text = str(e)
        if "truncated" in text or isinstance(e, EOFError):
            return f"truncated ({text or type(e).__name__})"
        return f"corrupt ({type(e).__name__}: {text})"
    return None


def _split_rows(ds: Any) -> np.ndarray:
    """Each row's position in the split it was selected from: ``select`` / ``shuffle`` keep an indices
    mapping onto the split's table (datasets' ``_indices``), which names a bad row the way the user can find
    it (``split 'train' row 17``) after carve-outs and subsets."""
    indices = getattr(ds, "_indices", None)
    if indices is None:
        return np.arange(len(ds))
    return np.asarray(indices.column(0).to_numpy())


def _cacheable(ds: Any) -> bool:
    """Cache the check beside the data set only inside the HF datasets cache (never in a user's
    ``save_to_disk`` directory, which may be read-only or shared)."""
    import datasets

    root = Path(datasets.config.HF_DATASETS_CACHE).resolve()
    files = [Path(f["filename"]).resolve() for f in ds.cache_files]
    return bool(files) and all(root in f.parents and os.access(f.parent, os.W_OK) for f in files)


#: this process's finished checks: (data set fingerprint, column, mode) -> (rows, {row: problem}); every
#: cell of a ``compare`` loads the same data, and a ``save_to_disk`` / in-memory set has no datasets cache
_CHECKED: dict[tuple[str, str, str], tuple[int, dict[int, str]]] = {}
_CHECKED_MAX = 64


def _problems(ds: Any, column: str, mode: str, what: str) -> list[str]:
    """:func:`image_problem` of every row of ``ds`` ("" = fine), as one ``datasets.map`` pass (progress bar;
    cached by the data set's fingerprint when :func:`_cacheable`, so a re-run is instant). A data set of a
    fingerprint this process has checked already (the next ``compare`` cell) is not read again."""
    fingerprint = getattr(ds, "_fingerprint", None)
    key = (str(fingerprint), column, mode)
    if fingerprint and key in _CHECKED and _CHECKED[key][0] == len(ds):
        n, bad = _CHECKED[key]
        return [bad.get(i, "") for i in range(n)]
    problems = _map_problems(ds, column, mode, what)
    if fingerprint:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[key] = (len(problems), {i: p for i, p in enumerate(problems) if p})
    return problems


def _map_problems(ds: Any, column: str, mode: str, what: str) -> list[str]:
    """:func:`_problems` as one ``datasets.map`` pass over ``ds``."""
    import datasets

    view = ds.select_columns([column])
    if isinstance(view.features[column], datasets.Image):
        view = view.cast_column(column, datasets.Image(decode=False))

    def check(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        return {"_p3b_problem": [image_problem(v, mode) or "" for v in batch[column]]}

    cache = _cacheable(view)
    out = view.map(
        check,
        batched=True,
        batch_size=64,
        remove_columns=[column],
        desc=f"Checking the images of {what}",
        keep_in_memory=not cache,
        load_from_cache_file=cache,
    )
    return list(out["_p3b_problem"])


def check_images(
    sets: Sequence[tuple[str, Any, str]], column: str, mode: str, max_bad: int
) -> tuple[list[Any], dict[str, Any]]:
    """Check every image the run will read -- ``sets`` = (what, dataset, split it was selected from) -- before
    any training, so that a bad file never stops a run mid-way or at its final evaluation.

    Bad images are named (file path, else ``split 'S' row R``) with the reason. More than ``max_bad``
    (distinct) bad images: one :class:`DataError` listing them. Otherwise they are left out of every set,
    with one log line. Returns (the sets' datasets, bad images left out; ``{"checked", "dropped",
    "names"}``)."""
    if mode not in IMAGE_CHECKS:
        raise DataError(f"Unknown image check {mode!r}; choose one of {', '.join(IMAGE_CHECKS)}.")
    out = [ds for _, ds, _ in sets]
    if mode == "off":
        return out, {"checked": 0, "dropped": 0, "names": []}
    import datasets

    bad: dict[tuple[str, int], str] = {}  # (split, row) -> "name: reason"
    bad_pos: list[list[int]] = []
    checked = 0
    for what, ds, split in sets:
        feat = ds.features.get(column)
        if isinstance(feat, datasets.Value) and feat.dtype not in (
            "binary",
            "large_binary",
            "string",
            "large_string",
        ):
            raise DataError(
                f"Image column {column!r} holds {feat.dtype} values, not images. Pass the image column "
                "with --image-column."
            )
        problems = _problems(ds, column, mode, what)
        checked += len(problems)
        positions = [i for i, p in enumerate(problems) if p]
        bad_pos.append(positions)
        if not positions:
            continue
        rows = _split_rows(ds)
        raw = ds.select_columns([column])
        if isinstance(raw.features[column], datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
        for i in positions:
            value = raw[i][column]
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            on_disk = bool(path) and (not isinstance(value, dict) or value.get("bytes") is None)
            where = f"split {split!r} row {int(rows[i])}"
            name = path if on_disk else where + (f" ({path})" if path else "")
            bad.setdefault((split, int(rows[i])), f"{name}: {problems[i]}")
    if not bad:
        return out, {"checked": checked, "dropped": 0, "names": []}
    listed = list(bad.values())
    shown = "; ".join(listed[:BAD_IMAGES_LISTED])
    more = f"; and {len(listed) - BAD_IMAGES_LISTED} more" if len(listed) > BAD_IMAGES_LISTED else ""
    if len(bad) > max_bad:
        limit = f" (the limit is --max-bad-images {max_bad})" if max_bad else ""
        raise DataError(
            f"{len(bad)} of the {checked} images this run uses cannot be read{limit}: {shown}{more}. "
            f"Replace or delete these files, or pass --max-bad-images {len(bad)} to leave them out."
        )
    logger.warning(
        "Left out %d unreadable image(s) of %d (--max-bad-images %d): %s%s",
        len(bad),
        checked,
        max_bad,
        shown,
        more,
    )
    for k, positions in enumerate(bad_pos):
        if positions:
            drop = set(positions)
            out[k] = out[k].select([i for i in range(len(out[k])) if i not in drop])
            if len(out[k]) == 0:
                raise DataError(
                    f"Every image of {sets[k][0]} is unreadable ({shown}{more}). Replace these files."
                )
    return out, {"checked": checked, "dropped": len(bad), "names": listed}
