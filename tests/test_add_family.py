"""A new model family is a config, a modeling file, a record and one registry line (docs/architecture.md, "Add
a model family"): the doc's toy family -- a stock ViT under its own ``model_type`` -- is pruned by VBP and by
grouped global pruning through the generic path (locator, slicer, pruned_config, count_cost, P3B's dims) and
its pruned checkpoint saves and reloads through ``AutoModelForImageClassification``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification, ViTConfig

from p3b_hf import apply_width_plan, count_cost
from p3b_hf.errors import P3BError
from p3b_hf.methods.global_pruning import global_plan
from p3b_hf.methods.p3b.gates import Dims
from p3b_hf.methods.vbp import vbp_plan
from p3b_hf.models.families import families, family_of, register_family, unregister_family
from p3b_hf.models.locator import locate
from p3b_hf.plan import WidthPlan

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=5,
)


def _example() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (example,) = [b for b in blocks if "register_family(FAMILY" in b]
    return example


@pytest.fixture
def toy() -> dict:
    """The doc's toy family, registered for the test and removed afterwards."""
    namespace: dict = {}
    exec(compile(_example(), "docs/architecture.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    yield namespace
    unregister_family("toyvit")


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(4, 3, 32, 32, generator=g),
            "labels": torch.randint(0, 5, (4,), generator=g),
        }
        for _ in range(n)
    ]


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=x).logits


@pytest.mark.parametrize("method", ["vbp", "global"])
def test_the_documented_toy_family_prunes_saves_and_reloads(toy: dict, method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = toy["ToyViTForImageClassification"](toy["ToyViTConfig"](**TINY)).eval()
    fam = family_of(model)
    assert fam is toy["FAMILY"] and family_of(model.config) is fam and fam in families()
    assert locate(model).num_layers == 2 and locate(model).family == "toyvit"
    # P3B's dims and the cost model read the record: the same numbers as the stock ViT of these widths
    assert Dims.from_config(model.config) == Dims.from_config(ViTConfig(**TINY))
    assert count_cost(model) == count_cost(ViTConfig(**TINY))
    assert count_cost(model)["params"] == sum(p.numel() for p in model.parameters())

    batches = _batches()
    if method == "vbp":
        plan = vbp_plan(model, batches, percentage=0.5)
    else:
        plan = global_plan(model, batches, importance="taylor", ratio=0.5, taylor_batches=2)
    pruned = apply_width_plan(model, plan, provenance={"method": method})
    assert type(pruned) is toy["P3BToyViTForImageClassification"]
    assert pruned.config.model_type == "p3b_toyvit"
    assert count_cost(pruned)["params"] == sum(p.numel() for p in pruned.parameters())
    assert count_cost(pruned)["params"] < count_cost(model)["params"]
    x = batches[0]["pixel_values"]
    if method == "vbp":  # 50 % of all MLP neurons kept
        assert sum(plan.kept(i)["mlp"] for i in range(plan.num_layers)) == 64  # half of 2 x 64 neurons
    pruned.save_pretrained(tmp_path / "pruned")
    files = {p.name for p in (tmp_path / "pruned").iterdir()}
    assert files == {"config.json", "model.safetensors"}  # a plug-in family writes no remote-code files
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert type(again) is type(pruned) and again.config.pruning_method == method
    assert torch.equal(_logits(again, x), _logits(pruned, x))


def test_full_width_plan_of_the_toy_family_is_the_same_function(toy: dict) -> None:
    """The record's stock and pruned layouts map the same pieces: a keep-everything plan is exact."""
    torch.manual_seed(1)
    model = toy["ToyViTForImageClassification"](toy["ToyViTConfig"](**TINY)).eval()
    pruned = apply_width_plan(model, WidthPlan.full(model.config))
    x = _batches(1)[0]["pixel_values"]
    assert torch.allclose(_logits(pruned, x), _logits(model, x), atol=1e-5)


def test_a_taken_model_type_is_refused_unless_replaced(toy: dict) -> None:
    """A second family under a registered name is refused with the fix; replace=True says it is meant."""
    from dataclasses import replace

    other = replace(toy["FAMILY"], extras={"note": "a second record"})
    with pytest.raises(P3BError, match="already registered.*replace=True"):
        register_family(other, auto_classes=False)
    assert family_of(toy["ToyViTConfig"](**TINY)) is toy["FAMILY"]
    assert register_family(other, auto_classes=False, replace=True) is other
    assert family_of(toy["ToyViTConfig"](**TINY)) is other
