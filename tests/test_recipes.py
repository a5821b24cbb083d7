"""Recipes: every YAML builds a valid command line for the real CLIs with the paper's settings; the smoke recipe
runs end to end (P3B prune -> fine-tune -> push) in-process; and a 2-process gloo ``accelerate launch`` ends
with the same model on both ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from fake_hub import HubStore, RecordingHfApi, save_pruned_dir, snapshot_bytes

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
PAPER = sorted(p for p in (RECIPES / "p3b").glob("*.yaml") if not p.stem.endswith("_reference"))


def _runner():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("p3b_recipes_run", RECIPES / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _runner()


def _parsed(recipe: dict, stage: str, world_size: int, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    """The stage's typed job as one flat namespace of its options (unknown/mistyped options raise)."""
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    variables = run.resolve_vars(recipe.get("vars") or {})
    _, job = run.stage_job(recipe["stages"][stage], variables, stage)
    from p3b_hf.options import cli_fields

    flat: dict = {}
    for name in ("prune", "finetune", "compare", "data", "train", "output", "kd", "method_options"):
        part = getattr(job, name, None)
        for one in part.values() if isinstance(part, dict) else [part]:  # compare: every method's options
            if one is not None:
                flat.update({f.name: getattr(one, f.name) for f in cli_fields(type(one))})
    return SimpleNamespace(**flat)


def test_every_recipe_builds_valid_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    files = [p for p in RECIPES.rglob("*.yaml") if "accelerate" not in p.parts and "_base" not in p.parts]
    assert len(PAPER) == 12 and len(files) >= 31
    for path in files:
        recipe = run.load_recipe(path)
        assert recipe["stages"], path
        for stage in recipe["stages"]:
            args = _parsed(recipe, stage, 4, monkeypatch)  # an unknown/mistyped option raises
            assert "{" not in args.output_dir and "{" not in args.model, (path, stage)


def test_each_paper_recipe_says_which_p3b_and_has_a_reference_sibling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for path in PAPER:
        assert "fast, clean P3B" in path.read_text() and f"{path.stem}_reference.yaml" in path.read_text()
        fast = _parsed(run.load_recipe(path), "prune", 4, monkeypatch)
        ref = _parsed(run.load_recipe(path.with_name(path.stem + "_reference.yaml")), "prune", 4, monkeypatch)
        assert not fast.reference and ref.reference
        assert ref.output_dir != fast.output_dir and ref.output_dir.endswith("_reference/pruned")
        same = (
            "model",
            "dataset",
            "prune_ratio",
            "epochs",
            "lr",
            "update_every",
            "prune_start_epoch",
            "batch_size",
        )
        assert all(getattr(ref, k) == getattr(fast, k) for k in same), path


@pytest.mark.parametrize("world_size", [1, 4, 8])
def test_p3b_recipes_follow_the_paper(world_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in PAPER:
        _, size, data, pr = path.stem.split("_")
        recipe = run.load_recipe(path)
        prune = _parsed(recipe, "prune", world_size, monkeypatch)
        ft = _parsed(recipe, "finetune", world_size, monkeypatch)
        assert prune.method == "p3b" and prune.model == f"facebook/deit-{size}-patch16-224"
        assert prune.prune_ratio == int(pr[1:]) / 100
        assert (prune.epochs, prune.lr, prune.weight_decay, prune.prune_start_epoch) == (50, 5e-4, 0.05, 10)
        assert (prune.prune_sparse_epoch, prune.prune_finalize_epoch) == (25, 50)
        assert prune.update_every == {"cifar100": 50, "ifood": 50, "inat19": 250}[data]
        assert prune.batch_size * world_size == 512  # README: 4 GPUs x 64 x grad-accum 2
        assert (prune.mixup, prune.cutmix, prune.label_smoothing, prune.augment) == (0.8, 1.0, 0.1, "deit")
        assert ft.model == prune.output_dir and ft.dataset == prune.dataset
        assert ft.batch_size * world_size * ft.grad_accum_steps == 512  # README: 4 GPUs x 128
        assert (ft.epochs, ft.lr, ft.min_lr, ft.warmup_epochs, ft.weight_decay) == (300, 5e-4, 1e-5, 0, 0.05)
        assert ("cifar100" == prune.dataset) == (data == "cifar100")


def test_precision_device_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = run.apply_overrides(
        run.load_recipe(PAPER[0]),
        ["prune.epochs=3", "vars.dataset=/data/x", "stages.finetune.args.bf16=true"],
    )
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    prune = _parsed(recipe, "prune", 2, monkeypatch)
    ft = _parsed(recipe, "finetune", 2, monkeypatch)
    assert prune.epochs == 3 and prune.dataset == "/data/x" and prune.fp16 and not prune.bf16
    assert prune.device == "cpu" and ft.bf16 and not ft.fp16  # a stage's own precision wins
    with pytest.raises(SystemExit, match="cycle"):
        run.resolve_vars({"a": "{b}", "b": "{a}"})
    with pytest.raises(SystemExit, match="not divisible"):
        _parsed(run.load_recipe(PAPER[0]), "prune", 3, monkeypatch)


def test_accelerate_configs() -> None:
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (RECIPES / "accelerate").glob("*.yaml")}
    assert {
        "1gpu_bf16",
        "1gpu_fp16",
        "2gpu_bf16",
        "4gpu_bf16",
        "4gpu_fp16",
        "8gpu_bf16",
        "cpu_2proc_gloo",
    } <= set(configs)
    for name, cfg in configs.items():
        if name.startswith(("1gpu", "2gpu", "4gpu", "8gpu")):
            n, prec = int(name[0]), name.split("_")[1]
            assert cfg["num_processes"] == n and cfg["mixed_precision"] == prec
            assert cfg["distributed_type"] == ("NO" if n == 1 else "MULTI_GPU")
    assert (
        configs["cpu_2proc_gloo"]["num_processes"] == 2
        and configs["cpu_2proc_gloo"]["mixed_precision"] == "no"
    )


# ------------------------------------------------------------------------------------------- real runs
def _tiny_data(root: Path) -> Path:
    """64 tiny CIFAR-like images (img / fine_label), 4 classes whose brightness differs, saved to disk."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [
        Image.fromarray((rng.random((32, 32, 3)) * 60 + (i % 4) * 50).astype(np.uint8)) for i in range(64)
    ]
    labels = [i % 4 for i in range(64)]
    feats = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=list("abcd"))}
    )
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"img": imgs[:48], "fine_label": labels[:48]}, features=feats),
        test=datasets.Dataset.from_dict({"img": imgs[48:], "fine_label": labels[48:]}, features=feats),
    )
    dd.save_to_disk(root / "data")
    return root / "data"


def _tiny_dense(root: Path) -> tuple[Path, torch.nn.Module]:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=4,
        id2label=dict(enumerate("abcd")),
        label2id={c: i for i, c in enumerate("abcd")},
    )
    model = ViTForImageClassification(cfg).eval()
    model.save_pretrained(root / "dense")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / "dense")
    return root / "dense", model


def test_recipe_finetune_with_kd_then_push_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's fine-tune stage on a pruned dir (with a KD teacher) followed by ``push_to_hub: true``."""
    import p3b_hf.hub

    data = _tiny_data(tmp_path)
    dense_dir, dense = _tiny_dense(tmp_path)
    out = tmp_path / "run"
    save_pruned_dir(dense, out / "pruned", accuracy=0.25)
    store = HubStore(tmp_path / "hub")
    monkeypatch.setattr(p3b_hf.hub, "HfApi", lambda: RecordingHfApi(store))
    for k in ("WORLD_SIZE", "RANK", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(k, raising=False)
    rc = run.main(
        [
            str(RECIPES / "smoke/p3b_tiny_cpu.yaml"),
            "--stages",
            "finetune",
            "--set",
            f"vars.model={dense_dir}",
            "--set",
            f"vars.dataset={data}",
            "--set",
            f"vars.output_root={out}",
            "--set",
            "push_to_hub=true",
            "--set",
            "hub_repo_id=me/tiny-p3b",
            "--set",
            f"finetune.teacher={dense_dir}",
            "--fingerprint-dir",
            str(tmp_path / "fp"),
        ]
    )
    assert rc == 0
    pruned_report = json.loads((out / "pruned/pruning_report.json").read_text())
    final = json.loads((out / "finetuned/pruning_report.json").read_text())
    assert final["finetune"]["epochs"] == 1 and final["finetune"]["source_model"] == "pruned"  # names only
    assert final["finetune"]["teacher"] == dense_dir.name and final["finetune"]["kd"]["alpha"] == 0.5
    assert final["widths"] == pruned_report["widths"] and final["eval"] == pruned_report["eval"]
    assert json.loads((tmp_path / "fp/finetune.rank0.json").read_text())["widths"] == pruned_report["widths"]
    hub = snapshot_bytes(store, "me/tiny-p3b")
    assert hub["model.safetensors"] == (out / "finetuned/model.safetensors").read_bytes()
    assert hub["plots/widths.png"] == (out / "pruned/plots/widths.png").read_bytes()
    card = hub["README.md"].decode()
    acc = final["finetune"]["eval"]["accuracy"]
    assert f"| top-1 accuracy, after fine-tuning (1.0 epochs, KD) | {100 * acc:.2f} % |" in card
    assert "| top-1 accuracy, right after pruning | 25.00 % |" in card and "| method | p3b |" in card


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_recipe_exits_with_one_line(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """SIGTERM during a stage (a real signal to this process) ends the recipe like ``p3b-hf``: one line, exit
    143, the previous SIGTERM handler restored; Ctrl-C: exit 130 (was: a traceback)."""
    import signal

    import p3b_hf.runner

    def stopped(job):  # noqa: ANN001, ANN202 -- stands in for a stage that is running when the signal comes
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(p3b_hf.runner, "prune", stopped)
    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)

    def unhandled(signum, frame):  # noqa: ANN001, ANN202 -- what runs if the recipe runner installs nothing
        raise AssertionError("the recipe runner did not handle SIGTERM")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        rc = run.main(
            [
                str(RECIPES / "smoke/p3b_tiny_cpu.yaml"),
                "--stages",
                "prune",
                "--set",
                f"vars.output_root={tmp_path / 'run'}",
            ]
        )
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored after the run
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert rc == (143 if how == "SIGTERM" else 130)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("stopped by SIGTERM" if how == "SIGTERM" else "interrupted (SIGINT)") in err


def test_finetune_rejects_bad_input(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    """Errors name the problem and the fix (conflicting precisions; a model of other labels gets a new head:
    test_reliability.py::test_prune_and_finetune_replace_a_head_of_other_labels_alike)."""
    import argparse

    from p3b_hf.commands import finetune
    from p3b_hf.errors import P3BError

    data = _tiny_data(tmp_path)
    tiny_vit.save_pretrained(tmp_path / "seven_labels")  # 7 labels, the data set has 4
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    base = ["--dataset", str(data), "--output-dir", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu"]
    from p3b_hf.runner import finetune as run_finetune

    with pytest.raises(P3BError, match="at most one of --bf16 / --fp16"):
        run_finetune(
            finetune.job_from_args(
                parser.parse_args(["--model", str(tmp_path / "seven_labels"), *base, "--bf16", "--fp16"])
            )
        )
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_p3b_recipe_ranks_agree(tmp_path: Path) -> None:
    """``accelerate launch`` of the P3B recipe chain (P3B prune -> fine-tune) on 2 CPU processes (gloo DDP):
    one complete pruned dir, no leftovers of the other rank, and both ranks end with bit-identical weights,
    which are the ones saved."""
    from p3b_hf.loading import load_model
    from p3b_hf.report import layer_widths, model_fingerprint

    data = _tiny_data(tmp_path)
    dense_dir, _ = _tiny_dense(tmp_path)
    out = tmp_path / "run"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    cmd = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(RECIPES / "accelerate/cpu_2proc_gloo.yaml"),
        "--main_process_port",
        str(_free_port()),
        str(RECIPES / "run.py"),
        str(RECIPES / "smoke/p3b_tiny_cpu.yaml"),
        "--set",
        f"vars.model={dense_dir}",
        "--set",
        f"vars.dataset={data}",
        "--set",
        f"vars.output_root={out}",
        "--fingerprint-dir",
        str(tmp_path / "fp"),
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "[rank 0/2] recipe" in proc.stdout and "[rank 1/2] recipe" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["finetuned", "pruned"]  # no staging/work/old dirs left
    report = json.loads((out / "pruned/pruning_report.json").read_text())
    assert report["method"] == "p3b" and 0.4 < report["achieved_param_reduction"] < 0.6
    pruned = load_model(str(out / "pruned"))
    assert report["widths"] == layer_widths(pruned)
    fps = [json.loads((tmp_path / f"fp/finetune.rank{r}.json").read_text()) for r in (0, 1)]
    assert fps[0]["widths"] == fps[1]["widths"] == layer_widths(pruned)
    assert fps[0]["sha256"] == fps[1]["sha256"]
    saved = load_model(str(out / "finetuned"))
    assert model_fingerprint(saved) == fps[0]  # the saved model is the one both ranks hold
    assert model_fingerprint(saved)["sha256"] != model_fingerprint(pruned)["sha256"]  # and it was trained
    final = json.loads((out / "finetuned/pruning_report.json").read_text())
    assert final["finetune"]["world_size"] == 2 and final["finetune"]["grad_accum_steps"] == 1
