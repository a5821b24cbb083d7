"""Every flag acts or is refused (issue 24 §2): a flag of another method, a common option the chosen method
does not read, a KD option that cannot act -- one OptionsError line naming the right flag, on the command
line (in-process) and in recipes. And the KD scaling a trainer applies when the user leaves it unset."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from p3b_hf.cli import main
from p3b_hf.errors import OptionsError

BASE = ["prune", "--model", "no-such-model", "--dataset", "no-such-data", "--output-dir"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--method", "vbp", "--epochs", "1"],
            "--epochs is not used by --method vbp: its fine-tune length is --vbp-epochs (paper: 10).",
        ),
        (  # given with its default value: still given (argparse records it; no comparison with defaults)
            ["--method", "vbp", "--epochs", "50"],
            "--epochs is not used by --method vbp: its fine-tune length is --vbp-epochs (paper: 10).",
        ),
        (
            ["--method", "vbp", "--lr", "1e-3"],
            "--lr is not used by --method vbp: its fine-tune learning rate is --vbp-lr (paper: 1.5e-5).",
        ),
        (
            ["--method", "vbp", "--weight-decay", "0.05"],
            "--weight-decay is not used by --method vbp: its fine-tune weight decay is --vbp-weight-decay "
            "(paper: 0.01).",
        ),
        (
            ["--method", "vbp", "--importance", "l1"],
            "--importance is an option of --method global, not of --method vbp: drop it, or run --method "
            "global.",
        ),
        (
            ["--method", "p3b", "--vbp-epochs", "3"],
            "--vbp-epochs is an option of --method vbp, not of --method p3b: drop it, or run --method vbp.",
        ),
        (
            ["--method", "global", "--update-every", "5"],
            "--update-every is an option of --method p3b, not of --method global: drop it, or run --method "
            "p3b.",
        ),
        (
            ["--method", "global", "--teacher", "dense"],
            "--teacher is not used by --method global: its fine-tune does not distil (Torch-Pruning's ViT "
            "recipe and arXiv 2504.04196 do not); distil the pruned model afterwards with `p3b-hf finetune "
            "--model OUT --teacher DIR`.",
        ),
        (
            ["--method", "global", "--kd-alpha", "0.3"],
            "--kd-alpha is not used by --method global: its fine-tune does not distil (Torch-Pruning's ViT "
            "recipe and arXiv 2504.04196 do not); distil the pruned model afterwards with `p3b-hf finetune "
            "--model OUT --teacher DIR`.",
        ),
        (
            ["--kd-alpha", "0.3"],  # --method p3b (the default) distils only from a --teacher
            "--kd-alpha has no effect without --teacher: --method p3b distils only from a --teacher DIR (the "
            "dense model fine-tuned on this data set); add --teacher or drop it.",
        ),
        (
            ["--method", "vbp", "--kd-kind", "hard", "--kd-reduction", "batchmean"],
            "--kd-reduction scales the soft KL only: with --kd-kind hard (DeiT's hard distillation, a "
            "batch-mean CE to the teacher's argmax) drop it.",
        ),
    ],
)
def test_prune_refuses_a_flag_the_method_does_not_read(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*BASE, str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"p3b-hf prune: error: {message}"]
    assert not out.exists() and list(tmp_path.iterdir()) == []  # refused before anything is loaded


def test_other_commands_refuse_flags_that_cannot_act(tmp_path, capsys):
    common = ["--model", "m", "--dataset", "d", "--output-dir", str(tmp_path / "o")]
    assert main(["finetune", *common, "--kd-temperature", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "p3b-hf finetune: error: --kd-temperature has no effect without --teacher: p3b-hf finetune distils "
        "only from a --teacher DIR (the dense model fine-tuned on this data set); add --teacher or drop it."
    )
    assert main(["compare", *common, "--vbp-epochs", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "p3b-hf compare: error: --vbp-epochs is not used by compare: every cell trains --epochs (VBP's KD "
        "fine-tune too)."
    )


def _prune_parser() -> argparse.ArgumentParser:
    from p3b_hf.commands.prune import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_given_options_are_the_flags_on_the_command_line_not_the_defaults():
    from p3b_hf.commands.prune import job_from_args
    from p3b_hf.options import given_options

    required = ["--model", "m", "--dataset", "d", "--output-dir", "o"]
    args = _prune_parser().parse_args(
        [*required, "--method", "vbp", "--vbp-epochs", "10", "--kd-kind", "hard", "--bf16"]
    )
    assert given_options(args) == {
        "model",
        "dataset",
        "output_dir",
        "method",
        "vbp_epochs",
        "kd_kind",
        "bf16",
    }
    job = job_from_args(args)  # every flag VBP reads: accepted
    assert job.method_options.vbp_epochs == 10 and job.kd.kd_kind == "hard" and job.train.epochs == 50
    assert given_options(_prune_parser().parse_args(required)) == {"model", "dataset", "output_dir"}
    # the same flags through `p3b-hf`'s subcommand parser: the record reaches the top-level namespace
    from p3b_hf.cli import build_parser

    top = build_parser("prune").parse_args(["prune", *required, "--epochs", "3"])
    assert given_options(top) == {"model", "dataset", "output_dir", "epochs"}


def test_recipes_refuse_the_same_options_naming_the_stage(monkeypatch):
    from test_recipes import run

    monkeypatch.setenv("WORLD_SIZE", "1")
    stage = {
        "command": "prune",
        "args": {"method": "vbp", "model": "m", "dataset": "d", "output_dir": "o", "epochs": 1},
    }
    with pytest.raises(OptionsError) as e:
        run.stage_job(stage, {}, "prune")
    assert str(e.value) == (
        "recipe stage 'prune' (prune): --epochs is not used by --method vbp: its fine-tune length is "
        "--vbp-epochs (paper: 10)."
    )
    del stage["args"]["epochs"]
    stage["args"]["importance"] = "l1"
    with pytest.raises(
        OptionsError, match=r"--importance is an option of --method global, not of --method vbp"
    ):
        run.stage_job(stage, {}, "prune")
    del stage["args"]["importance"]
    _, job = run.stage_job({**stage, "args": {**stage["args"], "vbp_epochs": 2}}, {}, "prune")
    assert job.method_options.vbp_epochs == 2
    compare = {
        "command": "compare",
        "args": {"model": "m", "dataset": "d", "output_dir": "o", "vbp_epochs": 2},
    }
    with pytest.raises(OptionsError, match=r"--vbp-epochs is not used by compare"):
        run.stage_job(compare, {}, "compare")


def test_compare_gives_global_cells_no_kd_options(tmp_path):
    """A compare's --teacher is for the cells that distil; a global cell gets none (global refuses KD)."""
    from p3b_hf.compare import CompareJob, CompareOptions, MethodSpec, cell_job
    from p3b_hf.options import DataOptions, KDOptions, OutputOptions

    job = CompareJob(
        compare=CompareOptions(model="m"),
        data=DataOptions(dataset="d"),
        output=OutputOptions(output_dir=str(tmp_path)),
        kd=KDOptions(teacher="dense", kd_alpha=0.3),
    )
    glob = cell_job(job, MethodSpec.parse("global-taylor"), 0.5, tmp_path / "g", None)
    p3b = cell_job(job, MethodSpec.parse("p3b"), 0.5, tmp_path / "p", None)
    assert glob.kd == KDOptions() and p3b.kd == KDOptions(teacher="dense", kd_alpha=0.3)


# ---------------------------------------------------------------------------------- KD scaling when unset
def test_p3b_trainer_with_an_unset_kd_reduction_distils_at_deit_scale(tmp_path):
    """``P3BTrainer(teacher=t, kd=KDConfig(alpha=0.3))`` -- the form docs/p3b.md shows -- distils at DeiT's
    scale (summed KL * T^2 / (B * K)), as ``--method p3b --teacher`` does, not K times that."""
    from p3b_tiny_run import synthetic_dataset, tiny_model, training_args

    from p3b_hf.methods.p3b.config import P3BConfig
    from p3b_hf.methods.p3b.trainer import P3BTrainer
    from p3b_hf.training import FineTuneTrainer, KDConfig, kd_loss

    tr = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path), num_train_epochs=1),
        train_dataset=synthetic_dataset(32),
        teacher=tiny_model("vit", seed=1),
        kd=KDConfig(alpha=0.3, temperature=2.0),
        p3b=P3BConfig(prune_ratio=0.3, save_dir=None),
    )
    assert tr.kd == KDConfig(alpha=0.3, temperature=2.0, reduction="deit")
    g = torch.Generator().manual_seed(0)
    b, k, t, alpha = 4, 10, 2.0, 0.3
    s, te = torch.randn(b, k, generator=g), torch.randn(b, k, generator=g)
    y = torch.randint(0, k, (b,), generator=g)
    ps, pt = F.softmax(s / t, -1).double(), F.softmax(te / t, -1).double()
    kl_sum = float((pt * (pt.log() - ps.log())).sum())
    ce = float(F.cross_entropy(s, y))
    got = float(kd_loss({"logits": s}, te, y, tr.kd))
    assert got == pytest.approx((1 - alpha) * ce + alpha * kl_sum * t * t / (b * k), rel=1e-5)
    assert got == pytest.approx(0.7 * ce + 0.3 * kl_sum * 4 / 40, rel=1e-5)
    # the plain fine-tune follows `p3b-hf finetune` (DeiT); a reduction the user gives is kept
    assert FineTuneTrainer.default_kd_reduction == "deit"
    kept = P3BTrainer(
        model=tiny_model("vit"),
        args=training_args(str(tmp_path / "b"), num_train_epochs=1),
        train_dataset=synthetic_dataset(32),
        teacher=tiny_model("vit", seed=1),
        kd=KDConfig(alpha=0.3, reduction="batchmean"),
        p3b=P3BConfig(prune_ratio=0.3, save_dir=None),
    )
    assert kept.kd.reduction == "batchmean"
    with pytest.raises(Exception, match="reduction is unset"):
        kd_loss({"logits": s}, te, y, KDConfig(alpha=0.3))  # never a silent default
