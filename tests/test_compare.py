"""``p3b-hf compare``: real prune runs per method and ratio, one table, one plot, unreachable budgets kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_recipes import _tiny_data, _tiny_dense

from p3b_hf import P3BError
from p3b_hf.cli import main
from p3b_hf.compare import MethodSpec, _finetune_flags, parse_methods, parse_ratios, prune_argv


def test_method_and_ratio_parsing():
    specs = parse_methods("p3b, vbp,global-hessian")
    assert [s.label for s in specs] == ["p3b", "vbp", "global-hessian"]
    assert specs[2].extra == ("--importance", "hessian")
    argv = prune_argv(specs[1], 0.5, ["--model", "m"], Path("o"), 3)
    assert argv[:3] == ["prune", "--method", "vbp"] and argv[-2:] == ["--vbp-epochs", "3"]
    ref = MethodSpec.parse("P3B-Reference")
    assert (ref.label, ref.method) == ("p3b-reference", "p3b")
    assert prune_argv(ref, 0.5, [], Path("o"), 3)[:4] == ["prune", "--method", "p3b", "--reference"]
    with pytest.raises(P3BError, match="Unknown method 'global-foo'"):
        MethodSpec.parse("global-foo")
    with pytest.raises(P3BError, match="strictly between 0 and 1"):
        parse_ratios("0.5,1.2")
    assert _finetune_flags(["--model", "m", "--update-every", "3", "--bf16", "--seed", "1"]) == [
        "--model", "m", "--bf16", "--seed", "1"]


def test_compare_end_to_end(tmp_path: Path):
    data = _tiny_data(tmp_path)
    dense_dir, dense_model = _tiny_dense(tmp_path)
    out = tmp_path / "cmp"
    code = main(["compare", "--methods", "p3b,vbp,global-l1", "--prune-ratio", "0.3,0.6", "--model", str(dense_dir),
                 "--dataset", str(data), "--output-dir", str(out), "--epochs", "1", "--bench-device", "cpu", "--dense-baseline",
                 "--bench-repeats", "2", "--deploy-backend", "fast", "--", "--batch-size", "16", "--augment", "none", "--device", "cpu",
                 "--mixup", "0", "--cutmix", "0"])
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
