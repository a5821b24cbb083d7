"""End-to-end P3B runs on CPU with tiny synthetic data: ratio, save/reload, resume, variants, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from p3b_tiny_run import synthetic_dataset, tiny_model, training_args
from transformers import AutoModelForImageClassification, TrainerCallback

import p3b_hf  # noqa: F401  (registers the pruned classes)
from p3b_hf.methods.p3b.config import parse_gate_scales
from p3b_hf.methods.p3b.state import STATE_JSON, STATE_TENSORS
from p3b_hf.options import add_options, options_from_namespace
from p3b_hf.trainer import P3BConfig, P3BTrainer, PruningCallback

pytestmark = pytest.mark.usefixtures("one_thread")

# BPI every 3rd micro-batch: the fast default period (4) would leave some 3-step windows without ΔΨ
PHASES = dict(prune_start_epoch=1, prune_sparse_epoch=4, prune_finalize_epoch=8, update_every=3, bpi_every=3)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("p3b_"))


def _widths(trainer: P3BTrainer) -> list[dict]:
    plan = trainer.pruner.plan
    return [plan.kept(i) | {"idx": plan.layers[i].__dict__} for i in range(plan.num_layers)]


@pytest.fixture(scope="module")
def data():
    ds = synthetic_dataset(192)
    return ds, ds.select(range(64))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("p3b_full")
    model = tiny_model("vit")
    dense = _params(model)
    trainer = P3BTrainer(
        model=model,
        args=training_args(str(out)),
        train_dataset=data[0],
        eval_dataset=data[1],
        p3b=P3BConfig(prune_ratio=0.5, **PHASES),
    )
    trainer.train()
    return trainer, model, dense, out


def test_quick_start_reaches_ratio_and_saves_reloadable_model(full_run, data):
    trainer, model, dense, out = full_run
    pruned = trainer.pruned_model
    n_pruned = sum(p.numel() for p in pruned.parameters())
    assert abs((1 - n_pruned / dense) - 0.5) <= 0.01
    hist = trainer.pruning.history
    assert hist["schedule"] == {
        "start": 6,
        "sparse": 24,
        "finalize": 48,
        "update_every": 3,
        "tau_max": 0.1,
        "tau_min": 0.0,
    }
    steps = [u["step"] for u in hist["updates"]]
    assert steps == list(range(9, 49, 3))  # every U steps in (S0, S2]: the last update falls on S2
    assert [u["phase"] for u in hist["updates"]][-1] == "sharpening"
    keeps = [u["model_keep"] for u in hist["updates"]]
    assert keeps[0] > 0.9 and abs(keeps[-1] - 0.5) < 0.01  # ramped, then at the target
    assert all(len(u["keep_achieved"]) == 4 and len(u["dpsi_cls"]) == 4 for u in hist["updates"])
    fin = hist["finalize"]["finalize"]
    assert fin["pruned"]["accuracy"] == pytest.approx(fin["hard_masked"]["accuracy"])
    # the saved model reloads with plain transformers and equals the hard-masked model at finalize
    saved = Path(fin["saved_to"])
    assert (saved / "preprocessor_config.json").exists() or trainer.processing_class is None
    assert (saved / "width_plan.json").exists()
    reloaded = AutoModelForImageClassification.from_pretrained(saved).eval()
    x = data[1][:16]["pixel_values"]
    model.eval()
    assert trainer.pruner.gates.kept_widths() and all(
        set(m.unique().tolist()) <= {0.0, 1.0} for _, _, m in trainer.pruner.gates.named_masks()
    )
    with torch.no_grad():
        assert torch.allclose(reloaded(pixel_values=x).logits, model(pixel_values=x).logits, atol=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == n_pruned


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_mid_sparsify_gives_identical_widths(full_run, data, tmp_path):
    ref_trainer = full_run[0]
    args = training_args(str(tmp_path), save_strategy="steps", save_steps=15)
    first = P3BTrainer(
        model=tiny_model("vit"),
        args=args,
        train_dataset=data[0],
        eval_dataset=data[1],
        p3b=P3BConfig(prune_ratio=0.5, save_dir=None, **PHASES),
        callbacks=[_StopAt(15)],
    )
    first.train()
    ckpt = tmp_path / "checkpoint-15"
    assert (ckpt / STATE_TENSORS).exists() and (ckpt / STATE_JSON).exists()
    assert json.loads((ckpt / STATE_JSON).read_text())["num_updates"] == 3  # updates at 9, 12, 15
    # checkpoints hold a plain HF model: no P3B keys in model.safetensors
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("p3b") for k in f.keys())
    resumed = P3BTrainer(
        model=tiny_model("vit", seed=123),
        args=args,
        train_dataset=data[0],
        eval_dataset=data[1],
        p3b=P3BConfig(prune_ratio=0.5, save_dir=None, **PHASES),
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert _widths(resumed) == _widths(ref_trainer)
    assert [u["keep_achieved"] for u in resumed.pruning.history["updates"]] == [
        u["keep_achieved"] for u in ref_trainer.pruning.history["updates"]
    ]


def test_distilled_deit_with_teacher_and_reference_quirks(data, tmp_path):
    """P3B-Dist on a distilled DeiT (2 special tokens, 2 heads) with every reference quirk switched on."""
    teacher = tiny_model("vit", seed=5)
    model = tiny_model("deit")
    dense = _params(model)
    cfg = P3BConfig(
        prune_ratio=0.4,
        reference=True,
        prune_start_epoch=0.5,
        prune_sparse_epoch=1.5,
        prune_finalize_epoch=3,
        update_every=2,
        save_dir=None,
    )
    args = training_args(
        str(tmp_path), num_train_epochs=3, per_device_train_batch_size=16, gradient_accumulation_steps=2
    )
    trainer = P3BTrainer(
        model=model, args=args, train_dataset=data[0], eval_dataset=data[1], p3b=cfg, teacher=teacher
    )
    assert trainer.p3b.train_masks and trainer.p3b.layernorm_mode == "subset_stats"
    groups = {g["p3b_group"]: g for g in trainer.create_optimizer().param_groups}
    assert set(groups) == {"decay", "no_decay", "bpi_decay", "bpi_no_decay", "masks"}
    assert groups["bpi_decay"]["lr"] == 5e-4 and groups["masks"]["weight_decay"] == 0.0
    trainer.train()
    assert trainer.pruner.bpi.special_tokens == 2
    pruned = trainer.pruned_model
    assert pruned.config.layernorm_mode == "subset_stats"
    assert abs((1 - sum(p.numel() for p in pruned.parameters()) / dense) - 0.4) <= 0.02
    updates = trainer.pruning.history["updates"]
    assert updates[-1]["phase"] == "finalize_reselect"
    # ΔΨ is counted per micro-batch, Taylor once per optimizer step (2 micro-batches each)
    assert all(u["window_forwards"] == 2 * u["window_steps"] > 0 for u in updates[:-1])


def test_handcrafted_and_frozen_variants(data, tmp_path):
    keep = [0.5, 0.25, 1.0, 0.5]
    t = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path / "h"), num_train_epochs=2),
        train_dataset=data[0],
        p3b=P3BConfig(
            handcrafted_keep=keep,
            prune_start_epoch=0.5,
            prune_sparse_epoch=1,
            prune_finalize_epoch=2,
            update_every=2,
            save_dir=None,
        ),
    )
    assert t.pruner.bpi is None
    t.train()
    achieved = t.pruning.history["updates"][-1]["keep_achieved"]
    assert achieved == pytest.approx([k * x for k, x in zip(keep, [1, 1, 1, 1])], abs=0.02)
    model = tiny_model("vit")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    f = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path / "f"), num_train_epochs=2),
        train_dataset=data[0],
        p3b=P3BConfig(
            frozen=True,
            prune_start_epoch=0.5,
            prune_sparse_epoch=1,
            prune_finalize_epoch=2,
            update_every=2,
            bpi_every=2,
            save_dir=None,
        ),
    )
    f.train()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if not n.startswith("p3b"))
    updates = f.pruning.history["updates"]
    assert updates and all(u["dpsi_cls"] is not None for u in updates)
    assert sum(p.numel() for p in f.pruned_model.parameters()) == _params(model)  # nothing pruned


def test_explicit_callback_and_cli_flags(tmp_path, capsys):
    cb = PruningCallback(P3BConfig(prune_ratio=0.3))
    t = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path)),
        callbacks=[cb],
        train_dataset=synthetic_dataset(32),
    )
    assert t.pruning is cb and hasattr(t.model, "p3b_gates")
    from transformers import Trainer

    plain = Trainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path / "plain"), max_steps=1),
        train_dataset=synthetic_dataset(32),
        callbacks=[PruningCallback(P3BConfig())],
    )
    with pytest.raises(p3b_hf.P3BError, match="P3BTrainer"):
        plain.train()
    parser = argparse.ArgumentParser()
    add_options(parser, P3BConfig)
    args = parser.parse_args(
        [
            "--gate-scales",
            "mlp_hid:0.5",
            "--mask-lr",
            "1e-4",
            "--update-every",
            "7",
            "--layernorm-mode",
            "subset_stats",
        ]
    )
    cfg = options_from_namespace(P3BConfig, args, prune_ratio=0.5).resolved()
    assert cfg.gate_scales["mlp_hid"] == 0.5 and cfg.gate_scales["attn_out"] == 1.5
    assert cfg.train_masks and cfg.mask_lr == 1e-4 and cfg.update_every == 7
    assert cfg.layernorm_mode == "subset_stats" and not cfg.finalize_reselect
    with pytest.raises(p3b_hf.P3BError, match="gate"):
        parse_gate_scales("bogus:1")
    with pytest.raises(SystemExit):  # argparse prints the same message as one line, exit code 2
        parser.parse_args(["--gate-scales", "bogus:1"])
    assert "'gate:value'" in capsys.readouterr().err


def test_run_cli_through_the_prune_parser(tmp_path):
    """``p3b-hf prune --method p3b`` flags (all methods registered: no clashes) -> the method's run -> the
    runner's finish (pad, report, write)."""
    import copy

    from p3b_hf.checkpoints import make_staging_dir
    from p3b_hf.commands.prune import add_arguments, job_from_args
    from p3b_hf.data import make_collator
    from p3b_hf.methods.base import RunContext
    from p3b_hf.methods.p3b import method as p3b
    from p3b_hf.runner import finish_prune

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    job = job_from_args(
        parser.parse_args(
            [
                "--model",
                "x",
                "--dataset",
                "y",
                "--output-dir",
                str(tmp_path / "out"),
                "--device",
                "cpu",
                "--batch-size",
                "16",
                "--epochs",
                "2",
                "--prune-ratio",
                "0.4",
                "--prune-start-epoch",
                "0.5",
                "--prune-sparse-epoch",
                "1",
                "--update-every",
                "1",
                "--lr",
                "1e-3",
                "--bpi-shadow",
                "0.5:1",
            ]
        )
    )
    assert isinstance(job.method_options, P3BConfig) and job.method_options.update_every == 1
    ds = synthetic_dataset(64)
    items = [{"pixel_values": ds[i]["pixel_values"], "labels": int(ds[i]["labels"])} for i in range(64)]
    model = tiny_model("vit")
    dense = copy.deepcopy(model)
    staging = make_staging_dir(tmp_path / "out")
    ctx = RunContext(
        model=model,
        image_processor=None,
        data=None,
        train_ds=items[:48],
        eval_ds=items[48:],
        collator=make_collator(4, mixup=0.8, cutmix=1.0, label_smoothing=0.1),
        train=job.train,
        work_dir=tmp_path / "work",
        artifacts_dir=staging,
        prune_ratio=job.prune.prune_ratio,
    )
    result = p3b.run(ctx, job.method_options)
    h = result.history
    assert h["schedule"]["start"] == 2 and h["schedule"]["finalize"] == 6 and len(h["updates"]) == 4  # 3..6
    assert set(h["plots"]) == {
        "p3b_dpsi.png",
        "p3b_keep_history.png",
        "p3b_keep_final.png",
        "p3b_shadows.png",
    }
    assert all((staging / "plots" / p).stat().st_size > 0 for p in h["plots"])
    assert all(
        set(u["shadows"]) == {"0.5:1"} and len(u["shadows"]["0.5:1"]["keep_target"]) == 4
        for u in h["updates"]
    )
    assert set(result.eval_metrics) >= {"accuracy", "loss"}
    assert not hasattr(model, "p3b_gates") and not hasattr(model, "p3b_shadows")  # a clean HF model again
    report = finish_prune(job, ctx, result, dense, staging).report
    assert abs(report["achieved_param_reduction"] - 0.4) <= 0.01 and report["plan_meta"]["method"] == "p3b"
    saved = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert sum(p.numel() for p in saved.parameters()) == sum(
        p.numel() for p in result.pruned_model.parameters()
    )
    assert abs(1 - sum(p.numel() for p in saved.parameters()) / _params(dense) - 0.4) <= 0.01
    assert json.loads((tmp_path / "out" / "pruning_report.json").read_text())["history"]["updates"]


def test_logged_task_loss_is_the_ce_of_the_model_on_that_batch(tmp_path):
    """``loss`` is what P3B optimises (task CE + 4·2L BPI CEs); ``task_loss`` is the CE alone and ``bpi_loss`` the
    rest. One step on one batch (the whole data set, so the loader's order cannot change the batch mean)."""
    import copy

    ds = synthetic_dataset(16)
    model = tiny_model("vit")
    dense = copy.deepcopy(model).eval()
    seen: list[dict] = []

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN003
            if "loss" in (logs or {}):
                seen.append(dict(logs))

    trainer = P3BTrainer(
        model=model,
        args=training_args(str(tmp_path), max_steps=1, per_device_train_batch_size=16, logging_steps=1),
        train_dataset=ds,
        p3b=P3BConfig(
            prune_ratio=0.5,
            prune_start_epoch=0,
            prune_sparse_epoch=4,
            prune_finalize_epoch=8,  # after the one step: no update, a plain BPI step
            update_every=2,
            save_dir=None,
            evaluate_pruned=False,
        ),
        callbacks=[Logs()],
    )
    trainer.train()
    with torch.no_grad():
        batch = ds[:]
        ce = torch.nn.functional.cross_entropy(
            dense(pixel_values=batch["pixel_values"]).logits, batch["labels"]
        )
    (log,) = seen
    assert log["task_loss"] == pytest.approx(float(ce), abs=2e-4)
    assert log["bpi_loss"] > 10 * log["task_loss"]  # 4·2L = 16 CEs of random heads, each about ln 4
    assert log["loss"] == pytest.approx(log["task_loss"] + log["bpi_loss"], abs=2e-3)
