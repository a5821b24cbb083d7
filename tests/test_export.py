"""``p3b-hf export`` (ONNX + int8, verified), ``bench --onnx``, ``push --with-onnx``, the README example and
every failure mode of the export (one error, nothing left behind). Tiny models, CPU, ~1 min on 2 cores."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort  # noqa: E402  (the dev extra pins it: a missing ONNX stack fails here, not skips)
import onnxscript  # noqa: E402, F401
import pytest
import torch
from conftest import TINY, _randomise  # noqa: E402
from fake_hub import BLOCK_P3B, HubStore, RecordingHfApi, clean_env, run_python, save_pruned_dir  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

import p3b_hf.hub  # noqa: E402
from p3b_hf.cli import main  # noqa: E402
from p3b_hf.errors import CheckpointError  # noqa: E402
from p3b_hf.export import DeploySpeed, ExportError, deploy_module, export_model_dir  # noqa: E402
from p3b_hf.loading import load_model  # noqa: E402

REPO = "p3b-test/tiny-vit-p3b-onnx"


def _dense() -> ViTForImageClassification:
    torch.manual_seed(0)
    return _randomise(ViTForImageClassification(ViTConfig(**TINY)), 0)


def _dataset(path: Path, labels: list[str]) -> Path:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def split(n: int) -> datasets.Dataset:
        imgs = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=labels)})
        return datasets.Dataset.from_dict(
            {"image": imgs, "label": [i % len(labels) for i in range(n)]}, features=feats
        )

    datasets.DatasetDict({"train": split(24), "validation": split(14)}).save_to_disk(str(path))
    return path


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.fixture(scope="module")
def threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, threads) -> dict[str, Path]:
    """A pruned model dir (residual subsets, removed sub-blocks) exported once with int8, eval data and speed."""
    root = tmp_path_factory.mktemp("export")
    dense = _dense()
    dense.save_pretrained(root / "dense")
    model_dir = root / "pruned"
    save_pruned_dir(dense, model_dir)
    labels = [dense.config.id2label[i] for i in range(dense.config.num_labels)]
    data = _dataset(root / "data", labels)
    code = main(
        [
            "export",
            "--model",
            str(model_dir),
            "--quantize",
            "int8",
            "--dataset",
            str(data),
            "--speed",
            "--speed-repeats",
            "1",
            "--dense-model",
            str(root / "dense"),
            "--threads",
            "1",
        ]
    )
    assert code == 0
    return {"root": root, "model": model_dir, "data": data}


def test_export_writes_verified_fp32_and_int8(tiny: dict[str, Path]) -> None:
    onnx_dir = tiny["model"] / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == [
        "export_report.json",
        "model.onnx",
        "model_int8.onnx",
    ]
    assert not [p for p in tiny["model"].iterdir() if p.name.startswith(".")]  # no staging dirs left
    report = json.loads((onnx_dir / "export_report.json").read_text())
    assert report["schema"] == "p3b_hf.export/1" and report["fold"] == "all" and report["opset"] == 20
    assert report["residual_index_ops"] == {"gathers": 0, "scatter_adds": 0}  # folded away
    assert report["verification"]["fp32_vs_torch"]["max_abs_diff"] <= 1e-4
    assert "eval images" in report["verification"]["inputs"]
    assert report["int8"]["mode"] == "dynamic"
    acc = report["accuracy"]
    assert acc["samples"] == 14 and acc["onnx_fp32"] == acc["torch"]
    assert acc["int8_minus_fp32_points"] == pytest.approx(100 * (acc["onnx_int8"] - acc["onnx_fp32"]))
    speed = report["speed"]
    assert speed["backend"] == "onnxruntime" and speed["batch_size"] == 1 and speed["threads"] == 1
    assert speed["deploy_speed_vs_dense"] > 0 and all(v > 0 for v in speed["images_per_s"].values())
    assert "pruned/ort-int8" in speed["images_per_s"]
    # fresh images: ONNX Runtime == PyTorch (fp32), int8 close
    model = load_model(str(tiny["model"])).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(pixel_values=x).logits.numpy()
    fp32 = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(onnx_dir / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    # a dynamic batch axis by default (as optimum exports): batch 1 and batch 3 run and match PyTorch
    assert report["batch"] == "dynamic" and report["input"]["shape"][0] == "batch"
    assert isinstance(fp32.get_inputs()[0].shape[0], str) and isinstance(int8.get_inputs()[0].shape[0], str)
    got = np.concatenate([fp32.run(None, {"pixel_values": x[i : i + 1].numpy()})[0] for i in range(3)])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)  # batch 1, three times
    np.testing.assert_allclose(fp32.run(None, {"pixel_values": x.numpy()})[0], ref, atol=1e-4, rtol=1e-4)
    q = int8.run(None, {"pixel_values": x.numpy()})[0]  # batch 3
    assert q.shape == ref.shape and np.abs(q - ref).max() < 0.1 * np.abs(ref).max()
    assert speed["dense_source"] == "dense"  # the dense original given with --dense-model, by name
    meta = {p.key: p.value for p in __import__("onnx").load(str(onnx_dir / "model.onnx")).metadata_props}
    assert meta["p3b_hf.fold"] == "all" and json.loads(meta["id2label"])["0"] == "LABEL_0"


def test_readme_example_runs_without_p3b_hf(tiny: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Deploy: ONNX export", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        tmp_path / "cat.jpg"
    )
    code = code.replace("runs/deit-s-p3b-75", str(tiny["model"]))
    out = run_python(
        BLOCK_P3B + "import torch, sys\nsys.modules['torch'] = None\n" + code,
        cwd=tmp_path,
        env=clean_env(tmp_path / "hf", HF_HUB_OFFLINE="1"),
    )
    assert out.strip() in {f"LABEL_{i}" for i in range(7)}


def test_padded_model_dynamic_batch_and_static_int8(tiny: dict[str, Path], tmp_path: Path) -> None:
    from p3b_hf.checkpoints import save_model_dir
    from p3b_hf.padding import pad_widths

    pruned = load_model(str(tiny["model"])).eval()
    padded_dir = tmp_path / "padded"  # as `p3b-hf prune --pad-to 8` saves it
    save_model_dir(pad_widths(pruned, 8), padded_dir)
    shutil.copy(tiny["model"] / "preprocessor_config.json", padded_dir)
    res = export_model_dir(
        padded_dir,
        static_batch=2,
        calibration_dataset=str(tiny["data"]),
        calibration_samples=8,
        log=lambda s: None,
    )
    assert res.report["int8"]["mode"] == "static" and res.report["int8"]["calibration_samples"] == 8
    assert "train split" in res.report["int8"]["calibration"]
    sess = ort.InferenceSession(str(padded_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(padded_dir / "onnx" / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [2, 3, 32, 32]  # --static-batch 2: that one batch size
    assert res.report["batch"] == 2 and res.report["input"]["shape"] == [2, 3, 32, 32]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = pruned(pixel_values=x).logits.numpy()  # the unpadded model: padding is exact
    np.testing.assert_allclose(sess.run(None, {"pixel_values": x.numpy()})[0], ref, atol=1e-4, rtol=1e-4)
    assert q.run(None, {"pixel_values": x.numpy()})[0].shape == ref.shape
    with pytest.raises(Exception, match="(?i)dimension|shape|index"):  # a static graph takes no other batch
        sess.run(None, {"pixel_values": x[:1].numpy()})


def test_unfolded_graph_exports_exactly(tiny: dict[str, Path], tmp_path: Path) -> None:
    res = export_model_dir(
        tiny["model"], output_dir=tmp_path / "nofold", fold="none", opset=23, log=lambda s: None
    )
    assert (
        res.report["residual_index_ops"]["gathers"] > 0
        and res.report["residual_index_ops"]["scatter_adds"] > 0
    )
    assert res.report["verification"]["fp32_vs_torch"]["max_abs_diff"] <= 1e-4
    pruned = load_model(str(tiny["model"])).eval()
    hf = deploy_module(pruned, graph="hf")  # the HF module as is (a copy: tracing must not touch the model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(hf(x), pruned(pixel_values=x).logits)


def test_failures_give_one_error_and_leave_nothing(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "m"
    shutil.copytree(tiny["model"], work)
    before = {p: (work / p).read_bytes() for p in _listing(work) if (work / p).is_file()}

    def fails(argv: list[str], match: str) -> None:
        capsys.readouterr()
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("p3b-hf")]  # (besides progress bars)
        assert (
            len(lines) == 1 and lines[0].startswith("p3b-hf export: error:") and re.search(match, lines[0])
        ), err
        assert "Traceback" not in err
        after = {p: (work / p).read_bytes() for p in _listing(work) if (work / p).is_file()}
        assert after == before  # the previous export is untouched, no staging dir left

    # a tolerance failure: verification fails -> nothing written, the existing export is kept
    fails(
        ["--model", str(work), "--tolerance", "1e-12", "--quantize", "int8"],
        r"disagrees with PyTorch.*nothing was written",
    )
    # a bad static batch; --speed without a loadable dense original: refused before any export work
    fails(["--model", str(work), "--static-batch", "0"], r"--static-batch 0 must be >= 1")
    fails(["--model", str(work), "--speed"], r"records no dense original.*--dense-model")
    # not a p3b_hf model dir
    dense_dir = tmp_path / "dense"
    _dense().save_pretrained(dense_dir)
    fails(["--model", str(dense_dir)], r"not a p3b_hf pruned model \(model_type 'vit'\)")
    assert not (dense_dir / "onnx").exists()
    fails(["--model", str(tmp_path / "nowhere")], "does not exist")
    # unwritable target: below a file (fails for root too), and a read-only dir where permissions apply
    (tmp_path / "a_file").write_text("x")
    fails(["--model", str(work), "--output-dir", str(tmp_path / "a_file" / "onnx")], "Cannot write")
    fails(["--model", str(work), "--output-dir", str(tmp_path / "a_file")], "is a file")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        shutil.copytree(work, ro)
        shutil.rmtree(ro / "onnx")
        ro.chmod(0o555)
        try:
            assert main(["export", "--model", str(ro)]) == 2
            assert "Cannot write" in capsys.readouterr().err and not (ro / "onnx").exists()
        finally:
            ro.chmod(0o755)
    # onnxruntime missing: the install hint
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    fails(["--model", str(work)], r'onnxruntime.*pip install -e "\.\[onnx\]" in your p3b_hf checkout')
    with pytest.raises(ExportError, match="pip install"):
        DeploySpeed(_dense(), backend="onnxruntime")
    assert DeploySpeed(_dense()).backend == "fast"  # auto falls back to optimize_for_inference


def test_push_with_onnx_uploads_the_files_and_says_so(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HubStore(tmp_path / "hub")
    apis: list[RecordingHfApi] = []
    monkeypatch.setattr(p3b_hf.hub, "HfApi", lambda: apis.append(RecordingHfApi(store)) or apis[-1])
    assert main(["push", "--model", str(tiny["model"]), "--repo-id", REPO, "--with-onnx"]) == 0
    files = set(apis[0].calls[-1]["files"])
    assert {
        "onnx/model.onnx",
        "onnx/model_int8.onnx",
        "onnx/export_report.json",
        "model.safetensors",
    } <= files
    from fake_hub import snapshot_bytes

    hub = snapshot_bytes(store, REPO)
    assert hub["onnx/model.onnx"] == (tiny["model"] / "onnx" / "model.onnx").read_bytes()
    card = hub["README.md"].decode()
    assert "## ONNX (deployable artefact)" in card and "`onnx/model_int8.onnx` | int8 (dynamic)" in card
    assert "dynamic batch axis (any batch size)" in card
    assert (
        "this model, deployable (onnxruntime)" in card
        and f'hf_hub_download("{REPO}", "onnx/model.onnx")' in card
    )
    # without --with-onnx nothing of onnx/ goes up; with it but no export: one error, nothing pushed
    assert main(["push", "--model", str(tiny["model"]), "--repo-id", REPO]) == 0
    assert not [f for f in apis[-1].calls[-1]["files"] if f.startswith("onnx/")]
    bare = tmp_path / "bare"
    shutil.copytree(tiny["model"], bare, ignore=shutil.ignore_patterns("onnx"))
    with pytest.raises(CheckpointError, match="run `p3b-hf export --model"):
        p3b_hf.hub.push_pruned(bare, REPO, api=RecordingHfApi(store), with_onnx=True)


def test_bench_onnx_structure(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--onnx",
                "--model",
                str(tiny["model"]),
                "--threads",
                "1",
                "--repeats",
                "1",
                "--warmup",
                "1",
                "--min-repeat-s",
                "0",
                "--onnx-batch-sizes",
                "1,2",
                "--dense-model",
                str(tiny["root"] / "dense"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "best deployable pruned artefact" in capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["schema"] == "p3b_hf.bench_onnx/1" and rep["env"]["threads"] == 1 and rep["env"]["onnxruntime"]
    rows = {(r["model"], r["variant"], r["batch_size"]) for r in rep["results"]}
    assert rows == {
        (m, v, b)
        for m in ("pruned", "dense")
        for v in ("eager", "fast", "ort-fp32", "ort-int8")
        for b in (1, 2)
    }
    assert all(r["images_per_s"] > 0 for r in rep["results"])
    for b in ("1", "2"):
        assert rep["ratios"][b]["vs_dense_eager"]["dense/eager"] == pytest.approx(1.0)
        assert set(rep["ratios"][b]["vs_dense_same"]) == {"eager", "fast", "ort-fp32", "ort-int8"}
        assert rep["ratios"][b]["best_pruned_deployable"]["vs_dense_eager"] > 0
    assert (
        rep["checks"]["pruned/ort-fp32"]["max_abs_diff"] < 1e-4
        and rep["checks"]["dense/ort-fp32"]["max_abs_diff"] < 1e-4
    )
    dense = ["--dense-model", str(tiny["root"] / "dense")]
    assert (
        main(["bench", "--onnx", "--model", str(tiny["model"]), *dense, "--variants", "eager,ort-fp16"]) == 2
    )
    assert "Unknown ONNX bench variant 'ort-fp16'" in capsys.readouterr().err


def test_deploy_speed_fast_backend(threads) -> None:
    from p3b_hf import WidthPlan, apply_width_plan

    dense = _dense()
    plan = WidthPlan.full(dense.config)
    plan.layers[0].mlp = list(range(40))
    sp = DeploySpeed(dense, backend="fast", repeats=1, min_repeat_s=0.0, warmup=1).measure(
        apply_width_plan(dense, plan)
    )
    assert sp["backend"] == "fast" and sp["deploy_speed_vs_dense"] > 0 and sp["eager_speed_vs_dense"] > 0


@pytest.mark.parametrize(
    "family",
    [
        "tiny_beit",
        "tiny_dinov2",
        "tiny_dinov2_registers",
        "tiny_ijepa",
        "tiny_dinov2_swiglu",
        "swin",
        "convnext",
        "tiny_clip",
        "tiny_siglip",
    ],
)
def test_other_families_export_their_hf_module(
    family: str, request: pytest.FixtureRequest, tmp_path: Path, threads
) -> None:
    """BEiT / DINOv2 / Swin / ConvNeXt have no optimize_for_inference rewrite: the export is their pruned HF
    module, verified the same way (ragged widths; BEiT / DINOv2: residual subsets, a removed MLP, the relative
    bias / layer scale sliced; Swin: fewer heads and head dims per block, its bias table sliced)."""
    import test_families
    import test_stage_families

    from p3b_hf import apply_width_plan
    from p3b_hf.checkpoints import save_model_dir
    from p3b_hf.export import ExportOptions, export

    if family.startswith("tiny_"):
        dense = request.getfixturevalue(family).eval()
        plan = test_families._random_plan(dense, 3)
        plan.layers[1].mlp = []
    else:
        dense = test_stage_families.tiny(family)
        plan = test_stage_families._random_plan(dense, 3)
    pruned = apply_width_plan(dense, plan)
    model_dir = save_model_dir(pruned, tmp_path / "pruned", plan=plan)
    res = export(ExportOptions(model=str(model_dir), threads=1, quantize="int8"), log=lambda s: None)
    report = res.report
    assert report["graph"] == "hf" and report["residual_index_ops"] == {}
    assert report["verification"]["fp32_vs_torch"]["max_abs_diff"] <= 1e-4
    # the int8 model is written and verified too (finite, close to fp32 on these random weights)
    q = report["verification"]["int8_vs_fp32"]
    assert (model_dir / "onnx" / "model_int8.onnx").exists() and 0 < q["max_abs_diff"] < 0.5
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    sess = ort.InferenceSession(str(model_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = pruned(pixel_values=x).logits.numpy()
    got = np.concatenate([sess.run(None, {"pixel_values": x[i : i + 1].numpy()})[0] for i in range(2)])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)  # batch 1
    np.testing.assert_allclose(sess.run(None, {"pixel_values": x.numpy()})[0], ref, atol=1e-4, rtol=1e-4)
