"""Data loading, validation errors, transforms, mixing collator and dev-bench conversion (all offline)."""

from __future__ import annotations

import json
import os
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
from p3b_hf.errors import DataError
from p3b_hf.transforms import (
    _rand_aug_space,
    glyph_augment,
    mix_batch,
    preprocess_from_processor,
    rand_augment,
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
