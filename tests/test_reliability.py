"""Bad-input catalogue (loading and run outputs): one clear error naming problem and fix, nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from p3b_hf import CheckpointError, P3BError, UnsupportedModelError, WidthPlan, apply_width_plan
from p3b_hf.checkpoints import atomic_dir, save_model_dir
from p3b_hf.loading import load_model, validate_checkpoint
from p3b_hf.options import PruneOptions
from p3b_hf.runner import check_output_dir


@pytest.fixture
def saved(tmp_path, tiny_vit) -> Path:
    plan = WidthPlan.full(tiny_vit.config)
    plan.layers[0].mlp = list(range(40))
    plan.layers[1].attn_in = list(range(0, 48, 3))
    d = tmp_path / "model"
    save_model_dir(apply_width_plan(tiny_vit, plan), d, plan=plan)
    return d


def test_loads_and_validates(saved):
    model = load_model(str(saved))
    assert model.config.layer_intermediate_sizes[0] == 40
    validate_checkpoint(saved)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_file_instead_of_dir(saved):
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(str(saved / "model.safetensors"))


def test_config_widths_disagree_with_tensors(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["layer_intermediate_sizes"][0] = 50
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"intermediate.dense.weight: config implies \(50, 48\), file has \(40, 48\)"
    ):
        load_model(str(saved))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(saved, damage):
    f = saved / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(str(saved))


def test_pickle_weights_are_refused(saved):
    torch.save(load_file(saved / "model.safetensors"), saved / "pytorch_model.bin")
    os.remove(saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(str(saved))


def test_invalid_config_json(saved):
    (saved / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="config"):
        load_model(str(saved))


def test_non_vit_model_is_refused():
    from transformers import ResNetConfig, ResNetForImageClassification

    with pytest.raises(UnsupportedModelError, match="cannot prune a ResNetForImageClassification"):
        apply_width_plan(
            ResNetForImageClassification(ResNetConfig()),
            WidthPlan.full(
                ResNetConfig(hidden_size=8, num_attention_heads=1, intermediate_size=8, num_hidden_layers=1)
            ),
        )


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_impossible_ratio(ratio):
    with pytest.raises(P3BError, match="strictly between 0 and 1"):
        PruneOptions(model="m", prune_ratio=ratio).check()


def test_output_dir_with_another_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pruning_report.json").write_text("{}")
    with pytest.raises(P3BError, match="already holds a previous run.*--overwrite"):
        check_output_dir(out, overwrite=False)
    check_output_dir(out, overwrite=True)


def test_crash_mid_save_keeps_previous_model(saved, tiny_vit):
    before = sorted(p.name for p in saved.iterdir())
    digest = (saved / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError, match="disk full"), atomic_dir(saved) as staging:
        tiny_vit.save_pretrained(staging)
        raise RuntimeError("disk full")
    assert sorted(p.name for p in saved.iterdir()) == before
    assert (saved / "model.safetensors").read_bytes() == digest
    assert not [p for p in saved.parent.iterdir() if ".staging-" in p.name]


# ---------------------------------------------------------------------------------------- training-time inputs
def test_update_interval_longer_than_the_run():
    from p3b_hf.methods.p3b.schedule import Schedule

    with pytest.raises(P3BError, match="--update-every 50 is not shorter than the pruning window \\(44"):
        Schedule.from_epochs(10, start_epoch=0.6, sparse_epoch=2.5, finalize_epoch=5, update_every=50)
    assert Schedule.from_epochs(10, 0.6, 2.5, 5, update_every=20).num_updates() > 0


def test_teacher_with_another_label_set(tiny_vit):
    from transformers import ViTConfig, ViTForImageClassification

    from p3b_hf.training import check_teacher_labels

    other = ViTForImageClassification(
        ViTConfig(**{**tiny_vit.config.to_dict(), "num_labels": 5, "id2label": None, "label2id": None})
    )
    with pytest.raises(P3BError, match="teacher predicts 5 classes but the model 7"):
        check_teacher_labels(other, tiny_vit)
    renamed = ViTForImageClassification(
        ViTConfig(
            **{
                **tiny_vit.config.to_dict(),
                "id2label": {i: f"class{i}" for i in range(7)},
                "label2id": {f"class{i}": i for i in range(7)},
            }
        )
    )
    named = ViTForImageClassification(
        ViTConfig(
            **{
                **tiny_vit.config.to_dict(),
                "id2label": {i: f"kind{i}" for i in range(7)},
                "label2id": {f"kind{i}": i for i in range(7)},
            }
        )
    )
    with pytest.raises(
        P3BError, match="labels differ from the model's \\(class 0: teacher 'class0', model 'kind0'\\)"
    ):
        check_teacher_labels(renamed, named)
    check_teacher_labels(tiny_vit, tiny_vit)


def test_nan_loss_stops_the_run_with_a_clear_error(tmp_path, tiny_vit):
    import datasets
    from transformers import TrainingArguments

    from p3b_hf.training import FineTuneTrainer, NonFiniteLossError

    x = torch.randn(16, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")  # one poisoned image per batch of 16 -> every loss is NaN
    ds = datasets.Dataset.from_dict({"pixel_values": x.numpy(), "labels": [i % 7 for i in range(16)]})
    ds.set_format("torch")
    args = TrainingArguments(
        output_dir=str(tmp_path / "work"),
        per_device_train_batch_size=16,
        num_train_epochs=10,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = FineTuneTrainer(model=tiny_vit.train(), args=args, train_dataset=ds)
    with pytest.raises(NonFiniteLossError, match="NaN/inf for 3 steps in a row.*Lower the learning rate"):
        trainer.train()
    assert trainer.state.global_step == 2  # stopped on the third step, not after 10 epochs


# ---------------------------------------------------------------------------------------- unsupported models
def _tiny_unsupported(kind: str, root: Path) -> Path:
    """A tiny stock ResNet or DINOv2-with-registers classifier (built from a config) saved to ``root/kind``."""
    import transformers as tf

    if kind == "resnet":
        model = tf.ResNetForImageClassification(
            tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
        )
    else:
        model = tf.Dinov2WithRegistersForImageClassification(
            tf.Dinov2WithRegistersConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                mlp_ratio=2,
                image_size=16,
                patch_size=8,
                num_register_tokens=2,
                num_labels=3,
            )
        )
    model.save_pretrained(root / kind)
    tf.ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(root / kind)
    return root / kind


@pytest.mark.parametrize("kind", ["resnet", "dinov2_registers"])
def test_unsupported_model_is_one_clear_error_at_every_entry_point(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """prune, finetune, compare, cost, bench and export refuse a model of an unsupported family with the same
    UnsupportedModelError naming every supported class (generated from the family registries), exit 2, no
    traceback, nothing written."""
    from p3b_hf.cli import main
    from p3b_hf.models.families import FAMILIES, STAGE_FAMILIES

    model = str(_tiny_unsupported(kind, tmp_path / "models"))
    work = tmp_path / "work"
    work.mkdir()
    capsys.readouterr()  # the save's progress bar
    data = ["--dataset", str(tmp_path / "nowhere"), "--output-dir", str(work / "out")]
    commands = {
        "prune": ["prune", "--model", model, "--method", "vbp", *data],
        "finetune": ["finetune", "--model", model, *data],
        "compare": ["compare", "--model", model, "--methods", "vbp", *data],
        "cost": ["cost", "--model", model],
        "bench": ["bench", "--model", model],
        "export": ["export", "--model", model, "--output-dir", str(work / "onnx")],
    }
    cls = "ResNetForImageClassification" if kind == "resnet" else "Dinov2WithRegistersForImageClassification"
    supported = [c for f in (*FAMILIES.values(), *STAGE_FAMILIES.values()) for c in f.stock_classes]
    assert "SwinForImageClassification" in supported and "ConvNextForImageClassification" in supported
    for name, argv in commands.items():
        if name == "export":
            pytest.importorskip("onnxruntime")
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"p3b-hf {name}: error: p3b_hf cannot prune a {cls} (model_type "), err
        assert "Traceback" not in err and len(err.splitlines()) == 1
        for c in supported:
            assert c in err, (name, c)
        assert list(work.iterdir()) == [], name


# ---------------------------------------------------------------------------------------- --pad-to
@pytest.mark.parametrize("family", ["beit", "dinov2", "swin", "convnext"])
def test_pad_to_on_a_family_it_cannot_pad_is_refused_before_any_work(
    family: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--pad-to 8`` on BEiT / DINOv2 / Swin / ConvNeXt: refused (prune and compare) before any training,
    the output dir's parent holds nothing new afterwards (no ``.staging-*``, no ``.work``)."""
    from test_recipes import _tiny_data
    from test_stage_families import tiny
    from transformers import ViTImageProcessorPil

    from p3b_hf.cli import main
    from p3b_hf.runner import adapt_classifier

    model = request.getfixturevalue(f"tiny_{family}") if family in ("beit", "dinov2") else tiny(family)
    adapt_classifier(model, list("abcd"))  # the task's labels: VBP would start at once
    model.save_pretrained(tmp_path / "model")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "model")
    data = _tiny_data(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    common = ["--model", str(tmp_path / "model"), "--dataset", str(data), "--pad-to", "8", "--device", "cpu"]
    common += [
        "--prune-ratio",
        "0.2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
    ]
    capsys.readouterr()
    for argv in (
        ["prune", "--method", "vbp", "--output-dir", str(runs / "out"), *common],
        ["compare", "--methods", "vbp", "--output-dir", str(runs / "cmp"), *common],
    ):
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err
        assert f"p3b-hf {argv[0]}: error: --pad-to (pad_widths) supports ViT/DeiT models only" in err, err
        assert f"model_type '{family}'" in err
        assert sorted(p.name for p in runs.iterdir()) == [], argv[0]


# ---------------------------------------------------------------------------------------- labels differ
def test_prune_and_finetune_replace_a_head_of_other_labels_alike(
    tiny_vit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model whose labels differ from the data set's (7 vs 4): prune and finetune both give it a fresh head
    (no flag needed, ``--new-head`` changes nothing), each with one WARNING line naming 7 -> 4 labels, and
    record ``head_reinitialised`` in the report."""
    import logging

    from test_recipes import _tiny_data
    from transformers import ViTImageProcessorPil

    from p3b_hf.cli import main

    tiny_vit.save_pretrained(tmp_path / "seven")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "seven")
    data = _tiny_data(tmp_path)
    common = [
        "--model",
        str(tmp_path / "seven"),
        "--dataset",
        str(data),
        "--device",
        "cpu",
        "--batch-size",
        "8",
    ]
    common += [
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
        "--augment",
        "basic",
        "--mixup",
        "0",
        "--cutmix",
        "0",
    ]
    prune = ["prune", "--method", "p3b", "--prune-ratio", "0.3", "--epochs", "2", "--update-every", "1"]
    prune += ["--prune-start-epoch", "0.5", "--prune-sparse-epoch", "1", "--prune-finalize-epoch", "1.5"]
    runs = {
        "prune": [*prune, *common, "--output-dir", str(tmp_path / "pruned")],
        "finetune": ["finetune", *common, "--epochs", "1", "--output-dir", str(tmp_path / "tuned")],
    }
    for name, argv in runs.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="p3b_hf.runner"):
            assert main(argv) == 0, name
        lines = [r.getMessage() for r in caplog.records if "classifier head replaced" in r.getMessage()]
        assert len(lines) == 1 and "7 -> 4 labels" in lines[0], (name, lines)
        out = tmp_path / ("pruned" if name == "prune" else "tuned")
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["num_labels"] == 4 if "num_labels" in cfg else len(cfg["id2label"]) == 4
        assert cfg["id2label"] == {"0": "a", "1": "b", "2": "c", "3": "d"}
        report = json.loads((out / "pruning_report.json").read_text())
        section = report if name == "prune" else report["finetune"]
        assert section["head_reinitialised"] is True, name
