"""``p3b-hf compare``: real prune runs per method and ratio, one table, one plot, unreachable budgets kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_args import TINY_TRAIN_ARGS
from test_recipes import _tiny_data, _tiny_dense
from test_vbp import _tiny_source

from p3b_hf import P3BError
from p3b_hf.cli import main
from p3b_hf.compare import (
    CompareJob,
    CompareOptions,
    MethodSpec,
    cell_job,
    markdown_table,
    parse_methods,
    parse_ratios,
    row_of,
)
from p3b_hf.methods.global_pruning import GlobalOptions
from p3b_hf.methods.p3b import P3BConfig
from p3b_hf.methods.vbp import VBPOptions
from p3b_hf.options import DataOptions, KDOptions, OutputOptions, TrainOptions


def _job(**kd) -> CompareJob:
    return CompareJob(
        compare=CompareOptions(model="src"),
        data=DataOptions(dataset="d"),
        output=OutputOptions(output_dir="cmp"),
        train=TrainOptions(epochs=3),
        kd=KDOptions(**kd),
        method_options={"p3b": P3BConfig(update_every=7)},
    )


def test_method_and_ratio_parsing():
    specs = parse_methods("p3b, vbp,global-hessian")
    assert [s.label for s in specs] == ["p3b", "vbp", "global-hessian"]
    assert specs[2].overrides == (("importance", "hessian"),)
    vbp_cell = cell_job(_job(), specs[1], 0.5, Path("o"), None)
    assert vbp_cell.prune.method == "vbp" and isinstance(vbp_cell.method_options, VBPOptions)
    assert vbp_cell.method_options.vbp_epochs == 3 and vbp_cell.prune.prune_ratio == 0.5
    ref = MethodSpec.parse("P3B-Reference")
    assert (ref.label, ref.method) == ("p3b-reference", "p3b")
    ref_cell = cell_job(_job(), ref, 0.5, Path("o"), None)
    assert (
        ref_cell.method_options.reference and ref_cell.method_options.update_every == 7
    )  # user's options kept
    assert isinstance(cell_job(_job(), specs[2], 0.5, Path("o"), None).method_options, GlobalOptions)
    with pytest.raises(P3BError, match="Unknown method 'global-foo'"):
        MethodSpec.parse("global-foo")
    with pytest.raises(P3BError, match="strictly between 0 and 1"):
        parse_ratios("0.5,1.2")


def test_cells_start_from_the_right_model():
    """VBP (post-training) starts from the dense cell and distils from it; global follows --global-from."""
    vbp, p3b, glob = parse_methods("vbp,p3b,global-taylor")
    assert (vbp.start(), p3b.start(), glob.start()) == ("dense", "source", "source")
    assert (vbp.start("dense"), p3b.start("dense"), glob.start("dense")) == ("dense", "source", "dense")
    cell = cell_job(_job(), vbp, 0.5, Path("o"), "cmp/dense")
    assert cell.prune.model == "cmp/dense" and cell.kd.teacher == "cmp/dense"
    cell = cell_job(_job(teacher="t"), vbp, 0.5, Path("o"), "cmp/dense")
    assert cell.kd.teacher == "t"  # the user's teacher wins
    cell = cell_job(_job(), glob, 0.5, Path("o"), "cmp/dense")
    assert cell.kd.teacher is None and cell.prune.model == "cmp/dense"
    assert cell_job(_job(), p3b, 0.5, Path("o"), None).prune.model == "src"
    rows = [
        row_of(
            "vbp", 0.5, {"status": "unreachable", "error": "too much"}, None, start="dense (fine-tuned 3 ep)"
        ),
        row_of(
            "p3b",
            0.5,
            {"pruned": {"params": 10**6, "macs": 10**9}, "eval": {"accuracy": 0.5}},
            None,
            epochs_total=3.0,
        ),
    ]
    lines = markdown_table(rows).splitlines()
    assert len({line.count("|") for line in lines}) == 1  # every row has the header's columns
    assert "| vbp | 0.50 | dense (fine-tuned 3 ep) | – | unreachable: too much |" in lines[2]
    assert lines[3].startswith("| p3b | 0.50 | source | 3 | 50.00 |")


def test_compare_end_to_end(tmp_path: Path):
    data = _tiny_data(tmp_path)
    dense_dir, dense_model = _tiny_dense(tmp_path)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--methods",
            "p3b,vbp,global-l1",
            "--prune-ratio",
            "0.3,0.6",
            "--model",
            str(dense_dir),
            "--dataset",
            str(data),
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--bench-device",
            "cpu",
            "--dense-baseline",
            "--bench-repeats",
            "2",
            "--deploy-backend",
            "fast",
            "--",
            *TINY_TRAIN_ARGS,
        ]
    )
    assert code == 0
    rows = json.loads((out / "compare.json").read_text())["rows"]
    cells = {(r["method"], r["prune_ratio"]): r for r in rows}
    assert len(cells) == 7
    dense = cells.pop(("dense", 0.0))  # the same budget on the unpruned model
    assert dense["status"] == "ok" and dense["wall_time_s"] > 0 and 0 <= dense["accuracy"] <= 1
    assert dense["params"] == sum(p.numel() for p in dense_model.parameters())
    vbp_high = cells[("vbp", 0.6)]
    assert vbp_high["status"] == "unreachable" and "VBP" in vbp_high["error"]
    for key, row in cells.items():
        if row["status"] != "ok":
            continue
        report = json.loads((out / f"{key[0]}-{round(100 * key[1])}" / "pruning_report.json").read_text())
        assert row["params"] == report["pruned"]["params"]
        assert abs(row["param_reduction"] - key[1]) < 0.05, (key, row["param_reduction"])
        assert row["throughput_vs_dense"] > 0 and row["deploy_speed_vs_dense"] > 0
    assert (out / "accuracy_vs_params.png").stat().st_size > 1000
    table = (out / "compare.md").read_text()
    assert "global-l1" in table and "unreachable" in table


def test_compare_vbp_starts_from_the_dense_cell_trained_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Transfer task (the source model has other labels): the VBP cell prunes and distils from OUT/dense, the
    dense model fine-tuned on the task, trained once (even without --dense-baseline) and reused; rows say
    what each cell started from and its epochs in all; a finished cell made from another start is refused."""
    data, source = _tiny_data(tmp_path), _tiny_source(tmp_path)
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--methods",
        "vbp,global-l1",
        "--prune-ratio",
        "0.3",
        "--model",
        str(source),
        "--dataset",
        str(data),
        "--output-dir",
        str(out),
        "--epochs",
        "1",
        "--no-bench",
        "--",
        *TINY_TRAIN_ARGS,
    ]
    assert main(argv) == 0
    assert "trained although --dense-baseline was not given" in capsys.readouterr().out
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert set(rows) == {"dense", "vbp", "global-l1"} and all(r["status"] == "ok" for r in rows.values())
    assert (rows["dense"]["start"], rows["dense"]["epochs_total"]) == ("source", 1.0)
    assert (rows["vbp"]["start"], rows["vbp"]["epochs_total"]) == ("dense (fine-tuned 1 ep)", 2.0)
    assert (rows["global-l1"]["start"], rows["global-l1"]["epochs_total"]) == ("source", 1.0)
    vbp = json.loads((out / "vbp-30" / "pruning_report.json").read_text())
    assert (
        vbp["base_model"] == "dense" and vbp["history"]["kd"]["teacher"] == "dense"
    )  # names, no machine paths
    assert json.loads((out / "global-l1-30" / "pruning_report.json").read_text())["base_model"] == source.name
    assert json.loads((out / "vbp-30" / "config.json").read_text())["base_model_name_or_path"] == str(
        (out / "dense").resolve()
    )
    assert "start,epochs_total" in (out / "compare.csv").read_text().splitlines()[0]
    assert "| vbp | 0.30 | dense (fine-tuned 1 ep) | 2 |" in (out / "compare.md").read_text()

    stamps = {
        d: (out / d / "model.safetensors").stat().st_mtime_ns for d in ("dense", "vbp-30", "global-l1-30")
    }
    assert main(argv) == 0  # re-run: every cell, the dense one included, is reused
    assert stamps == {d: (out / d / "model.safetensors").stat().st_mtime_ns for d in stamps}
    assert {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]} == rows

    # global cells from the dense cell: the finished source-started global cell is refused before any training
    assert main([*argv[: argv.index("--")], "--global-from", "dense", *argv[argv.index("--") :]]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'global-l1-30'} holds a finished run made from {source}" in err and "delete" in err
    assert stamps == {d: (out / d / "model.safetensors").stat().st_mtime_ns for d in stamps}
    import shutil

    shutil.rmtree(out / "global-l1-30")
    assert main([*argv[: argv.index("--")], "--global-from", "dense", *argv[argv.index("--") :]]) == 0
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert (rows["global-l1"]["start"], rows["global-l1"]["epochs_total"]) == ("dense (fine-tuned 1 ep)", 2.0)
    assert json.loads((out / "global-l1-30" / "pruning_report.json").read_text())["base_model"] == "dense"
    assert (out / "dense" / "model.safetensors").stat().st_mtime_ns == stamps["dense"]
