"""Swin / ConvNeXt through the command line (issue 17): ``p3b-hf prune --method vbp / global`` write a loadable
pruned model whose report is true, ``--method p3b`` is one clear error, and ``p3b-hf compare`` turns it into an
"unsupported" row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_args import TINY_EPOCH_ARGS, TINY_TRAIN_ARGS, prune_argv
from test_recipes import _tiny_data
from transformers import AutoModelForImageClassification

from p3b_hf.cli import main
from p3b_hf.loading import validate_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = dict(num_labels=4, id2label=dict(enumerate("abcd")), label2id={c: i for i, c in enumerate("abcd")})


def _dense_dir(root: Path, family: str) -> Path:
    """A tiny model already trained on the task's labels (VBP is post-training: the head is not re-initialised)."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        SwinConfig,
        SwinForImageClassification,
        ViTImageProcessorPil,
    )

    torch.manual_seed(0)
    if family == "swin":
        model = SwinForImageClassification(
            SwinConfig(
                image_size=32,
                patch_size=2,
                embed_dim=16,
                depths=[2, 2],
                num_heads=[2, 4],
                window_size=4,
                **LABELS,
            )
        )
    else:
        model = ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 2], num_stages=2, image_size=32, **LABELS)
        )
    model.save_pretrained(root / family)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / family)
    return root / family


@pytest.mark.parametrize(
    "family, method",
    [
        ("swin", ["vbp", "--vbp-epochs", "1"]),
        ("convnext", ["global", "--importance", "taylor", "--taylor-batches", "1", "--epochs", "1"]),
    ],
)
def test_prune_cli_vbp_and_global(family: str, method: list[str], tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    dense = _dense_dir(tmp_path, family)
    out = tmp_path / "out"
    # without --epochs: VBP's fine-tune length is --vbp-epochs (--epochs is refused)
    code = main(prune_argv(method, dense, data, out, "--prune-ratio", "0.3", *TINY_TRAIN_ARGS))
    assert code == 0
    report = json.loads((out / "pruning_report.json").read_text())
    model = AutoModelForImageClassification.from_pretrained(out)
    assert type(model).__name__ == f"P3B{'Swin' if family == 'swin' else 'ConvNext'}ForImageClassification"
    n = sum(p.numel() for p in model.parameters())
    assert report["pruned"]["params"] == n
    assert 0.3 <= 1 - n / report["dense"]["params"] < 0.32
    widths = report["widths"]
    assert [w["mlp"] for w in widths] == [f for stage in model.config.block_intermediate_sizes for f in stage]
    assert len({w["mlp"] for w in widths}) > 1 and {w["stage"] for w in widths} == {0, 1}
    assert (out / "plots" / "widths.png").exists()
    assert main(["cost", "--model", str(out)]) == 0
    validate_checkpoint(out)  # the saved layout (Swin: the Hub's legacy key names) matches the config
    assert (
        main(
            [
                "finetune",
                "--model",
                str(out),
                "--dataset",
                str(data),
                *TINY_EPOCH_ARGS,
                "--output-dir",
                str(tmp_path / "ft"),
            ]
        )
        == 0
    )  # a pruned dir fine-tunes like any other
    from fake_hub import HubStore, RecordingHfApi, snapshot_bytes

    from p3b_hf.hub import push_pruned

    store = HubStore(tmp_path / "hub")
    result = push_pruned(out, f"me/{family}", api=RecordingHfApi(store))
    assert {f"configuration_p3b_{family}.py", f"modeling_p3b_{family}.py", "model.safetensors"} <= set(
        result.files
    )
    files = snapshot_bytes(store, f"me/{family}")
    cls = "Swin" if family == "swin" else "ConvNext"
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == f"modeling_p3b_{family}.P3B{cls}Model"
    card = files["README.md"].decode()
    assert (
        "| stage | block | width | MLP |" in card
        and f"| 1 | 1 | {widths[-1]['dim']} | {widths[-1]['mlp']} |" in card
    )


def test_p3b_on_swin_is_one_clear_error_and_an_unsupported_compare_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tiny_data(tmp_path)
    dense = _dense_dir(tmp_path, "swin")
    code = main(prune_argv(["p3b"], dense, data, tmp_path / "p3b", "--prune-ratio", "0.3", *TINY_EPOCH_ARGS))
    err = capsys.readouterr().err
    assert code != 0
    assert "P3B is defined for plain ViT blocks" in err and "--method vbp or --method global" in err
    assert not (tmp_path / "p3b").exists()
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--methods",
            "p3b,vbp,global-l1",
            "--prune-ratio",
            "0.3",
            "--model",
            str(dense),
            "--dataset",
            str(data),
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--bench-device",
            "cpu",
            "--bench-repeats",
            "2",
            "--deploy-backend",
            "none",
            "--",
            *TINY_TRAIN_ARGS,
        ]
    )
    assert code == 0
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["p3b"]["status"] == "unsupported" and "--method vbp" in rows["p3b"]["error"]
    assert rows["global-l1"]["status"] == "ok" and abs(rows["global-l1"]["param_reduction"] - 0.3) < 0.02
    assert rows["global-l1"]["throughput_vs_dense"] > 0  # the eager speed column works for Swin
    assert (
        rows["global-l1"]["deploy_speed_vs_dense"] is None
    )  # --deploy-backend none (tests/test_compare.py times it)
    assert rows["dense"]["status"] == "ok"  # VBP starts from the dense cell (fine-tuned with a new head) ...
    assert (
        rows["vbp"]["status"] == "ok" and 0.3 <= rows["vbp"]["param_reduction"] < 0.32
    )  # ... and distils from it
    assert "unsupported" in (out / "compare.md").read_text()
