"""``pad_widths``: exact zero padding of a pruned model to multiples of N, and ``p3b-hf prune --pad-to``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from test_bench import _p3b_plan
from test_recipes import _tiny_data, _tiny_dense
from transformers import AutoModelForImageClassification

from p3b_hf.cost import count_cost
from p3b_hf.errors import P3BError
from p3b_hf.padding import pad_widths
from p3b_hf.plan import WidthPlan
from p3b_hf.slicing import apply_width_plan


def _ragged_plan(model: torch.nn.Module, seed: int = 0) -> WidthPlan:
    """test_bench's P3B-like plan (head dim 5 of 12, MLP 37 of 96, subsets of 30/21/40/45 of 48, one removed
    MLP and attention, one full write) with 43-channel MLP reads: widths that are not multiples of 8."""
    plan = _p3b_plan(model, seed)
    r = random.Random(seed + 100)
    for lp in plan.layers:
        lp.mlp_in = sorted(r.sample(range(48), 43))
    return plan


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_deit_teacher"])
def test_padding_is_exact_and_aligned(fixture, request, images, tmp_path):
    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, _ragged_plan(model)).eval()
    padded = pad_widths(pruned, 8)
    cfg, old = padded.config, pruned.config
    # every live width is now a multiple of 8 (or the full 48), removed sub-blocks stay removed
    assert cfg.layer_head_dims == [8, 8, 0] and old.layer_head_dims == [5, 5, 0]
    assert cfg.layer_intermediate_sizes == [40, 0, 40]
    for key in ("layer_attn_in", "layer_attn_out", "layer_mlp_in", "layer_mlp_out"):
        for i, (new, before) in enumerate(zip(getattr(cfg, key), getattr(old, key))):
            removed = (key.startswith("layer_attn") and i == 2) or (key.startswith("layer_mlp") and i == 1)
            if before is None:
                assert new is None
            elif removed:
                assert new == before  # a constant output is left alone
            else:
                assert new is None or len(new) % 8 == 0, (key, i, new)
                assert set(before) <= set(new or range(48)), "the old channels must all still be there"
    assert cfg.layer_attn_in[0] is not None and len(cfg.layer_attn_in[0]) == 32  # 30 -> 32
    assert cfg.layer_mlp_in[0] is None  # 43 -> 48 = all channels
    # same function
    ref = _logits(pruned, images)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(_logits(padded, images), ref, atol=1e-5, rtol=1e-4)
    assert count_cost(padded)["params"] > count_cost(pruned)["params"]
    assert pad_widths(padded, 8).config.to_dict() == cfg.to_dict()  # idempotent
    # the padded model saves and loads like any pruned model
    padded.save_pretrained(tmp_path / "m")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(_logits(loaded, images), ref, atol=1e-5, rtol=1e-4)
    # the input model is untouched
    assert pruned.config.layer_head_dims == [5, 5, 0]


def test_subset_stats_keeps_read_widths(tiny_vit, images):
    pruned = apply_width_plan(tiny_vit, _ragged_plan(tiny_vit, 1), layernorm_mode="subset_stats").eval()
    padded = pad_widths(pruned, 8)
    assert padded.config.layer_attn_in == pruned.config.layer_attn_in  # padding would change the statistics
    assert len(padded.config.layer_attn_out[1]) == 24
    torch.testing.assert_close(_logits(padded, images), _logits(pruned, images), atol=1e-5, rtol=1e-4)


def test_bad_input_is_refused(tiny_vit):
    with pytest.raises(P3BError, match="p3b_hf pruned model"):
        pad_widths(tiny_vit, 8)
    pruned = apply_width_plan(tiny_vit, _ragged_plan(tiny_vit))
    with pytest.raises(P3BError, match="positive channel multiple"):
        pad_widths(pruned, 0)


def test_prune_cli_pad_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from p3b_hf.cli import main

    data = _tiny_data(tmp_path)
    dense_dir, _ = _tiny_dense(tmp_path)
    out = tmp_path / "out"
    base = [
        "prune",
        "--method",
        "p3b",
        "--model",
        str(dense_dir),
        "--dataset",
        str(data),
        "--prune-ratio",
        "0.5",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--max-train-samples",
        "16",
        "--prune-start-epoch",
        "1",
        "--prune-sparse-epoch",
        "2",
        "--prune-finalize-epoch",
        "3",
        "--update-every",
        "1",
        "--device",
        "cpu",
        "--augment",
        "basic",
        "--logging-steps",
        "100",
    ]
    assert main([*base, "--output-dir", str(out), "--pad-to", "0"]) == 2  # refused before any training
    assert "--pad-to 0 is invalid" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--output-dir", str(out), "--pad-to", "8"]) == 0
    report = json.loads((out / "pruning_report.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert report["pad_to"] == 8
    assert report["unpadded"]["params"] <= report["pruned"]["params"]
    for key in ("layer_head_dims", "layer_intermediate_sizes"):
        assert all(w % 8 == 0 for w in cfg[key]), cfg[key]
    model = AutoModelForImageClassification.from_pretrained(out)
    assert count_cost(model)["params"] == report["pruned"]["params"]
