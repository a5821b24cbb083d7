"""The run layer on BEiT and DINOv2: image-processor driven data transforms, ``p3b-hf prune`` and ``cost``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_args import TINY_EPOCH_ARGS, prune_argv
from test_recipes import _tiny_data
from transformers import AutoModelForImageClassification, BeitConfig, Dinov2Config

from p3b_hf.cli import main
from p3b_hf.data import model_image_size
from p3b_hf.transforms import preprocess_from_processor

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = dict(num_labels=4, id2label=dict(enumerate("abcd")), label2id={c: i for i, c in enumerate("abcd")})


def test_transforms_follow_each_family_processor() -> None:
    """DINOv2: its processor's 224 crop of a 256 short-side resize, ImageNet mean/std (not config.image_size=518);
    BEiT: 224 at mean/std 0.5."""
    from transformers.models.beit.image_processing_pil_beit import BeitImageProcessorPil
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    dino_cfg = Dinov2Config(image_size=518, patch_size=14)
    dino_proc = BitImageProcessorPil(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    assert model_image_size(dino_cfg) is None
    pre = preprocess_from_processor(dino_proc, model_image_size(dino_cfg))
    assert (pre.image_size, pre.crop_pct, pre.mean, pre.std) == (
        224,
        224 / 256,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    beit_cfg = BeitConfig(image_size=224)
    pre = preprocess_from_processor(
        BeitImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3), model_image_size(beit_cfg)
    )
    assert (pre.image_size, pre.crop_pct, pre.mean, pre.std) == (224, 1.0, (0.5,) * 3, (0.5,) * 3)


def _dense_dir(root: Path, family: str) -> Path:
    from transformers import BeitForImageClassification, Dinov2ForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    common = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, **LABELS
    )
    if family == "clip":  # the nested stock CLIPConfig (what openai/clip-vit-base-patch16 loads as)
        from transformers import CLIPConfig, CLIPForImageClassification

        vision = {k: v for k, v in common.items() if k not in LABELS}
        model = CLIPForImageClassification(
            CLIPConfig(vision_config=dict(vision, intermediate_size=64), **LABELS)
        )
    elif family == "siglip":  # the nested stock SiglipConfig (what google/siglip2-base-patch16-224 loads as)
        from transformers import SiglipConfig, SiglipForImageClassification

        vision = {k: v for k, v in common.items() if k not in LABELS}
        model = SiglipForImageClassification(
            SiglipConfig(
                vision_config=dict(vision, intermediate_size=64), text_config={"vocab_size": 49408}, **LABELS
            )
        )
    elif family == "beit":
        model = BeitForImageClassification(
            BeitConfig(intermediate_size=64, use_relative_position_bias=True, **common)
        )
    elif family == "dinov2_with_registers":
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

        cfg = Dinov2WithRegistersConfig(mlp_ratio=2, num_register_tokens=2, **common)
        model = Dinov2WithRegistersForImageClassification(cfg)
    elif family == "ijepa":
        from transformers import IJepaConfig, IJepaForImageClassification

        model = IJepaForImageClassification(IJepaConfig(intermediate_size=64, **common))
    elif family == "dinov2_swiglu":  # DINOv2-giant's SwiGLU MLP (gate / up / down, 88 hidden units)
        model = Dinov2ForImageClassification(Dinov2Config(mlp_ratio=4, use_swiglu_ffn=True, **common))
    else:
        model = Dinov2ForImageClassification(Dinov2Config(mlp_ratio=2, **common))
    model.save_pretrained(root / family)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / family)
    return root / family


@pytest.mark.parametrize(
    "family, method",
    [
        ("beit", ["p3b", "--update-every", "1", "--bpi-every", "1"]),
        ("dinov2", ["global", "--importance", "taylor", "--taylor-batches", "1"]),
        ("dinov2_with_registers", ["p3b", "--update-every", "1", "--bpi-every", "1"]),
        ("ijepa", ["p3b", "--update-every", "1", "--bpi-every", "1"]),  # BPI reads the patch mean (no CLS)
        ("clip", ["p3b", "--update-every", "1", "--bpi-every", "1"]),
        ("siglip", ["p3b", "--update-every", "1", "--bpi-every", "1"]),  # no CLS, MAP head dropped
        ("dinov2_swiglu", ["p3b", "--update-every", "1", "--bpi-every", "1"]),  # gates mask act(gate) * up
    ],
)
def test_prune_cli_on_the_new_families(family: str, method: list[str], tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    dense = _dense_dir(tmp_path, family)
    out = tmp_path / "out"
    code = main(prune_argv(method, dense, data, out, "--prune-ratio", "0.5", *TINY_EPOCH_ARGS))
    assert code == 0
    report = json.loads((out / "pruning_report.json").read_text())
    model = AutoModelForImageClassification.from_pretrained(out)
    cls = {
        "beit": "Beit",
        "dinov2": "Dinov2",
        "dinov2_with_registers": "Dinov2WithRegisters",
        "ijepa": "IJepa",
        "clip": "CLIP",
        "siglip": "Siglip",
        "dinov2_swiglu": "Dinov2",
    }[family]
    assert type(model).__name__ == f"P3B{cls}ForImageClassification"
    n = sum(p.numel() for p in model.parameters())
    assert report["pruned"]["params"] == n
    assert abs(1 - n / report["dense"]["params"] - 0.5) < 0.05
    assert main(["cost", "--model", str(out)]) == 0


def test_transfer_recipes_for_dinov2_and_beit(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_recipes import RECIPES, _parsed, run

    files = sorted((RECIPES / "transfer").glob("*.yaml"))
    assert [p.stem for p in files] == [
        "beit_base_cifar100_p50",
        "beit_base_cifar100_p75",
        "dinov2_registers_small_cifar100_p50",
        "dinov2_registers_small_cifar100_p75",
        "dinov2_small_cifar100_p50",
        "dinov2_small_cifar100_p75",
        "siglip2_base_cifar100_p50",
        "siglip2_base_cifar100_p75",
    ]
    for path in files:
        recipe = run.load_recipe(path)
        prune, ft = _parsed(recipe, "prune", 4, monkeypatch), _parsed(recipe, "finetune", 4, monkeypatch)
        assert prune.method == "p3b" and prune.dataset == "cifar100" and not prune.reference
        assert prune.model == (
            "google/siglip2-base-patch16-224"
            if "siglip2" in path.stem
            else "facebook/dinov2-with-registers-small"
            if "registers" in path.stem
            else "facebook/dinov2-small"
            if "dinov2" in path.stem
            else "microsoft/beit-base-patch16-224"
        )
        assert prune.prune_ratio == int(path.stem[-2:]) / 100 and prune.batch_size * 4 == 512
        assert (prune.lr, ft.lr, prune.epochs, ft.epochs) == (
            1e-4,
            1e-4,
            50,
            300,
        ) and ft.model == prune.output_dir
        assert "fast, clean P3B" in path.read_text()


def test_push_uploads_the_family_code_files(tmp_path: Path, tiny_dinov2, tiny_beit) -> None:  # noqa: ANN001
    from fake_hub import HubStore, RecordingHfApi, snapshot_bytes

    from p3b_hf import WidthPlan, apply_width_plan
    from p3b_hf.hub import push_pruned

    for name, model in (("dinov2", tiny_dinov2), ("beit", tiny_beit)):
        plan = WidthPlan.full(model.config)
        plan.layers[0].mlp = list(range(10))
        pruned = apply_width_plan(model, plan)
        d = tmp_path / name
        pruned.save_pretrained(d)
        store = HubStore(tmp_path / f"hub_{name}")
        result = push_pruned(d, f"me/{name}", api=RecordingHfApi(store))
        assert {f"configuration_p3b_{name}.py", f"modeling_p3b_{name}.py", "model.safetensors"} <= set(
            result.files
        )
        cfg = json.loads(snapshot_bytes(store, f"me/{name}")["config.json"])
        assert (
            cfg["auto_map"]["AutoModel"]
            == f"modeling_p3b_{name}.P3B{'Dinov2' if name == 'dinov2' else 'Beit'}Model"
        )


@pytest.mark.parametrize("family", ["vit", "beit", "dinov2", "ijepa"])
def test_demo_source_model_of_each_family(family: str) -> None:
    """``p3b-hf demo --family``: the source model has the spec's widths in the chosen family (and prunes)."""
    from p3b_hf import WidthPlan, apply_width_plan, locate
    from p3b_hf.demo_data import SourceModelSpec, build_source_model

    spec = SourceModelSpec(family=family)
    model = build_source_model(spec, list("abc"))
    mods = locate(model)
    assert (mods.family, mods.hidden_size, mods.num_layers, mods.intermediate_size) == (
        family,
        spec.hidden_size,
        spec.num_layers,
        spec.mlp_dim,
    )
    assert model.config.num_labels == 3
    pruned = apply_width_plan(model, WidthPlan.full(model.config))
    x = torch.randn(2, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        assert torch.equal(pruned.eval()(pixel_values=x).logits, model.eval()(pixel_values=x).logits)
