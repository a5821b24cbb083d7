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


# ------------------------------------------------- the documented from_pretrained path checks itself (issue 25)
STRICT_FAMILIES = ["vit", "deit_distilled", "beit", "dinov2", "swin", "convnext"]


def _pruned_family_dir(
    family: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Path, torch.nn.Module]:
    """A pruned model of ``family`` saved as `p3b-hf prune` saves it (weights, config, code files)."""
    from fake_hub import nontrivial_plan

    if family in ("swin", "convnext"):
        from test_stage_families import _random_plan, tiny

        dense = tiny(family)
        pruned = apply_width_plan(dense, _random_plan(dense, 2))
    else:
        dense = request.getfixturevalue({"deit_distilled": "tiny_deit_teacher"}.get(family, f"tiny_{family}"))
        pruned = apply_width_plan(dense, nontrivial_plan(dense.config))
    d = tmp_path / family
    save_model_dir(pruned.eval(), d)
    return d, pruned


def _damaged(src: Path, dst: Path, drop: list[str] = (), widths: bool = False) -> Path:
    """A copy of ``src`` without the tensors ``drop``, or with the first MLP one unit wider in config.json."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    weights = load_file(src / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if k not in drop}, dst / "model.safetensors", {"format": "pt"}
    )
    if widths:
        cfg = json.loads((dst / "config.json").read_text())
        field = (
            "block_intermediate_sizes" if "block_intermediate_sizes" in cfg else "layer_intermediate_sizes"
        )
        sizes = cfg[field][0] if field == "block_intermediate_sizes" else cfg[field]
        sizes[0] += 1
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("family", STRICT_FAMILIES)
def test_documented_from_pretrained_refuses_what_does_not_fit(family, tmp_path, request, capfd):
    """README: ``import p3b_hf; AutoModelForImageClassification.from_pretrained(dir)``. A missing tensor, a
    missing head and a config wider than the tensors used to load with random weights (a log line) or end in
    transformers' RuntimeError after a load report; now one error names the tensors and the fix, raised from
    the safetensors header before transformers builds anything (no load report)."""
    import sys

    from transformers import AutoModel, AutoModelForImageClassification

    d, pruned = _pruned_family_dir(family, tmp_path, request)
    error = sys.modules[type(pruned).__module__].P3BCheckpointMismatchError
    assert issubclass(error, ValueError)
    keys = list(load_file(d / "model.safetensors"))
    prefix = f"{pruned.base_model_prefix}."
    head = [k for k in keys if not k.startswith(prefix)]
    body = next(k for k in keys if ".encoder." in k and k.endswith("weight") and "norm" not in k)
    assert head and body
    capfd.readouterr()
    no_tensor = _damaged(d, tmp_path / "no_tensor", drop=[body])
    with pytest.raises(error, match=rf"1 tensor\(s\) missing from the weights \({body}\).*re-save the model"):
        AutoModelForImageClassification.from_pretrained(no_tensor)
    with pytest.raises(error, match=rf"missing from the weights \({body.removeprefix(prefix)}\)"):
        AutoModel.from_pretrained(no_tensor)  # the backbone (feature extraction) path too
    no_head = _damaged(d, tmp_path / "no_head", drop=head)
    with pytest.raises(error, match=rf"{len(head)} tensor\(s\) missing.*pass ignore_mismatched_sizes=True"):
        AutoModelForImageClassification.from_pretrained(no_head)
    wider = _damaged(d, tmp_path / "wider", widths=True)
    first = {  # the first MLP's Linears, under the names on disk
        "swin": "swin.encoder.layers.0.blocks.0.intermediate.dense.weight",
        "convnext": "convnext.encoder.stages.0.layers.0.pwconv1.weight",
        "dinov2": "dinov2.encoder.layer.0.mlp.fc1.weight",
    }.get(family, f"{prefix}encoder.layer.0.intermediate.dense.weight")
    with pytest.raises(
        error, match=rf"tensor\(s\) whose shape is not the one the config implies \(.*{first}"
    ):
        AutoModelForImageClassification.from_pretrained(wider)
    assert "LOAD REPORT" not in capfd.readouterr().err  # refused before transformers loaded anything
    assert type(AutoModelForImageClassification.from_pretrained(d)) is type(pruned)  # the intact dir loads


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_a_new_head_on_purpose_is_allowed_but_nothing_else(family, tmp_path, request, images):
    """``ignore_mismatched_sizes=True`` (+ ``num_labels``) re-initialises the classifier only: the backbone
    still has to fit, and a missing backbone tensor is still refused."""
    import sys

    from transformers import AutoModelForImageClassification

    d, pruned = _pruned_family_dir(family, tmp_path, request)
    error = sys.modules[type(pruned).__module__].P3BCheckpointMismatchError
    prefix = f"{pruned.base_model_prefix}."
    model = AutoModelForImageClassification.from_pretrained(d, num_labels=3, ignore_mismatched_sizes=True)
    assert model(pixel_values=images).logits.shape == (3, 3)
    ours, theirs = model.state_dict(), pruned.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if k.startswith(prefix))
    keys = list(load_file(d / "model.safetensors"))
    no_head = _damaged(d, tmp_path / "no_head", drop=[k for k in keys if not k.startswith(prefix)])
    AutoModelForImageClassification.from_pretrained(no_head, ignore_mismatched_sizes=True)  # new head: fine
    body = next(k for k in keys if ".encoder." in k and k.endswith("weight") and "norm" not in k)
    no_tensor = _damaged(d, tmp_path / "no_tensor", drop=[body])
    with pytest.raises(error, match="missing from the weights"):
        AutoModelForImageClassification.from_pretrained(no_tensor, num_labels=3, ignore_mismatched_sizes=True)
    # the class itself with a config override: the header check is skipped, the same rule holds after loading
    with pytest.raises(error, match="missing from the weights"):
        type(pruned).from_pretrained(no_tensor, num_labels=3, ignore_mismatched_sizes=True)
    with pytest.raises(error, match="whose shape is not the one the config implies"):
        type(pruned).from_pretrained(_damaged(d, tmp_path / "wider", widths=True), output_hidden_states=False)


def test_package_loader_reports_the_model_check_as_checkpoint_error(saved, tmp_path, monkeypatch):
    """A Hub id is not validated up front by ``load_model``: the model class's own check is turned into
    the package's CheckpointError (one CLI line)."""
    import p3b_hf.loading

    monkeypatch.setattr(p3b_hf.loading, "validate_checkpoint", lambda *a, **k: None)
    body = "vit.encoder.layer.1.attention.attention.query.weight"
    with pytest.raises(CheckpointError, match=rf"missing from the weights \({body}\)"):
        load_model(str(_damaged(saved, tmp_path / "no_tensor", drop=[body])))
