"""Pruned model classes (save/load, stock checkpoints) and the analytic cost model."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageClassification, DeiTConfig, ViTConfig

import p3b_hf
from p3b_hf import P3BViTConfig, P3BViTForImageClassification, WidthPlan, apply_width_plan, count_cost


def _random_plan(config, seed: int) -> WidthPlan:
    rng = random.Random(seed)
    plan = WidthPlan.full(config)
    c, d, f = config.hidden_size, config.hidden_size // config.num_attention_heads, config.intermediate_size
    for lp in plan.layers:
        lp.head_dims = sorted(rng.sample(range(d), rng.randint(0, d)))
        lp.heads = sorted(
            rng.sample(range(config.num_attention_heads), rng.randint(1, config.num_attention_heads))
        )
        lp.mlp = sorted(rng.sample(range(f), rng.randint(0, f)))
        for name in ("attn_in", "attn_out", "mlp_in", "mlp_out"):
            if rng.random() < 0.7:
                setattr(lp, name, sorted(rng.sample(range(c), rng.randint(0, c))))
    return plan


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_save_and_reload_gives_identical_logits(tmp_path, tiny_vit, images):
    pruned = apply_width_plan(
        tiny_vit, _random_plan(tiny_vit.config, 1), provenance={"method": "test", "prune_ratio": 0.5}
    )
    pruned.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_p3b_vit.py", "modeling_p3b_vit.py"} <= files
    again = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(again) is P3BViTForImageClassification
    assert again.config.layer_intermediate_sizes == pruned.config.layer_intermediate_sizes
    assert again.config.pruning_method == "test"
    with torch.no_grad():
        assert torch.equal(again(pixel_values=images).logits, pruned(pixel_values=images).logits)


def test_deit_distilled_save_and_reload(tmp_path, tiny_deit_teacher, images):
    pruned = apply_width_plan(tiny_deit_teacher, _random_plan(tiny_deit_teacher.config, 2))
    pruned.save_pretrained(tmp_path)
    again = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(again).__name__ == "P3BDeiTForImageClassification" and again.config.distillation_head
    with torch.no_grad():
        a, b = again(pixel_values=images), pruned(pixel_values=images)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.distillation_logits, b.distillation_logits)


def test_full_width_config_loads_stock_checkpoint(tmp_path, tiny_vit, images):
    tiny_vit.save_pretrained(tmp_path)  # transformers 5 writes legacy key names
    cfg = P3BViTConfig.from_dense_config(tiny_vit.config)
    ours = P3BViTForImageClassification.from_pretrained(tmp_path, config=cfg)
    with torch.no_grad():
        assert torch.equal(ours(pixel_values=images).logits, tiny_vit(pixel_values=images).logits)


def test_loss_with_labels(tiny_vit, images):
    pruned = apply_width_plan(tiny_vit, WidthPlan.full(tiny_vit.config))
    labels = torch.tensor([0, 3, 6])
    out = pruned(pixel_values=images, labels=labels)
    ref = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize("seed", range(4))
def test_count_cost_params_are_exact(seed, tiny_vit, tiny_deit_teacher):
    for model in (tiny_vit, tiny_deit_teacher):
        assert count_cost(model)["params"] == _numel(model)
        pruned = apply_width_plan(model, _random_plan(model.config, seed))
        assert count_cost(pruned)["params"] == _numel(pruned)
        assert count_cost(pruned.config)["params"] == _numel(pruned)
        assert count_cost(pruned)["macs"] < count_cost(model)["macs"]


def test_count_cost_macs_by_hand():
    # one layer, no subsets: patch conv + qkv + attention + proj + mlp + head, biases counted as one MAC
    cfg = ViTConfig(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=8,
        patch_size=4,
        num_labels=3,
    )
    n = 4 + 1
    expect = (
        4 * 8 * (3 * 16 + 1) + n * 24 * 9 + 2 * 2 * n * n * 4 + n * 8 * 9 + n * 16 * 9 + n * 8 * 17 + 3 * 9
    )
    assert count_cost(cfg)["macs"] == expect


# README table: DeiT-T/S/B (ImageNet, 1000 classes, 224 px, patch 16)
README_TABLE = {
    "DeiT-T": (192, 3, 5_717_416, 1_257_806_824),
    "DeiT-S": (384, 6, 22_050_664, 4_607_128_552),
    "DeiT-B": (768, 12, 86_567_656, 17_580_319_720),
}


@pytest.mark.parametrize("name", README_TABLE)
def test_readme_table_dense(name):
    c, h, params, macs = README_TABLE[name]
    cost = count_cost(
        ViTConfig(hidden_size=c, num_attention_heads=h, intermediate_size=4 * c, num_labels=1000)
    )
    assert (cost["params"], cost["macs"]) == (params, macs)


def test_readme_table_vbp_deit_b_055():
    """VBP paper: DeiT-B at p=0.55 -> 55.40 M params, 11.44 GMACs (from configs alone)."""
    removed = int(0.55 * 12 * 3072)  # 20,275 neurons, spread over layers as a global ranking would
    sizes = [3072 - removed // 12 - (1 if i < removed % 12 else 0) for i in range(12)]
    cfg = P3BViTConfig.from_dense_config(ViTConfig(num_labels=1000), layer_intermediate_sizes=sizes)
    cost = count_cost(cfg)
    assert round(cost["params"] / 1e6, 2) == 55.40
    assert round(cost["macs"] / 1e9, 2) == 11.44


def test_deit_distilled_counts_two_tokens_and_heads():
    cfg = DeiTConfig(
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=96,
        image_size=32,
        patch_size=8,
        num_labels=7,
        architectures=["DeiTForImageClassificationWithTeacher"],
    )
    single = DeiTConfig(**{**cfg.to_dict(), "architectures": ["DeiTForImageClassification"]})
    assert count_cost(cfg)["params"] - count_cost(single)["params"] == 48 * 7 + 7


def test_cli_help_and_cost(tmp_path, tiny_vit, capsys):
    from p3b_hf.cli import main

    apply_width_plan(tiny_vit, _random_plan(tiny_vit.config, 3)).save_pretrained(tmp_path)
    assert main(["cost", "--model", str(tmp_path), "--json"]) == 0
    cost = p3b_hf.count_cost(AutoModelForImageClassification.from_pretrained(tmp_path))
    assert f'"params": {cost["params"]}' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    help_out = capsys.readouterr().out
    for cmd in ("prune", "finetune", "push", "bench", "export", "compare", "demo", "cost"):
        assert cmd in help_out
    # the real process: exit status 2 and one line, no traceback
    bad = subprocess.run(
        [sys.executable, "-m", "p3b_hf", "cost", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
