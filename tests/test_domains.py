"""Domain generalisation (issue 19): leave-one-domain-out splits, several eval sets, per-domain reports with the
source-vs-target gap, ``compare --protocol lodo``, 95 % budgets, the DG recipes. Real tiny runs, exact checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from cli_args import TINY_TRAIN_ARGS
from PIL import Image
from test_recipes import RECIPES, _parsed, run

from p3b_hf.cli import build_parser, main
from p3b_hf.compare import (
    CompareJob,
    CompareOptions,
    lodo_rows,
    lodo_table,
    parse_methods,
    parse_ratios,
    run_compare,
)
from p3b_hf.data import PRESETS, build_eval_sets, list_domains, load_image_dataset
from p3b_hf.errors import BudgetError, DataError, P3BError
from p3b_hf.hub import build_model_card
from p3b_hf.options import DataOptions, FinetuneOptions, OutputOptions, PruneOptions, TrainOptions
from p3b_hf.report import domain_gap, summarize
from p3b_hf.runner import FinetuneJob, PruneJob, finetune, prune

DOMAINS = ("art", "photo", "sketch")


def _domain_set(n_per: int = 5, k: int = 2, eval_split: bool = False) -> datasets.DatasetDict:
    """``n_per`` images per (domain, class); each image's pixel value encodes its row, so splits are checkable."""
    rows = [(d, c, i) for d in DOMAINS for c in range(k) for i in range(n_per)]
    imgs = [Image.fromarray(np.full((8, 8, 3), j % 256, np.uint8)) for j in range(len(rows))]
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["cat", "dog"][:k]),
            "domain": datasets.Value("string"),
            "row": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": imgs,
            "label": [c for _, c, _ in rows],
            "domain": [d for d, _, _ in rows],
            "row": list(range(len(rows))),
        },
        features=feats,
    )
    if eval_split:
        return datasets.DatasetDict(
            train=ds.select(range(0, len(ds), 2)), test=ds.select(range(1, len(ds), 2))
        )
    return datasets.DatasetDict(train=ds)


def _rows(ds: datasets.Dataset) -> set[int]:
    return set(ds["row"])


def test_leave_one_domain_out_split_is_exact() -> None:
    dd = _domain_set(n_per=5)  # 3 domains x 2 classes x 5 images = rows 0..29, sketch = rows 20..29
    data = load_image_dataset(dd, domain_column="domain", test_domains="sketch", seed=3)
    assert (
        list(data.evals) == ["sketch", "source"]
        and data.primary_eval == "sketch"
        and data.eval is data.evals["sketch"]
    )
    assert _rows(data.evals["sketch"]) == set(range(20, 30))  # all of the held-out domain
    # 10 % of each (domain, class) of 5 images: round(0.5) = 0 -> at least one when n >= 2
    held = _rows(data.evals["source"])
    assert len(held) == 4 and all(sum(lo <= r < lo + 5 for r in held) == 1 for lo in (0, 5, 10, 15))
    assert _rows(data.train) == set(range(20)) - held  # disjoint, no target row
    assert data.domains == {
        "column": "domain",
        "available": list(DOMAINS),
        "train": ["art", "photo"],
        "test": ["sketch"],
        "target_set": "sketch",
        "source_set": "source",
        "source_holdout": 0.1,
        "train_images": {"art": 8, "photo": 8},
        "eval_images": {"sketch": 10, "source": 4},
    }
    assert data.labels == ["cat", "dog"]
    again = load_image_dataset(dd, domain_column="domain", test_domains="sketch", seed=3)
    assert _rows(again.evals["source"]) == held  # seeded
    # train domains given, test = the others; several held-out domains: their union first ("target")
    two = load_image_dataset(dd, domain_column="domain", train_domains=["Art"], source_holdout=0.0)
    assert list(two.evals) == ["target", "photo", "sketch"] and two.domains["source_set"] is None
    assert _rows(two.train) == set(range(10)) and _rows(two.evals["target"]) == set(range(10, 30))
    assert _rows(two.evals["photo"]) == set(range(10, 20))
    # an eval split: its rows of the train domains are the source set, its rows of the test domain the target
    split = load_image_dataset(
        _domain_set(eval_split=True), domain_column="domain", test_domains="photo", eval_split="test"
    )
    assert list(split.evals) == ["photo", "source"] and split.domains["source_holdout"] is None
    assert _rows(split.evals["photo"]) == {r for r in range(10, 20) if r % 2}
    assert _rows(split.evals["source"]) == {r for r in range(30) if r % 2 and not 10 <= r < 20}
    assert _rows(split.train) == {r for r in range(30) if r % 2 == 0 and not 10 <= r < 20}


def test_several_eval_splits_and_domain_errors() -> None:
    dd = _domain_set(eval_split=True)
    dd["validation"] = dd["test"].select(range(4))
    data = load_image_dataset(dd, eval_split="validation,test")
    assert (
        list(data.evals) == ["validation", "test"]
        and data.eval is data.evals["validation"]
        and data.domains is None
    )
    assert list(load_image_dataset(dd, eval_split=["test", "validation"]).evals) == ["test", "validation"]
    assert list(load_image_dataset(dd).evals) == ["validation"]  # one auto eval split, as before
    cases = [
        (dict(test_domains="sketch"), "need --domain-column COL.*'domain'"),
        (dict(domain_column="site", test_domains="sketch"), "Domain column 'site' not found.*'domain'"),
        (
            dict(domain_column="domain", test_domains="clipart"),
            r"unknown domain 'clipart'.*\['art', 'photo', 'sketch'\]",
        ),
        (
            dict(domain_column="domain", train_domains="art,sketch", test_domains="sketch"),
            r"\['sketch'\] are in both",
        ),
        (dict(domain_column="domain", train_domains="art,photo,sketch"), "leave at least one out"),
        (dict(domain_column="domain"), "needs the held-out domain.*--test-domains sketch"),
        (
            dict(domain_column="domain", test_domains="sketch", eval_split="validation,test"),
            "at most one --eval-split",
        ),
        (dict(eval_split="test,nope"), "Split 'nope' not in"),
        (dict(domain_column="domain", test_domains="sketch", source_holdout=1.0), r"must lie in \[0, 1\)"),
    ]
    for kwargs, match in cases:
        with pytest.raises(DataError, match=match):
            load_image_dataset(dd, **kwargs)
    only_art = datasets.DatasetDict(train=dd["train"], test=dd["test"].filter(lambda r: r["domain"] == "art"))
    with pytest.raises(DataError, match="Test domain 'photo' has no images in split 'test'"):
        load_image_dataset(only_art, domain_column="domain", test_domains="photo", eval_split="test")
    # the CLI: comma lists, repeated flags, the Hub presets (a domain and a label column)
    args = build_parser("prune").parse_args(
        [
            "prune",
            "--model",
            "m",
            "--dataset",
            "pacs",
            "--output-dir",
            "o",
            "--eval-split",
            "a",
            "--eval-split",
            "b,c",
            "--test-domains",
            "sketch",
        ]
    )
    assert (
        args.eval_split == ["a", "b", "c"] and args.test_domains == ["sketch"] and args.train_domains is None
    )
    assert (PRESETS["pacs"].hub_id, PRESETS["pacs"].domain_column, PRESETS["pacs"].label_column) == (
        "flwrlabs/pacs",
        "domain",
        "label",
    )
    assert (
        PRESETS["office-home"].hub_id == "flwrlabs/office-home"
        and PRESETS["officehome"] is PRESETS["office-home"]
    )


def test_test_domain_only_in_the_eval_split() -> None:
    """docs/data.md's layout: the eval split holds a domain the train split lacks (issue 24: it was refused as
    "unknown domain 'sketch'; the data set's domains are ['art', 'photo']")."""
    dd = _domain_set(eval_split=True)
    dd["train"] = dd["train"].filter(lambda r: r["domain"] != "sketch")
    data = load_image_dataset(dd, domain_column="domain", test_domains="Sketch", eval_split="test")
    assert list(data.evals) == ["sketch", "source"] and data.domains["available"] == list(DOMAINS)
    assert _rows(data.evals["sketch"]) == {r for r in range(20, 30) if r % 2}
    assert _rows(data.evals["source"]) == {r for r in range(20) if r % 2}
    assert _rows(data.train) == {r for r in range(20) if r % 2 == 0}
    assert data.domains["train"] == ["art", "photo"] and data.domains["test"] == ["sketch"]
    # the defaults: test = the eval split's other domains, train = the train split's other domains
    default = load_image_dataset(dd, domain_column="domain", train_domains="art", eval_split="test")
    assert list(default.evals) == ["target", "photo", "sketch", "source"]
    with pytest.raises(DataError, match=r"Train domain\(s\) \['sketch'\] have no images in split 'train'"):
        load_image_dataset(dd, domain_column="domain", train_domains="sketch", eval_split="test")
    with pytest.raises(DataError, match=r"unknown domain 'symbola'.*\['art', 'photo', 'sketch'\]"):
        load_image_dataset(dd, domain_column="domain", test_domains="symbola", eval_split="test")
    # compare --protocol lodo lists its folds the same way
    assert list_domains(dd, domain_column="domain") == ["art", "photo"]
    assert list_domains(dd, domain_column="domain", eval_split="test") == list(DOMAINS)


def _glyph_data(root: Path) -> Path:
    from p3b_hf.demo_data import domain_glyph_dataset

    dd = domain_glyph_dataset(classes="αβγδ", renders_per_font=1, domains=["ink", "outline"])
    dd.save_to_disk(str(root / "glyphs"))
    return root / "glyphs"


def _tiny_model(root: Path, labels: list[str], name: str = "m", **over) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    cfg = ViTConfig(
        **{
            **dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
            ),
            **over,
        },
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={c: i for i, c in enumerate(labels)},
    )
    ViTForImageClassification(cfg).save_pretrained(root / name)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root / name)
    return root / name


_TRAIN = dict(epochs=1, batch_size=16, device="cpu")
_DATA = dict(augment="none", mixup=0.0, cutmix=0.0, domain_column="domain")


def test_prune_and_finetune_report_every_domain_and_the_gap(tmp_path: Path, one_thread: None) -> None:
    """A real global-pruning run on the generated glyph domains (outline held out): every eval set is scored,
    the gap is source - target and its change is against the dense model the method measured."""
    data = _glyph_data(tmp_path)
    model = _tiny_model(
        tmp_path, list("αβγδ")
    )  # the task's labels: no fresh head, the dense model is measured
    from p3b_hf.methods.global_pruning import GlobalOptions

    res = prune(
        PruneJob(
            prune=PruneOptions(model=str(model), method="global", prune_ratio=0.5),
            data=DataOptions(dataset=str(data), test_domains=["outline"], **_DATA),
            output=OutputOptions(output_dir=str(tmp_path / "out")),
            train=TrainOptions(**_TRAIN),
            method_options=GlobalOptions(importance="l1"),
        )
    )
    rep = json.loads((tmp_path / "out" / "pruning_report.json").read_text())
    sets = rep["eval_sets"]
    assert list(sets) == ["outline", "source"] and sets["outline"] == rep["eval"]
    assert (
        sets["outline"]["samples"] == 16 and sets["source"]["samples"] == 4
    )  # 4 fonts x 4 classes; 1 per class
    assert rep["domains"]["train"] == ["ink"] and rep["domains"]["test"] == ["outline"]
    dense = rep["dense_eval_sets"]
    assert list(dense) == ["outline", "source"] and dense["outline"] == rep["dense_eval"]
    gap = rep["domain_gap"]
    assert gap["gap"] == pytest.approx(sets["source"]["accuracy"] - sets["outline"]["accuracy"])
    assert gap["gap_change"] == pytest.approx(
        gap["gap"] - (dense["source"]["accuracy"] - dense["outline"]["accuracy"])
    )
    ctx = res.context  # the pruned model, scored again on the source set, gives the reported number
    from p3b_hf.training import evaluate_accuracy

    assert (
        evaluate_accuracy(res.model, ctx.eval_sets["source"], device="cpu")["accuracy"]
        == sets["source"]["accuracy"]
    )
    assert "eval source" in summarize(rep) and "domain gap        source - outline" in summarize(rep)
    card = build_model_card(tmp_path / "out", "me/x", report=rep)
    assert (
        "## Accuracy per eval set (after pruning)" in card
        and "| outline | held-out domain (never trained on) | 16 |" in card
    )
    assert f"{100 * gap['gap']:+.2f} pp" in card
    hub_card = build_model_card(
        tmp_path / "out", "me/x", report=rep, dataset="pacs"
    )  # a Hub data set: eval metadata
    assert "flwrlabs/pacs" in hub_card and "split: 'held-out domain(s): outline'" in hub_card
    # fine-tuning the pruned model keeps the split and reports its own per-domain numbers
    ft = finetune(
        FinetuneJob(
            finetune=FinetuneOptions(model=str(tmp_path / "out")),
            data=DataOptions(dataset=str(data), test_domains=["outline"], **_DATA),
            output=OutputOptions(output_dir=str(tmp_path / "ft")),
            train=TrainOptions(**_TRAIN),
        )
    )
    fsets = ft.report["finetune"]["eval_sets"]
    assert list(fsets) == ["outline", "source"] and ft.report["finetune"]["domain_gap"][
        "gap"
    ] == pytest.approx(fsets["source"]["accuracy"] - fsets["outline"]["accuracy"])
    assert "(after fine-tuning)" in build_model_card(tmp_path / "ft", "me/x")


def test_lodo_rows_average_exactly() -> None:
    def row(m, acc, src, gap_change, params, status="ok"):
        return {
            "method": m,
            "prune_ratio": 0.5,
            "status": status,
            "accuracy": acc,
            "eval_sets": {"x": acc, "source": src},
            "source_set": "source",
            "gap": src - acc,
            "gap_change": gap_change,
            "params": params,
            "macs": 10,
            "param_reduction": 0.5,
            "throughput_vs_dense": None,
            "wall_time_s": 1.0,
            "error": "too big",
        }

    folds = {"a": [row("g", 0.2, 0.9, 0.1, 100)], "b": [row("g", 0.6, 0.7, -0.3, 110)]}
    (r,) = lodo_rows(folds, ["a", "b"])
    assert r["per_domain"] == {"a": 0.2, "b": 0.6} and r["accuracy"] == pytest.approx(0.4)
    assert r["source_accuracy"] == pytest.approx(0.8) and r["gap"] == pytest.approx(0.4)
    assert r["gap_change"] == pytest.approx(-0.1) and r["params"] == 105 and r["wall_time_s"] == 2.0
    assert "| g | 0.50 | 0.000 | 50.0 % | 20.00 | 60.00 | 40.00 | 80.00 | +40.00 | -10.00 |" in lodo_table(
        [r]
    )
    folds["b"][0]["status"] = "unreachable"
    assert lodo_rows(folds, ["a", "b"])[0]["status"] == "unreachable"
    assert lodo_rows({"a": folds["a"]}, ["a", "b"])[0]["status"] == "incomplete"


def test_compare_lodo_end_to_end_reuses_cells(tmp_path: Path, one_thread: None, capsys) -> None:
    """Two generated domains: one compare per held-out domain (dense + global-l1), averaged; a re-run reuses
    every cell; a finished cell of another fold is refused."""
    data = _glyph_data(tmp_path)
    source = _tiny_model(tmp_path, list("uvwxyz"), "source")  # another task: every cell gets a fresh head
    argv = [
        "compare",
        "--protocol",
        "lodo",
        "--domain-column",
        "domain",
        "--methods",
        "global-l1",
        "--prune-ratio",
        "0.5",
        "--model",
        str(source),
        "--dataset",
        str(data),
        "--output-dir",
        str(tmp_path / "cmp"),
        "--no-bench",
        "--epochs",
        "1",
        *TINY_TRAIN_ARGS,
        "--source-holdout",
        "0.25",
    ]
    assert main(argv) == 0
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert out["protocol"] == "lodo" and out["domains"] == ["ink", "outline"]
    rows = {r["method"]: r for r in out["rows"]}
    for method, cell in (("dense", "dense"), ("global-l1", "global-l1-50")):
        per = {}
        for d in ("ink", "outline"):
            rep = json.loads((tmp_path / "cmp" / d / cell / "pruning_report.json").read_text())
            sets = (rep.get("finetune") or rep)["eval_sets"]
            assert list(sets) == [d, "source"]
            per[d] = sets[d]["accuracy"]
        assert rows[method]["per_domain"] == per and rows[method]["accuracy"] == pytest.approx(
            sum(per.values()) / 2
        )
    assert rows["dense"]["gap_change"] == 0.0
    fold = {
        r["method"]: r for r in json.loads((tmp_path / "cmp" / "ink" / "compare.json").read_text())["rows"]
    }
    assert fold["global-l1"]["gap_change"] == pytest.approx(fold["global-l1"]["gap"] - fold["dense"]["gap"])
    csv_lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in csv_lines[1:]] == ["ink", "outline", "average"] * 2
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| ink (%) | outline (%) | avg (%) | source avg (%) | gap (pp) | Δgap vs dense (pp) |" in table
    assert (tmp_path / "cmp" / "accuracy_vs_params.png").stat().st_size > 1000

    stamp = (tmp_path / "cmp" / "outline" / "global-l1-50" / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0  # re-run: every cell reused
    assert (tmp_path / "cmp" / "outline" / "global-l1-50" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"] == out["rows"]
    shutil.rmtree(tmp_path / "cmp" / "ink" / "global-l1-50")
    shutil.copytree(tmp_path / "cmp" / "outline" / "global-l1-50", tmp_path / "cmp" / "ink" / "global-l1-50")
    assert main(argv) == 2  # a cell that held out another domain is refused before any training
    assert "held out domains ['outline'], but this compare's cell has ['ink']" in capsys.readouterr().err


def test_95_percent_in_prune_and_compare(tmp_path: Path, one_thread: None) -> None:
    """95 %: P3B reaches it when the blocks hold enough of the model and refuses it before training otherwise;
    VBP says why not; global reaches it (parameter budget) and takes channel ratios with --budget channels."""
    data = _glyph_data(tmp_path)
    small = _tiny_model(tmp_path, list("αβγδ"), "small")  # 29 % of its parameters are outside the blocks
    job = PruneJob(
        prune=PruneOptions(model=str(small), method="p3b", prune_ratio=0.95),
        data=DataOptions(dataset=str(data), test_domains=["outline"], **_DATA),
        output=OutputOptions(output_dir=str(tmp_path / "p3b95")),
        train=TrainOptions(**_TRAIN),
    )
    with pytest.raises(BudgetError, match=r"unreachable with P3B.*outside them.*Use --prune-ratio < 0\.7"):
        prune(job)
    assert not (tmp_path / "p3b95").exists() and not (tmp_path / "p3b95.work").exists()
    wide = _tiny_model(
        tmp_path,
        list("αβγδ"),
        "wide",
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=1024,
        num_hidden_layers=3,
    )
    rep = prune(
        PruneJob(
            prune=PruneOptions(model=str(wide), method="p3b", prune_ratio=0.95),
            data=job.data,
            output=OutputOptions(output_dir=str(tmp_path / "wide95")),
            train=TrainOptions(epochs=2, batch_size=4, device="cpu"),
        )
    ).report  # 6 steps: 5 mask updates
    assert abs(rep["achieved_param_reduction"] - 0.95) < 0.01 and list(rep["eval_sets"]) == [
        "outline",
        "source",
    ]
    # compare at 0.95: VBP and the small model's P3B become "unreachable" rows, global runs
    base = dict(model=str(small), prune_ratio="0.95", no_bench=True)
    train = TrainOptions(**_TRAIN)
    data_opts = DataOptions(dataset=str(data), test_domains=["outline"], **_DATA)
    rows = run_compare(
        CompareJob(
            compare=CompareOptions(methods="p3b,vbp,global-random", **base),
            data=data_opts,
            output=OutputOptions(output_dir=str(tmp_path / "cmp")),
            train=train,
        )
    )
    by = {r["method"]: r for r in rows}
    assert by["p3b"]["status"] == "unreachable" and "P3B prunes only the encoder blocks" in by["p3b"]["error"]
    assert by["vbp"]["status"] == "unreachable" and "MLP neurons only" in by["vbp"]["error"]
    assert by["global-random"]["status"] == "ok" and abs(by["global-random"]["param_reduction"] - 0.95) < 0.01
    assert set(by["global-random"]["eval_sets"]) == {"outline", "source"}
    # --budget channels: Torch-Pruning's channel ratio for global cells (the paper's 95 %), refused for others
    rows = run_compare(
        CompareJob(
            compare=CompareOptions(methods="global-random", budget="channels", **base),
            data=data_opts,
            output=OutputOptions(output_dir=str(tmp_path / "ch")),
            train=train,
        )
    )
    plan = json.loads((tmp_path / "ch" / "global-random-95" / "pruning_report.json").read_text())["plan_meta"]
    assert rows[0]["status"] == "ok" and plan["channel_ratio"] == 0.95
    with pytest.raises(P3BError, match="applies to global-\\* cells only, not p3b"):
        run_compare(
            CompareJob(
                compare=CompareOptions(methods="p3b,global-random", budget="channels", **base),
                data=data_opts,
                output=OutputOptions(output_dir=str(tmp_path / "ch2")),
                train=train,
            )
        )


def test_dg_recipes_are_pacs_leave_one_domain_out(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    recipes = sorted((RECIPES / "dg").glob("*.yaml"))
    assert [p.stem for p in recipes] == [
        "deit_small_pacs_lodo",
        "deit_small_pacs_lodo_channels",
        "vit_base_pacs_lodo",
        "vit_base_pacs_lodo_channels",
    ]
    for path in recipes:
        a = _parsed(run.load_recipe(path), "compare", 2, monkeypatch)
        channels = path.stem.endswith("_channels")
        assert (a.protocol, a.dataset, a.domain_column, a.source_holdout) == ("lodo", "pacs", "domain", 0.1)
        assert parse_ratios(a.prune_ratio) == [0.5, 0.75, 0.95] and a.budget == (
            "channels" if channels else "params"
        )
        labels = {s.label for s in parse_methods(a.methods)}
        assert labels == {"global-hessian", "global-taylor", "global-random"} | (
            set() if channels else {"p3b"}
        )
        assert (
            a.model
            == {"deit": "facebook/deit-small-patch16-224", "vit": "google/vit-base-patch16-224"}[
                path.stem.split("_")[0]
            ]
        )
        assert a.batch_size * 2 == 128 and a.epochs == 50 and a.update_every == 20
        assert a.output_dir.endswith(path.stem)
    assert run.main([str(recipes[0]), "--dry-run"]) == 0
    assert "p3b-hf compare --model facebook/deit-small-patch16-224" in capsys.readouterr().out


def test_eval_sets_transform_like_the_primary(tmp_path: Path) -> None:
    from transformers import ViTImageProcessorPil

    data = load_image_dataset(_domain_set(), domain_column="domain", test_domains="photo")
    sets = build_eval_sets(
        data, ViTImageProcessorPil(size={"height": 16, "width": 16}), image_size=16, augment="none"
    )
    assert list(sets) == ["photo", "source"] and sets["photo"][0]["pixel_values"].shape == (3, 16, 16)
    assert domain_gap(
        {"s": {"accuracy": 0.9}, "t": {"accuracy": 0.5}},
        {"s": {"accuracy": 0.8}, "t": {"accuracy": 0.6}},
        source="s",
        target="t",
    )["gap_change"] == pytest.approx(0.2)
    assert domain_gap({"t": {"accuracy": 0.5}}, source=None, target="t") is None
