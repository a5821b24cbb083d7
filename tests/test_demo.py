"""Demo data determinism and a shortened end-to-end ``p3b-hf demo`` run (reload + logits check)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from p3b_hf import demo_data
from p3b_hf.transforms import glyph_batch_augment


def test_rendering_is_deterministic_and_split_by_font() -> None:
    fonts = demo_data.source_fonts()[:2] + [demo_data.PIL_DEFAULT_FONT]
    a = demo_data.render_domain("aB3", fonts, 2, seed=7)
    b = demo_data.render_domain("aB3", fonts, 2, seed=7)
    c = demo_data.render_domain("aB3", fonts, 2, seed=8)
    assert a.images.shape == (18, 32, 32) and np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    ink = a.images.reshape(len(a.images), -1).mean(1)
    assert (ink > 5).all() and (ink < 128).all()  # every image has ink on a mostly empty background
    train_fonts, eval_fonts = demo_data.target_fonts()
    assert len(eval_fonts) == 4 and not set(train_fonts) & set(eval_fonts) and len(train_fonts) >= 8
    assert all(demo_data.font_covers(f, demo_data.TARGET_CLASSES) for f in train_fonts + eval_fonts)
    assert not demo_data.font_covers(demo_data.PIL_DEFAULT_FONT, demo_data.TARGET_CLASSES)


def test_glyph_batch_augment_colours_and_range() -> None:
    cov = torch.zeros(4, 1, 32, 32)
    cov[:, :, 10:22, 14:18] = 1.0
    out = glyph_batch_augment(cov, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert (out[:, :, :3, :3].mean((1, 2, 3)) > out[:, :, 14:18, 15:17].mean((1, 2, 3)) + 0.1).all()


@pytest.mark.slow
def test_short_demo_end_to_end(tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification

    from p3b_hf.cli import main
    from p3b_hf.data import build_datasets, load_image_dataset
    from p3b_hf.loading import load_image_processor
    from p3b_hf.training import evaluate_accuracy

    out = tmp_path / "demo"
    argv = [
        "demo",
        "--output-dir",
        str(out),
        "--pretrain-steps",
        "12",
        "--source-renders",
        "1",
        "--train-renders",
        "1",
        "--eval-renders",
        "1",
        "--epochs",
        "1",
        "--skip-dense",
        "--bench-iters",
        "1",
        "--threads",
        "1",
        "--prune-ratio",
        "0.4",
    ]
    assert main(argv) == 0
    report = json.loads((out / "demo_report.json").read_text())
    assert report["reload"]["ok"] and report["reload"]["max_abs_logit_diff"] <= 1e-4
    assert report["reload"]["class"] == "P3BViTForImageClassification"
    assert abs(report["achieved_param_reduction"] - 0.4) < 0.02
    assert report["pruned"]["params"] < report["dense"]["params"] and report["dense"]["accuracy"] is None
    model_dir = Path(report["model_dir"])
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "width_plan.json",
        "pruning_report.json",
    ):
        assert (model_dir / name).exists(), name
    assert (out / "plots" / "samples.png").exists() and (model_dir / "plots" / "widths.png").exists()
    assert (out / "source_model" / "model.safetensors").exists()

    # independent reload: the saved dir gives the reported pruned accuracy on the target eval split
    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    assert sum(p.numel() for p in model.parameters()) == report["pruned"]["params"]
    data = load_image_dataset(out / "data" / "target")
    _, eval_ds = build_datasets(data, load_image_processor(str(model_dir)), image_size=32, augment="none")
    acc = evaluate_accuracy(model, eval_ds, device="cpu")["accuracy"]
    assert acc == pytest.approx(report["pruned"]["accuracy"], abs=1e-9)

    # the source model is cached: the same spec reuses it, another spec would retrain
    logs: list[str] = []
    spec = demo_data.SourceModelSpec(steps=12, renders_per_font=1, seed=0)
    path, info = demo_data.pretrain_source_model(out / "source_model", spec, log=logs.append)
    assert path == out / "source_model" and "reusing" in logs[0]
    assert info["source_eval_accuracy"] == report["source"]["source_eval_accuracy"]
