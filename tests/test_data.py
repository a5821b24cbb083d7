"""Data loading, validation errors, transforms, mixing collator and dev-bench conversion (all offline)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from p3b_hf.data import (
    TRAIN_MARKER,
    ImageData,
    build_datasets,
    devbench_dataset_dict,
    load_image_dataset,
    make_collator,
)
from p3b_hf.errors import DataError, OptionsError, P3BError
from p3b_hf.options import DataOptions, TrainOptions
from p3b_hf.transforms import (
    _rand_aug_space,
    glyph_augment,
    mix_batch,
    preprocess_from_processor,
    rand_augment,
    to_rgb,
)

#: the dev-bench sits next to the checkout (../shared/dev-bench) unless $P3B_DEVBENCH says otherwise
DEVBENCH = Path(
    os.environ.get("P3B_DEVBENCH") or Path(__file__).resolve().parents[1].parent / "shared" / "dev-bench"
)


def _img(value: int, size: int = 12, mode: str = "RGB") -> Image.Image:
    arr = np.full((size, size, 3), value, np.uint8)
    arr[: size // 2, : size // 3] = 255 - value  # some structure, so crops/flips matter
    im = Image.fromarray(arr)
    return im.convert(mode)


def _cifar_like(n_per_class: int = 10, k: int = 3, mode: str = "RGB") -> datasets.Dataset:
    labels = [c for c in range(k) for _ in range(n_per_class)]
    feats = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=[f"c{i}" for i in range(k)]),
            "coarse_label": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "img": [_img(20 * c + i, mode=mode) for i, c in enumerate(labels)],
            "fine_label": labels,
            "coarse_label": [0] * len(labels),
        },
        features=feats,
    )


class _Proc:
    """Minimal image-processor stand-in (the attributes HF processors expose)."""

    do_normalize = True
    image_mean = [0.2, 0.4, 0.6]
    image_std = [0.5, 0.25, 0.125]
    size = {"height": 24, "width": 24}
    resample = 2


def test_save_to_disk_carves_stratified_eval(tmp_path: Path) -> None:
    _cifar_like().save_to_disk(str(tmp_path / "c"))
    data = load_image_dataset(str(tmp_path / "c"), seed=3)
    assert (data.image_column, data.label_column, data.labels) == ("img", "fine_label", ["c0", "c1", "c2"])
    assert len(data.train) == 27 and len(data.eval) == 3
    assert sorted(data.eval["fine_label"]) == [0, 1, 2]  # one per class
    assert "stratified" in data.eval_origin
    again = load_image_dataset(str(tmp_path / "c"), seed=3)
    assert [np.asarray(x).sum() for x in again.eval["img"]] == [np.asarray(x).sum() for x in data.eval["img"]]
    train_sums = {np.asarray(x).sum() for x in data.train["img"]}
    assert not train_sums & {np.asarray(x).sum() for x in data.eval["img"]}  # disjoint (unique images)
    sub = load_image_dataset(str(tmp_path / "c"), max_train_samples=5, max_eval_samples=2)
    assert (len(sub.train), len(sub.eval)) == (5, 2)


def test_imagefolder_with_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("validation", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / "folder" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                _img(40 * i + (cls == "dog") * 100, mode="L").save(d / f"{i}.png")
    data = load_image_dataset(str(tmp_path / "folder"))
    assert data.info["loaded_with"] == "imagefolder"
    assert (data.image_column, data.label_column, data.labels) == ("image", "label", ["cat", "dog"])
    assert (len(data.train), len(data.eval), data.eval_origin) == (6, 4, "split 'validation'")
    train_ds, eval_ds = build_datasets(data, _Proc(), image_size=16, augment="basic")
    item = eval_ds[0]
    assert item["pixel_values"].shape == (3, 16, 16)  # grayscale PNG -> RGB
    assert item["labels"] in (0, 1) and TRAIN_MARKER not in item
    assert train_ds[0][TRAIN_MARKER] is True


def test_parquet_int_labels_and_string_labels(tmp_path: Path) -> None:
    pqd = tmp_path / "pq"
    (pqd / "data").mkdir(parents=True)  # the Hub's parquet layout: data/<split>-00000-of-00001.parquet
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(
        {"image": [_img(i) for i in range(6)], "label": [0, 1, 2, 0, 1, 2]}, features=feats
    ).to_parquet(str(pqd / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_dict({"image": [_img(9)], "label": [2]}, features=feats).to_parquet(
        str(pqd / "data" / "test-00000-of-00001.parquet")
    )
    data = load_image_dataset(str(pqd))
    assert data.labels == ["0", "1", "2"] and data.eval_origin == "split 'test'" and len(data.train) == 6

    feats_s = datasets.Features({"image": datasets.Image(), "species": datasets.Value("string")})
    sdir = tmp_path / "s"
    sdir.mkdir()
    datasets.Dataset.from_dict(
        {"image": [_img(i) for i in range(4)], "species": ["b", "a", "b", "a"]}, features=feats_s
    ).to_parquet(str(sdir / "train.parquet"))
    datasets.Dataset.from_dict({"image": [_img(1)], "species": ["b"]}, features=feats_s).to_parquet(
        str(sdir / "validation.parquet")
    )
    data = load_image_dataset(str(sdir), label_column="species")
    assert data.labels == ["a", "b"] and data.train["species"] == [1, 0, 1, 0] and data.eval["species"] == [1]


def _write_dd(path: Path, train: datasets.Dataset, **others: datasets.Dataset) -> str:
    datasets.DatasetDict({"train": train, **others}).save_to_disk(str(path))
    return str(path)


def test_errors_name_problem_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset(str(tmp_path / "nope"))
    ds = _cifar_like(2)
    path = _write_dd(tmp_path / "a", ds)
    with pytest.raises(DataError, match="--image-column"):
        load_image_dataset(path, image_column="picture_x")
    with pytest.raises(DataError, match="--train-split"):
        load_image_dataset(path, train_split="training")
    with pytest.raises(DataError, match="--eval-split"):
        load_image_dataset(path, eval_split="validation")
    no_label = _write_dd(tmp_path / "b", ds.remove_columns(["fine_label", "coarse_label"]))
    with pytest.raises(DataError, match="--label-column"):
        load_image_dataset(no_label)
    with pytest.raises(
        DataError, match="empty"
    ):  # empty splits cannot be saved to disk; in memory they exist
        load_image_dataset(datasets.DatasetDict({"train": ds, "validation": ds.select([])}))
    with pytest.raises(DataError, match="empty"):
        load_image_dataset(datasets.DatasetDict({"train": ds.select([])}))
    ints = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    bad = _write_dd(
        tmp_path / "d",
        datasets.Dataset.from_dict({"image": [_img(1), _img(2)], "label": [0, 1]}, features=ints),
        test=datasets.Dataset.from_dict({"image": [_img(3)], "label": [-1]}, features=ints),
    )
    with pytest.raises(DataError, match="out of range"):
        load_image_dataset(bad)
    strs = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    unk = _write_dd(
        tmp_path / "e",
        datasets.Dataset.from_dict({"image": [_img(1)], "label": ["x"]}, features=strs),
        validation=datasets.Dataset.from_dict({"image": [_img(3)], "label": ["y"]}, features=strs),
    )
    with pytest.raises(DataError, match="unknown label set"):
        load_image_dataset(unk)
    with pytest.raises(DataError, match="uoft-cs/cifar100.*HF_HUB_OFFLINE"):  # preset -> Hub id, offline
        load_image_dataset("cifar100")
    with pytest.raises(DataError, match="no Hub repo"):
        load_image_dataset("ifood2019")
    with pytest.raises(DataError, match="Unknown preset"):
        load_image_dataset(path, preset="imagenet-42")


def test_eval_transform_resizes_and_normalises_like_the_processor(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (8, 8), (51, 102, 255))] * 2, "fine_label": [0, 1]}  # two classes
    )
    _write_dd(tmp_path / "f", ds, test=ds)
    data = load_image_dataset(str(tmp_path / "f"))
    _, eval_ds = build_datasets(data, _Proc(), augment="deit")  # image_size from the processor (24)
    x = eval_ds[0]["pixel_values"]
    assert x.shape == (3, 24, 24)
    expected = (torch.tensor([0.2, 0.4, 1.0]) - torch.tensor(_Proc.image_mean)) / torch.tensor(
        _Proc.image_std
    )
    torch.testing.assert_close(x.mean((1, 2)), expected, atol=1e-5, rtol=0)


def test_center_crop_processor_and_train_recipes() -> None:
    class CropProc(_Proc):
        do_center_crop = True
        size = {"shortest_edge": 256}
        crop_size = {"height": 224, "width": 224}

    pre = preprocess_from_processor(CropProc(), image_size=32)
    assert pre.image_size == 32 and pre.crop_pct == pytest.approx(224 / 256)
    ds = datasets.DatasetDict({"train": _cifar_like(4, 2), "test": _cifar_like(1, 2)})
    data = ImageData(
        train=ds["train"], eval=ds["test"], image_column="img", label_column="fine_label", labels=["a", "b"]
    )
    torch.manual_seed(0)
    for augment in ("deit", "glyph", "basic"):
        train_ds, eval_ds = build_datasets(data, CropProc(), image_size=32, augment=augment)
        a, b = train_ds[0]["pixel_values"], train_ds[0]["pixel_values"]
        assert a.shape == (3, 32, 32) and torch.isfinite(a).all()
        assert not torch.equal(a, b), augment  # random per access
        torch.testing.assert_close(
            eval_ds[0]["pixel_values"], eval_ds[0]["pixel_values"]
        )  # eval deterministic


def test_rand_augment_and_glyph_augment_statistics() -> None:
    torch.manual_seed(1)
    img = _img(90, size=32)
    outs = {np.asarray(rand_augment(img)).tobytes() for _ in range(20)}
    assert len(outs) > 5  # 14 ops, 2 per call
    space = _rand_aug_space(31, 32, 24)  # torchvision's bins at magnitude 9 of 31
    assert len(space) == 14
    m9 = {k: (float(v[0][9]) if v[0] is not None else None, v[1]) for k, v in space.items()}
    assert m9["Rotate"] == (pytest.approx(9.0), True) and m9["ShearX"] == (pytest.approx(0.09), True)
    assert m9["TranslateX"][0] == pytest.approx(150 / 331 * 32 * 0.3)
    assert m9["TranslateY"][0] == pytest.approx(150 / 331 * 24 * 0.3)
    assert m9["Brightness"] == (pytest.approx(0.27), True) and m9["Posterize"] == (7.0, False)
    assert m9["Solarize"] == (pytest.approx(178.5), False) and m9["Equalize"] == (None, False)
    assert [int(b) for b in space["Posterize"][0][[0, 4, 12, 19, 30]]] == [8, 7, 6, 5, 4]
    x = torch.ones(3, 32, 32)
    x[:, 8:24, 14:18] = 0.0  # a black bar on white
    y = glyph_augment(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    corner, centre = y[:, :4, :4].mean(), y[:, 14:18, 15:17].mean()
    assert corner > 0.5 and centre < 0.5  # light background, dark ink
    corners = torch.stack([glyph_augment(x)[:, :4, :4].mean((1, 2)) for _ in range(8)])
    assert corners.std(0).min() > 0.02  # background colour is re-drawn per image and channel


def test_collator_mixes_train_batches_only(caplog: pytest.LogCaptureFixture) -> None:
    k, b = 5, 6
    labels = torch.arange(b) % k
    # each image is constant = its label index, so the mixing weight can be read back from the pixels
    feats = [
        {"pixel_values": torch.full((3, 8, 8), float(y)), "labels": int(y), TRAIN_MARKER: True}
        for y in labels
    ]
    torch.manual_seed(0)
    col = make_collator(k, mixup=0.8, cutmix=0.0, label_smoothing=0.0)
    out = col(feats)
    t = out["labels"]
    assert t.shape == (b, k) and t.dtype == torch.float32
    torch.testing.assert_close(t.sum(1), torch.ones(b))
    pix = out["pixel_values"].mean((1, 2, 3))
    torch.testing.assert_close(pix, (t * torch.arange(k).float()).sum(1))  # pixels agree with targets
    torch.manual_seed(1)
    x, t = mix_batch(
        torch.stack([f["pixel_values"] for f in feats]), labels, k, mixup=0.0, cutmix=1.0, label_smoothing=0.1
    )
    torch.testing.assert_close(t.sum(1), torch.ones(b))
    assert t.min() >= 0.1 / k - 1e-6
    i, j = 1, b - 2  # image 1 (label 1) is paired with image 4 (label 4)
    lam = 1 - (x[i] == float(labels[j])).float().mean()  # share of image 1 not covered by the pasted box
    assert 0 < lam < 1 or t[i, labels[j]] == pytest.approx(0.1 / k + 0.9 * (1 - float(lam)))
    assert t[i, labels[i]] == pytest.approx(float(lam) * 0.9 + 0.1 / k, abs=1e-5)
    assert t[i, labels[j]] == pytest.approx((1 - float(lam)) * 0.9 + 0.1 / k, abs=1e-5)
    unmarked = [{k2: v for k2, v in f.items() if k2 != TRAIN_MARKER} for f in feats]  # eval items
    with caplog.at_level("WARNING", logger="p3b_hf.data"):
        plain = col(unmarked)
    assert plain["labels"].dtype == torch.long and torch.equal(plain["labels"], labels)
    assert set(plain) == {"pixel_values", "labels"}
    assert "train marker" not in caplog.text  # a marked train batch was seen: unmarked = eval, no warning
    fresh = make_collator(k)
    with caplog.at_level("WARNING", logger="p3b_hf.data"):
        assert fresh(unmarked)["labels"].dtype == torch.long  # a foreign train set? warn once
    assert "train marker" in caplog.text
    assert make_collator(k, mix_unmarked=True)(unmarked)["labels"].shape == (b, k)
    off = make_collator(k, enabled=False)(feats)
    assert off["labels"].dtype == torch.long and TRAIN_MARKER not in off


@pytest.mark.skipif(not (DEVBENCH / "scripts200_dev.npz").exists(), reason="dev-bench not present")
def test_devbench_subset_conversion(tmp_path: Path) -> None:
    dd = devbench_dataset_dict(
        DEVBENCH / "scripts200_dev.npz", DEVBENCH / "scripts200_dev.json", max_per_split=25
    )
    meta = json.loads((DEVBENCH / "scripts200_dev.json").read_text())
    assert set(dd) == {"train", "validation"} and len(dd["train"]) == 25 and len(dd["validation"]) == 25
    assert dd["train"].features["label"].names == meta["classes"]
    with np.load(DEVBENCH / "scripts200_dev.npz") as z:
        cov, lab = z["validation_images"][3], int(z["validation_labels"][3])
    im = dd["validation"][3]["image"]
    assert im.mode == "RGB"
    arr = np.asarray(im)
    assert np.array_equal(arr[..., 0], 255 - cov) and np.array_equal(arr[..., 2], 255 - cov)
    assert dd["validation"][3]["label"] == lab
    # the first 25 training images are all of class 0: an eval split with other classes is refused (never
    # learnt, always wrong), so keep the validation images of the trained class
    with pytest.raises(DataError, match="'validation'.*no image in the training set"):
        load_image_dataset(dd)
    trained = set(dd["train"]["label"])
    dd["validation"] = dd["validation"].filter(lambda r: r["label"] in trained)
    dd.save_to_disk(str(tmp_path / "db"))
    data = load_image_dataset(str(tmp_path / "db"))
    assert data.num_labels == 200 and data.eval_origin == "split 'validation'" and len(data.eval) == 7


def test_preset_pins_columns_and_prefers_its_eval_split(tmp_path: Path) -> None:
    ds = _cifar_like(2, 2).rename_column("img", "picture")  # the preset says "img": override it explicitly
    path = _write_dd(tmp_path / "p", ds, validation=ds, test=ds.select([0, 1, 2]))
    assert load_image_dataset(path).eval_origin == "split 'validation'"  # auto: validation first
    data = load_image_dataset(path, preset="cifar100", image_column="picture")
    assert data.eval_origin == "split 'test'" and len(data.eval) == 3 and data.label_column == "fine_label"
    only_train = _write_dd(tmp_path / "q", ds)
    assert (
        "stratified" in load_image_dataset(only_train, preset="cifar100", image_column="picture").eval_origin
    )


# ------------------------------------------------------------------------ bad images and bad layouts
def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header claiming side x side RGB pixels (10^10 by default) with almost no data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return _png_bytes(noise)[:300]


def _folder(root: Path, classes: dict[str, tuple[str, ...]] | None = None, n: int = 4) -> Path:
    """imagefolder ``root/<split>/<class>/<i>.png`` (12x12 RGB, distinct values)."""
    for split, names in (classes or {"train": ("a", "b"), "validation": ("a", "b")}).items():
        for c, cls in enumerate(names):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _img((30 * i + 70 * c) % 250).save(root / split / cls / f"{i}.png")
    return root


def test_bad_images_are_all_named_before_training_or_left_out(tmp_path: Path) -> None:
    """Truncated, empty, not-an-image and decompression-bomb files (train AND eval) are found up front,
    all named with the reason; --max-bad-images N leaves them out; then every remaining item decodes."""
    root = _folder(tmp_path / "f")
    bad = {
        root / "train" / "a" / "trunc.png": _truncated_png(),
        root / "train" / "b" / "zero.png": b"",
        root / "train" / "b" / "text.png": b"this is a text file, not an image\n",
        root / "validation" / "a" / "bomb.png": _bomb_png(),  # in the eval split: found before training
    }
    for path, raw in bad.items():
        path.write_bytes(raw)
    for mode in ("full", "header"):
        with pytest.raises(DataError) as err:
            load_image_dataset(str(root), image_check=mode)
        msg = str(err.value)
        assert msg.startswith("4 of the 20 images this run uses cannot be read") and "\n" not in msg
        for path, reason in zip(
            bad, ("truncated", "empty file (0 bytes)", "not an image", "decompression bomb")
        ):
            assert f"{path}: {reason}" in msg, (path, msg)
        assert "--max-bad-images 4 to leave them out" in msg
    with pytest.raises(DataError, match=r"cannot be read \(the limit is --max-bad-images 3\)"):
        load_image_dataset(str(root), max_bad_images=3)
    data = load_image_dataset(str(root), max_bad_images=4)
    assert (len(data.train), len(data.eval)) == (8, 8)  # 3 of 11 train files, 1 of 9 eval files left out
    assert data.info["bad_images"]["dropped"] == 4 and data.info["bad_images"]["checked"] == 20
    train_ds, eval_ds = build_datasets(data, _Proc(), image_size=16, augment="basic")
    assert all(train_ds[i]["pixel_values"].shape == (3, 16, 16) for i in range(len(train_ds)))
    assert sorted(eval_ds[i]["labels"] for i in range(len(eval_ds))) == [0] * 4 + [1] * 4
    # without the check the same data set fails mid-way (what the check prevents)
    unchecked = load_image_dataset(str(root), image_check="off")
    with pytest.raises(OSError):
        build_datasets(unchecked, _Proc(), image_size=16, augment="none")[0][:]


def test_bad_embedded_image_is_named_by_its_split_row(tmp_path: Path) -> None:
    """A save_to_disk set has no files: a bad image is named by its row in the split, also after the
    stratified carve-out and a seeded subset reordered the rows."""
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    images = [{"bytes": _png_bytes(np.full((8, 8, 3), 10 * i, np.uint8)), "path": None} for i in range(20)]
    images[13] = {"bytes": _truncated_png(), "path": None}
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(20)]}, features=feats)
    path = _write_dd(tmp_path / "d", ds)
    with pytest.raises(DataError, match=r"1 of the 20 images .*: split 'train' row 13: truncated"):
        load_image_dataset(path)
    with pytest.raises(DataError, match=r"1 of the 18 images .*: split 'train' row 13: truncated"):
        load_image_dataset(path, max_train_samples=16, seed=1)  # held out 2 + 16 of 18 (13 among them)
    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": _truncated_png(), "path": None}] * 2, "label": [0, 1]}, features=feats
    )
    with pytest.raises(DataError, match="Every image of eval set 'test' is unreadable"):
        load_image_dataset(datasets.DatasetDict(train=ds.select(range(12)), test=broken), max_bad_images=2)


def test_images_are_checked_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``compare`` cell loads the same data: a save_to_disk set (no datasets cache) is read by the image
    check once; the next load reuses the result by fingerprint, and still leaves the same bad image out."""
    import p3b_hf.data.images as images

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    pics = [{"bytes": _png_bytes(np.full((8, 8, 3), 10 * i, np.uint8)), "path": None} for i in range(20)]
    pics[13] = {"bytes": _truncated_png(), "path": None}
    ds = datasets.Dataset.from_dict({"image": pics, "label": [i % 2 for i in range(20)]}, features=feats)
    path = _write_dd(tmp_path / "d", ds)
    calls = []
    real = images.image_problem
    monkeypatch.setattr(images, "image_problem", lambda v, mode: calls.append(1) or real(v, mode))
    monkeypatch.setattr(images, "_CHECKED", {})
    first = load_image_dataset(path, max_bad_images=1)
    read = len(calls)
    assert read == 20 and first.info["bad_images"]["dropped"] == 1
    again = load_image_dataset(path, max_bad_images=1)
    assert len(calls) == read  # not read again
    assert again.info["bad_images"] == first.info["bad_images"]
    assert (len(again.train), len(again.eval)) == (len(first.train), len(first.eval))
    load_image_dataset(path, max_bad_images=1, image_check="header")  # another mode is another check
    assert len(calls) == 2 * read


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    """An I;16 PNG (values 0..65535) must look like its 8-bit version, not all white (PIL's convert clips)."""
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(
        np.uint16
    )  # 0..65535 in 256 steps
    root = _folder(tmp_path / "f", n=2)
    Image.fromarray(ramp).save(root / "validation" / "a" / "0.png")
    assert Image.open(root / "validation" / "a" / "0.png").mode == "I;16"
    data = load_image_dataset(str(root))
    _, eval_ds = build_datasets(data, _Proc(), image_size=16, augment="none")
    item = next(eval_ds[i] for i in range(len(eval_ds)) if eval_ds[i]["pixel_values"].std() > 0.5)
    want = torch.from_numpy((ramp // 257).astype(np.float32) / 255.0).expand(3, 16, 16)
    want = (want - torch.tensor(_Proc.image_mean).view(3, 1, 1)) / torch.tensor(_Proc.image_std).view(3, 1, 1)
    torch.testing.assert_close(item["pixel_values"], want, atol=1e-5, rtol=0)
    assert to_rgb(Image.fromarray(ramp)).getextrema() == ((0, 255),) * 3  # the whole range survives


def test_layouts_that_would_train_a_wrong_model_are_refused(tmp_path: Path) -> None:
    """A class only in test/, one class, images without class folders, the label column = the images."""
    only_test = _folder(tmp_path / "t", {"train": ("a", "b"), "test": ("a", "b", "c")})
    with pytest.raises(
        DataError, match=r"Eval set 'test' .* class\(es\) \['c'\] that have no image in the training"
    ):
        load_image_dataset(str(only_test))
    unused = _folder(tmp_path / "u", {"train": ("a", "b"), "validation": ("a", "b"), "test": ("a", "b", "c")})
    with pytest.raises(DataError, match=r"Class folder\(s\) \['c'\] .* no image in the train split"):
        load_image_dataset(str(unused))  # 'c' is only in test/, which is not even the eval split
    one = _folder(tmp_path / "one", {"train": ("a",), "test": ("a",)})
    with pytest.raises(DataError, match="without class folders \\(or with only one\\)"):
        load_image_dataset(str(one))
    (tmp_path / "flat").mkdir()
    for i in range(4):
        _img(40 * i).save(tmp_path / "flat" / f"{i}.png")
    with pytest.raises(DataError, match="without class folders"):
        load_image_dataset(str(tmp_path / "flat"))
    with pytest.raises(DataError, match="holds the images"):
        load_image_dataset(str(tmp_path / "flat"), label_column="image")
    split_dirs = tmp_path / "s"
    for split in ("train", "test"):
        (split_dirs / split).mkdir(parents=True)
        for i in range(3):
            _img(40 * i).save(split_dirs / split / f"{i}.png")
    with pytest.raises(DataError, match=r"class names \['test', 'train'\] are split names"):
        load_image_dataset(str(split_dirs))
    one_label = _cifar_like(4, 1)
    with pytest.raises(DataError, match=r"has 1 class \(\['c0'\]\): a one-class classifier"):
        load_image_dataset(one_label)


def test_parquet_without_hf_metadata_loads(tmp_path: Path) -> None:
    """Parquet written by pyarrow/pandas (no HF features): images as {bytes, path} structs or raw bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(6)]
    (tmp_path / "s").mkdir()
    pq.write_table(
        pa.table(
            {
                "image": [{"bytes": _png_bytes(a), "path": f"{i}.png"} for i, a in enumerate(arrays)],
                "label": [0, 1, 0, 1, 0, 1],
            }
        ),
        tmp_path / "s" / "train.parquet",
    )
    (tmp_path / "b").mkdir()
    pq.write_table(
        pa.table({"image": [_png_bytes(a) for a in arrays], "label": ["x", "y", "x", "y", "x", "y"]}),
        tmp_path / "b" / "train.parquet",
    )
    for name, labels in (("s", ["0", "1"]), ("b", ["x", "y"])):
        data = load_image_dataset(str(tmp_path / name), eval_fraction=0.34)
        assert data.labels == labels and (len(data.train), len(data.eval)) == (4, 2)
        _, eval_ds = build_datasets(data, None, image_size=8, augment="none")
        rows = data.eval.select_columns(["label"])["label"]
        for i, label in enumerate(rows):
            value = eval_ds[i]["pixel_values"]  # 0.5/0.5 normalisation of the stored grey value
            assert value.shape == (3, 8, 8) and eval_ds[i]["labels"] == label
            assert round(float(value.mean() * 0.5 + 0.5) * 255) in {40 * k for k in range(6)}
    (tmp_path / "n").mkdir()
    pq.write_table(pa.table({"image": [1, 2, 3, 4], "label": [0, 1, 0, 1]}), tmp_path / "n" / "train.parquet")
    with pytest.raises(DataError, match="Image column 'image' holds int64 values, not images"):
        load_image_dataset(str(tmp_path / "n"))


def test_option_ranges_are_one_error_naming_the_flag() -> None:
    """NaN epochs, a negative lr / worker count, label smoothing outside [0, 1) ...: one OptionsError each
    (before: tracebacks inside the Trainer, or label smoothing 2 training to 0 % with exit 0)."""
    bad_train = [
        (dict(epochs=float("nan")), "--epochs nan is out of range: give a finite number > 0"),
        (dict(epochs=0), "--epochs 0 is out of range"),
        (dict(lr=-1.0), "--lr -1.0 is out of range: give a finite learning rate > 0"),
        (dict(lr=float("inf")), "--lr inf is out of range"),
        (dict(num_workers=-1), r"--num-workers -1 is out of range: give a whole number >= 0"),
        (dict(batch_size=0), "--batch-size 0 is out of range"),
        (dict(eval_batch_size=0), "--eval-batch-size 0 is out of range"),
        (dict(weight_decay=-0.1), "--weight-decay -0.1 is out of range"),
        (dict(seed=-1), r"--seed -1 is out of range: give a whole number in \[0, 2\*\*32\)"),
        (dict(logging_steps=0), "--logging-steps 0 is out of range"),
        (dict(batch_size=2.5), "--batch-size 2.5 is out of range: give a whole number"),
    ]
    for kwargs, match in bad_train:
        with pytest.raises(OptionsError, match=match):
            TrainOptions(**kwargs)
    bad_data = [
        (dict(label_smoothing=2.0), r"--label-smoothing 2.0 is out of range: give a value in \[0, 1\)"),
        (dict(label_smoothing=1.0), "--label-smoothing 1.0 is out of range"),
        (dict(label_smoothing=-0.1), "--label-smoothing -0.1 is out of range"),
        (dict(mixup=float("nan")), "--mixup nan is out of range: give an alpha >= 0"),
        (dict(cutmix=-1.0), "--cutmix -1.0 is out of range"),
        (dict(source_holdout=1.0), r"--source-holdout 1.0 is out of range: give a fraction in \[0, 1\)"),
        (dict(max_train_samples=0), "--max-train-samples 0 is out of range"),
        (dict(max_eval_samples=-5), "--max-eval-samples -5 is out of range"),
        (dict(max_bad_images=-1), "--max-bad-images -1 is out of range"),
        (dict(image_check="deep"), "--image-check 'deep' is invalid: give one of full, header, off"),
    ]
    for kwargs, match in bad_data:
        with pytest.raises(OptionsError, match=match):
            DataOptions(dataset="d", **kwargs)
    assert (
        TrainOptions(lr=None, epochs=0.5).epochs == 0.5 and DataOptions(dataset="d", label_smoothing=0).mixing
    )
    assert issubclass(OptionsError, P3BError)
    with pytest.raises(DataError, match=r"label_smoothing=2.0 must lie in \[0, 1\)"):
        make_collator(3, label_smoothing=2.0)  # the library path checks too
    with pytest.raises(DataError, match="alphas >= 0"):
        make_collator(3, mixup=float("nan"))


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, tiny_vit, capsys: pytest.CaptureFixture) -> None:
    """In-process CLI: a bad option and a truncated training image are one line on stderr, exit 2, no
    traceback, nothing written."""
    from p3b_hf.cli import main

    root = _folder(tmp_path / "f")
    (root / "train" / "b" / "cut.png").write_bytes(_truncated_png())
    tiny_vit.save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    base = ["prune", "--model", str(tmp_path / "m"), "--dataset", str(root), "--output-dir", str(out)]
    base += ["--device", "cpu", "--epochs", "1"]
    for extra, expected in (
        (["--label-smoothing", "2"], "--label-smoothing 2.0 is out of range: give a value in [0, 1)"),
        (["--lr", "-1"], "--lr -1.0 is out of range"),
        (["--num-workers", "-1"], "--num-workers -1 is out of range"),
        (
            [],
            f"1 of the 17 images this run uses cannot be read: {root / 'train' / 'b' / 'cut.png'}: truncated",
        ),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("p3b-hf prune: error:")]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
    assert not out.exists() and not (tmp_path / "out.work").exists()
    assert main([*base, "--epochs", "nan"]) == 2
    assert "p3b-hf prune: error: --epochs nan is out of range" in capsys.readouterr().err
