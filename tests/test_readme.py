"""Every ``python`` code block of the README runs as written.

The README names what its examples assume (``model``, ``train``, ``val``, ``training_args``,
``pixel_values``, ``model_dir``, ``data_dir``); this test provides tiny real versions of them, and the Hub
ids the examples load (``me/deit-s-p3b`` ...) are real repositories in the offline Hugging Face cache,
read through the real ``from_pretrained`` (no mocks). Each block runs in its own namespace, in a fresh
working directory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from p3b_tiny_run import synthetic_dataset, tiny_model, training_args
from test_recipes import _tiny_data, _tiny_dense

ROOT = Path(__file__).resolve().parents[1]
#: the ONNX inference example runs in tests/test_export.py::test_readme_example_runs_without_p3b_hf instead,
#: on a real export and with torch and p3b_hf blocked (what it claims)
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    if "onnxruntime" not in b
]
HUB_IDS = ("me/deit-s-p3b", "me/deit-s-c100-p3b50")


def _put_in_hub_cache(repo_id: str, model_dir: Path) -> None:
    """``model_dir``'s files as the ``main`` revision of ``repo_id`` in the local Hub cache (the layout
    ``huggingface_hub`` writes when it downloads; offline loads read it)."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    if snapshot.exists():
        return
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import p3b_hf
    from p3b_hf.checkpoints import save_model_dir

    root = tmp_path_factory.mktemp("readme")
    model = tiny_model("vit")
    plan = p3b_hf.WidthPlan.full(model.config)
    plan.layers[0].mlp = list(range(64))
    pruned_dir = save_model_dir(p3b_hf.apply_width_plan(model, plan), root / "pruned", plan=plan)
    for repo_id in HUB_IDS:
        _put_in_hub_cache(repo_id, pruned_dir)
    data_dir = _tiny_data(root)
    model_dir, _ = _tiny_dense(root)
    ds = synthetic_dataset(64)
    return {
        "model": model,
        "train": ds,
        "val": ds.select(range(16)),
        "data_dir": str(data_dir),
        "training_args": training_args(
            str(root / "trainer"), num_train_epochs=4, per_device_train_batch_size=16
        ),
        "pixel_values": torch.randn(2, 3, 32, 32),
        "model_dir": str(model_dir),
    }


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, names: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = {k: (v if not isinstance(v, torch.nn.Module) else _copy(v)) for k, v in names.items()}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)  # noqa: S102


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)
