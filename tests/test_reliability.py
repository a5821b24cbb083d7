"""Bad-input catalogue (loading and run outputs): one clear error naming problem and fix, nothing half-written."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from p3b_hf import CheckpointError, P3BError, UnsupportedModelError, WidthPlan, apply_width_plan
from p3b_hf.checkpoints import atomic_dir, save_model_dir
from p3b_hf.loading import load_model, validate_checkpoint
from p3b_hf.options import PruneOptions, TrainOptions
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


# ---------------------------------------------------------------------------------------- runs and their output
def _prune_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prune",
        "--method",
        "p3b",
        "--model",
        str(root / "dense"),
        "--dataset",
        str(root / "data"),
        "--output-dir",
        str(out),
        "--prune-ratio",
        "0.3",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--max-train-samples",
        "16",
        "--prune-start-epoch",
        "0.5",
        "--prune-sparse-epoch",
        "1",
        "--prune-finalize-epoch",
        "2",
        "--update-every",
        "1",
        "--device",
        "cpu",
        "--augment",
        "basic",
        "--logging-steps",
        "100",
        *extra,
    ]


def _messages(capsys) -> list[str]:
    """The lines p3b-hf itself wrote to stderr (not the progress bars); there must be no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return re.findall(r"p3b-hf[ :].*", err.replace("\r", "\n"))


def _cli(argv: list[str]) -> int:
    from p3b_hf.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 2-step P3B run (1 step per epoch) that kept its checkpoints (checkpoint-1, checkpoint-2)."""
    from test_recipes import _tiny_data, _tiny_dense

    root = tmp_path_factory.mktemp("runs")
    _tiny_data(root)
    _tiny_dense(root)
    assert _cli(_prune_argv(root, root / "out", "--keep-checkpoints")) == 0
    return root


def _copy_work(root: Path, name: str) -> Path:
    import shutil

    out = root / name
    shutil.copytree(root / "out.work", out.with_name(name + ".work"))
    return out


def test_report_says_the_prune_ratio_used(tiny_run):
    report = json.loads((tiny_run / "out" / "pruning_report.json").read_text())
    assert report["method_options"]["prune_ratio"] == 0.3  # was P3BConfig's default 0.5
    assert report["method_options"]["update_every"] == 1


def test_output_dir_gets_the_users_umask(tiny_run, tmp_path, tiny_vit):
    out = tiny_run / "out"
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # mkdtemp made it 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()
    old = os.umask(0o027)
    try:
        save_model_dir(tiny_vit, tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "m" / "config.json").stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_resume_with_other_options_is_refused(tiny_run, capsys):
    out = _copy_work(tiny_run, "other")
    assert _cli([*_prune_argv(tiny_run, out, "--resume"), "--prune-ratio", "0.4"]) == 2
    err = _messages(capsys)
    assert err == [
        f"p3b-hf prune: error: --resume: the checkpoints in {out}.work belong to a run with other options "
        "(prune_ratio was 0.3, now 0.4). Resume with the same options, or drop --resume to start afresh "
        "(replacing those checkpoints)."
    ]
    assert _cli([*_prune_argv(tiny_run, out, "--resume"), "--update-every", "2"]) == 2
    assert "(method.update_every was 1, now 2)" in capsys.readouterr().err
    assert not out.exists() and (out.with_name("other.work") / "p3b" / "checkpoint-2").is_dir()


def test_resume_without_checkpoints_says_it_starts_from_scratch(tiny_run, capsys):
    out = tiny_run / "fresh"
    assert _cli(_prune_argv(tiny_run, out, "--resume")) == 0
    assert f"p3b-hf: --resume: no checkpoint in {out}.work; starting from scratch." in capsys.readouterr().err


def test_resume_accumulates_the_wall_time(tiny_run):
    out = _copy_work(tiny_run, "timed")
    record = out.with_name("timed.work") / "run.json"
    state = json.loads(record.read_text())
    assert 0 < state["wall_time_s"] < 600  # written at every checkpoint
    state["wall_time_s"] = 1000.0  # the interrupted part took 1000 s
    record.write_text(json.dumps(state))
    assert _cli(_prune_argv(tiny_run, out, "--resume")) == 0
    assert 1000.0 < json.loads((out / "pruning_report.json").read_text())["wall_time_s"] < 1600


def test_damaged_checkpoint_falls_back_to_the_previous_one(tiny_run, capsys):
    from p3b_hf.checkpoints import last_complete_checkpoint

    out = _copy_work(tiny_run, "damaged")
    phase = out.with_name("damaged.work") / "p3b"
    opt = phase / "checkpoint-2" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:1000])  # truncated
    assert last_complete_checkpoint(phase) == str(phase / "checkpoint-1")
    assert "skipped checkpoint-2 (optimizer.pt is damaged" in capsys.readouterr().err
    assert _cli(_prune_argv(tiny_run, out, "--resume")) == 0  # resumes from checkpoint-1, no traceback
    (tiny_run / "damaged.work").mkdir()
    bad = tiny_run / "damaged.work" / "checkpoint-3"
    bad.mkdir()
    (bad / "trainer_state.json").write_text("{}")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"every checkpoint in .* is damaged \(checkpoint-3 \(model\."):
        last_complete_checkpoint(tiny_run / "damaged.work")


def test_failed_run_leaves_no_empty_work_dir(tiny_run, monkeypatch, capsys):
    from p3b_hf.training import FineTuneTrainer

    def boom(*a, **k):
        raise P3BError("boom")

    monkeypatch.setattr(FineTuneTrainer, "training_step", boom)
    out = tiny_run / "failed"
    assert _cli(_prune_argv(tiny_run, out)) == 2
    assert "boom" in capsys.readouterr().err
    assert sorted(p.name for p in tiny_run.iterdir() if p.name.startswith(("failed", ".failed"))) == []


def test_disk_full_is_one_line(tiny_run, monkeypatch, capsys):
    """Checked before the run (free space against ~12x the model per checkpoint), and a disk that fills up
    mid-run (ENOSPC while a checkpoint is written) is one line naming --resume, not a traceback."""
    import errno
    import shutil

    from transformers import Trainer

    from p3b_hf import checkpoints

    real = shutil.disk_usage
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda p: real(p)._replace(free=2**20))
    out = tiny_run / "full"
    assert _cli(_prune_argv(tiny_run, out)) == 2
    err = capsys.readouterr().err
    assert "has 1 MiB free but the run needs about" in err and "choose another --output-dir" in err
    assert not out.with_name("full.work").exists()
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", real)

    def full(self, model, trial):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full)
    assert _cli(_prune_argv(tiny_run, out)) == 2
    err = _messages(capsys)
    assert len(err) == 1 and "the disk is full (No space left on device)" in err[0] and "--resume" in err[0]
    assert not out.exists() and not list(tiny_run.glob(".full.staging-*"))


def test_sigint_checkpoints_and_exits_130(tiny_run, monkeypatch, capsys):
    """Ctrl-C during training: the step finishes, a checkpoint is written, one line, exit 130 (no
    KeyboardInterrupt traceback, no output dir, the lock released)."""
    import signal

    from p3b_hf.training import GracefulStop

    original = GracefulStop.on_step_end

    def interrupt_at_step_1(self, args, state, control, **kw):
        if state.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, args, state, control, **kw)

    monkeypatch.setattr(GracefulStop, "on_step_end", interrupt_at_step_1)
    out = tiny_run / "ctrl_c"
    assert _cli([*_prune_argv(tiny_run, out), "--epochs", "4", "--prune-finalize-epoch", "4"]) == 130
    err = _messages(capsys)
    assert err[-1].startswith("p3b-hf prune: stopped by SIGINT after step 1; the newest checkpoint is in")
    assert (tiny_run / "ctrl_c.work" / "p3b" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not out.exists() and not (tiny_run / ".ctrl_c.lock").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_save_steps_checkpoints_by_steps():
    from p3b_hf.training import training_arguments

    args = training_arguments(TrainOptions(save_steps=3, device="cpu"), "/tmp/unused")
    assert (args.save_strategy, args.save_steps) == ("steps", 3)
    assert training_arguments(TrainOptions(device="cpu"), "/tmp/unused").save_strategy == "epoch"
    with pytest.raises(P3BError, match="--save-steps 0 must be >= 1"):
        TrainOptions(save_steps=0).check()


def test_second_run_on_the_same_output_dir_is_refused(tmp_path):
    """A lock file beside --output-dir names the owner's pid: a live owner refuses the second run in one line,
    a dead one (a killed run) is stale and taken over."""
    import subprocess

    from p3b_hf.checkpoints import output_lock

    out = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock.write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        with pytest.raises(
            P3BError, match=rf"--output-dir {out} is in use by another run \(pid {sleeper.pid},"
        ):
            with output_lock(out):
                pass
        assert lock.read_text().startswith(str(sleeper.pid))  # the owner's lock is untouched
        from p3b_hf.options import DataOptions, OutputOptions
        from p3b_hf.runner import PruneJob, prune

        job = PruneJob(
            PruneOptions(model="nowhere", prune_ratio=0.5), DataOptions(dataset="x"), OutputOptions(str(out))
        )
        with pytest.raises(P3BError, match="in use by another run"):
            prune(job)  # refused before the (missing) model is looked at
    finally:
        sleeper.kill()
        sleeper.wait()
    with output_lock(out):  # the sleeper is dead: stale lock taken over
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()


def test_recovery_after_a_kill_between_the_overwrite_renames(saved, tmp_path):
    """``--overwrite`` without an atomic exchange moves the old model to ``.<name>.old-<pid>`` and then the
    new one in: a kill in between left no model at all. The next run puts the old one back (or, when the
    new one did arrive, deletes the leftover); a live owner's ``.old`` is left alone."""
    import shutil
    import subprocess

    from p3b_hf.checkpoints import publish, recover_output_dir

    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp_path = tmp_path / "parent"
    tmp_path.mkdir()
    target = tmp_path / "model"
    shutil.copytree(saved, tmp_path / f".model.old-{dead.pid}")  # the stranded state: no target
    assert not target.exists()
    assert recover_output_dir(target) == [
        f"restored {target} from .model.old-{dead.pid}, left by a run killed while replacing it"
    ]
    assert (target / "model.safetensors").read_bytes() == (saved / "model.safetensors").read_bytes()
    shutil.copytree(saved, tmp_path / f".model.old-{dead.pid}")  # killed after the second rename
    assert recover_output_dir(target)[0].startswith(f"removed .model.old-{dead.pid}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # publish over an existing dir leaves nothing beside it (an atomic exchange where the OS has one)
    staging = tmp_path / ".model.staging-x"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    publish(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_output_location_is_checked_before_any_work(tmp_path, monkeypatch):
    """``--output-dir .`` (it would be replaced as a whole), a path below a file, a read-only location."""
    from p3b_hf.checkpoints import check_output_location

    monkeypatch.chdir(tmp_path)
    for bad in (".", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(P3BError, match="is the current directory or one above it.*--output-dir ./pruned"):
            check_output_location(bad)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(P3BError, match=r"afile is a file, not a directory"):
        check_output_location("afile/sub/out")
    with pytest.raises(P3BError, match=r"--output-dir afile is a file"):
        check_output_location("afile")
    with pytest.raises(P3BError, match=r"cannot write in /proc .*give a writable location"):
        check_output_location("/proc/p3b_out")  # read-only even for root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert check_output_location("sub/out") == tmp_path / "sub" / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created by the check


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


# ---------------------------------------------------------------------------------------- unsupported models
def _tiny_unsupported(kind: str, root: Path) -> Path:
    """A tiny stock ResNet or SigLIP2 NaFlex classifier (built from a config) saved to ``root/kind``."""
    import transformers as tf

    if kind == "resnet":
        model = tf.ResNetForImageClassification(
            tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
        )
    else:  # SigLIP2 NaFlex (pre-patchified pixels + spatial_shapes: refused with the fixed-resolution checkpoint)
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        model = tf.Siglip2ForImageClassification(
            tf.Siglip2Config(
                vision_config=dict(vision, num_patches=4, patch_size=8),
                text_config=dict(vision, vocab_size=10),
                num_labels=3,
            )
        )
    model.save_pretrained(root / kind)
    tf.ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(root / kind)
    return root / kind


@pytest.mark.parametrize("kind", ["resnet", "siglip2"])
def test_unsupported_model_is_one_clear_error_at_every_entry_point(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """prune, finetune, compare, cost, bench and export refuse a model of an unsupported family with the same
    UnsupportedModelError naming every supported class (generated from the family registries), exit 2, no
    traceback, nothing written. SigLIP2 NaFlex: the error also says why and names the fixed-resolution
    checkpoint to load instead."""
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
    cls = "ResNetForImageClassification" if kind == "resnet" else "Siglip2ForImageClassification"
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
        naflex = "spatial_shapes" in err and "'google/siglip2-base-patch16-224'" in err
        assert naflex == (kind == "siglip2"), (name, err)
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
        "--batch-size",
        "8",
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
    ]
    capsys.readouterr()
    for argv in (
        ["prune", "--method", "vbp", "--vbp-epochs", "1", "--output-dir", str(runs / "out"), *common],
        ["compare", "--methods", "vbp", "--epochs", "1", "--output-dir", str(runs / "cmp"), *common],
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

    from cli_args import tiny_train_args
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
        *tiny_train_args(batch_size=8, augment="basic"),
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "8",
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
