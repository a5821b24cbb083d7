"""The HF model contract of every pruned class, checked against the stock class it replaces.

A full-width pruned model (``apply_width_plan`` with the identity plan) must behave like the stock model
on each entry point a new user tries: ``AutoModel`` (the backbone), ``pipeline("image-classification")``
and ``pipeline("image-feature-extraction")``, hidden states, attention weights (eager and sdpa
selectable), ``return_dict=False``, gradient checkpointing, ``interpolate_pos_encoding`` at another
resolution and bf16 loading. Families: ViT, DeiT, BEiT, DINOv2 (tiny random-init stock models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline

import p3b_hf
from p3b_hf import WidthPlan, apply_width_plan
from p3b_hf.models.families import family_of, flat_config

FAMILIES = [
    "tiny_vit",
    "tiny_deit",
    "tiny_beit",
    "tiny_beit_shared",
    "tiny_dinov2",
    "tiny_dinov2_registers",
    "tiny_ijepa",
    "tiny_clip",
    "tiny_siglip",
]
#: entry points that do not depend on BEiT's bias layout run on one BEiT variant only (CI time)
MAIN = ["tiny_vit", "tiny_deit", "tiny_beit", "tiny_dinov2", "tiny_dinov2_registers", "tiny_ijepa"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _stock_base_class(model: torch.nn.Module) -> type:
    """The stock backbone class of a stock classifier (what ``AutoModel`` loads from its checkpoint)."""
    return type(getattr(model, family_of(model).prefix))


def _processor(size: int, family: str):  # noqa: ANN202
    from transformers import ViTImageProcessorPil

    mean = (0.5, 0.5, 0.5) if family != "tiny_dinov2" else (0.485, 0.456, 0.406)
    return ViTImageProcessorPil(
        size={"height": size, "width": size}, image_mean=mean, image_std=(0.5, 0.5, 0.5)
    )


@pytest.fixture
def saved(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """(stock model, stock dir, full-width pruned model, pruned dir), both dirs with an image processor."""
    stock = request.getfixturevalue(request.param).eval()
    pruned = apply_width_plan(stock, WidthPlan.full(stock.config)).eval()
    proc = _processor(int(flat_config(stock.config).image_size), request.param)
    stock_dir, pruned_dir = tmp_path / "stock", tmp_path / "pruned"
    for model, d in ((stock, stock_dir), (pruned, pruned_dir)):
        model.save_pretrained(d)
        proc.save_pretrained(d)
    return stock, stock_dir, pruned, pruned_dir


def _images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("saved", FAMILIES, indirect=True)
def test_automodel_loads_the_backbone(saved, images: torch.Tensor) -> None:  # noqa: ANN001
    stock, stock_dir, pruned, pruned_dir = saved
    ours = AutoModel.from_pretrained(pruned_dir).eval()
    assert type(ours).__name__.startswith("P3B") and type(ours).__name__.endswith("Model")
    assert sum(p.numel() for p in ours.parameters()) + sum(
        p.numel() for n, p in pruned.named_parameters() if not n.startswith(pruned.base_model_prefix + ".")
    ) == sum(p.numel() for p in pruned.parameters())
    kwargs = (
        {"add_pooling_layer": False} if _stock_base_class(stock).__name__ in ("ViTModel", "DeiTModel") else {}
    )
    theirs = _stock_base_class(stock).from_pretrained(stock_dir, **kwargs).eval()
    with torch.no_grad():
        a, b = ours(pixel_values=images), theirs(pixel_values=images)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    if b.pooler_output is not None and a.pooler_output is not None:  # BEiT mean pooling, DINOv2 CLS
        assert torch.equal(a.pooler_output, b.pooler_output)
    # no trained pooler in a ViT / DeiT / I-JEPA classifier checkpoint; SigLIP's MAP head (the stock
    # pooler_output) is never read by its classifier and is left out of the pruned format
    assert (a.pooler_output is None) == (type(stock).__name__.startswith(("ViT", "DeiT", "IJepa", "Siglip")))


@pytest.mark.parametrize("saved", MAIN, indirect=True)
def test_pipelines_match_the_stock_model(saved) -> None:  # noqa: ANN001
    stock, stock_dir, pruned, pruned_dir = saved
    imgs = _images(2, int(stock.config.image_size))
    cls_ours = pipeline("image-classification", model=str(pruned_dir), device="cpu")(imgs, top_k=3)
    cls_theirs = pipeline("image-classification", model=str(stock_dir), device="cpu")(imgs, top_k=3)
    assert [[d["label"] for d in r] for r in cls_ours] == [[d["label"] for d in r] for r in cls_theirs]
    np.testing.assert_allclose(
        [[d["score"] for d in r] for r in cls_ours],
        [[d["score"] for d in r] for r in cls_theirs],
        rtol=0,
        atol=1e-6,
    )
    feat_ours = pipeline("image-feature-extraction", model=str(pruned_dir), device="cpu")(imgs)
    feat_theirs = pipeline("image-feature-extraction", model=str(stock_dir), device="cpu")(imgs)
    assert np.array(feat_ours).shape == np.array(feat_theirs).shape
    np.testing.assert_array_equal(np.array(feat_ours), np.array(feat_theirs))


@pytest.mark.parametrize("saved", FAMILIES, indirect=True)
def test_hidden_states_attentions_and_tuples(saved, images: torch.Tensor) -> None:  # noqa: ANN001
    stock, stock_dir, pruned, pruned_dir = saved
    eager_stock = type(stock).from_pretrained(stock_dir, attn_implementation="eager").eval()
    eager_ours = AutoModelForImageClassification.from_pretrained(
        pruned_dir, attn_implementation="eager"
    ).eval()
    assert eager_ours.config._attn_implementation == "eager"
    assert pruned.config._attn_implementation == "sdpa"
    with torch.no_grad():
        ref = eager_stock(pixel_values=images, output_hidden_states=True, output_attentions=True)
        for model in (eager_ours, pruned):  # sdpa models compute the weights eagerly when asked for them
            out = model(pixel_values=images, output_hidden_states=True, output_attentions=True)
            n = flat_config(stock.config).num_hidden_layers  # (CLIP: the nested config's vision tower)
            assert len(out.hidden_states) == len(ref.hidden_states) == n + 1
            assert len(out.attentions) == len(ref.attentions) == n
            for a, b in zip(out.hidden_states, ref.hidden_states):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            for a, b in zip(out.attentions, ref.attentions):
                assert a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
                torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
        # eager and sdpa are the same function
        torch.testing.assert_close(
            eager_ours(pixel_values=images).logits, pruned(pixel_values=images).logits, rtol=0, atol=1e-5
        )
        assert torch.equal(eager_ours(pixel_values=images).logits, eager_stock(pixel_values=images).logits)
        as_tuple = pruned(pixel_values=images, return_dict=False)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], stock(pixel_values=images).logits)


@pytest.mark.parametrize("saved", MAIN, indirect=True)
def test_gradient_checkpointing_gives_the_same_gradients(saved, images: torch.Tensor) -> None:  # noqa: ANN001
    stock, stock_dir, pruned, pruned_dir = saved
    labels = torch.tensor([0, 1, 2])

    def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        torch.manual_seed(0)
        model(pixel_values=images, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(pruned)
    pruned.gradient_checkpointing_enable()
    assert pruned.is_gradient_checkpointing
    checkpointed = grads(pruned)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for n in plain:
        torch.testing.assert_close(plain[n], checkpointed[n], rtol=0, atol=1e-6)
    pruned.gradient_checkpointing_disable()
    stock.gradient_checkpointing_enable()
    torch.testing.assert_close(
        grads(stock)["classifier.weight"], plain["classifier.weight"], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("saved", FAMILIES, indirect=True)
def test_other_resolution_with_interpolate_pos_encoding(saved) -> None:  # noqa: ANN001
    stock, _, pruned, _ = saved
    big = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = pruned(pixel_values=big, interpolate_pos_encoding=True)
        # stock DINOv2 always interpolates (no flag); ours accepts the flag for every family
        flag = {} if stock.base_model_prefix.startswith("dinov2") else {"interpolate_pos_encoding": True}
        theirs = stock(pixel_values=big, **flag)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=1e-5)
    assert not torch.equal(ours.logits[0], ours.logits[1])


@pytest.mark.parametrize("saved", MAIN, indirect=True)
def test_bf16_loading(saved, images: torch.Tensor) -> None:  # noqa: ANN001
    stock, stock_dir, pruned, pruned_dir = saved
    bf16 = AutoModelForImageClassification.from_pretrained(pruned_dir, dtype=torch.bfloat16).eval()
    assert next(bf16.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        logits = bf16(pixel_values=images).logits  # float32 pixels are cast by the patch embedding
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), pruned(pixel_values=images).logits, rtol=0.05, atol=0.1)


@pytest.mark.parametrize(
    "fixture", ["tiny_vit", "tiny_beit", "tiny_dinov2", "tiny_ijepa"]
)  # DeiT: the ViT code
def test_torch_export(fixture: str, request: pytest.FixtureRequest, images: torch.Tensor) -> None:
    from fake_hub import nontrivial_plan

    """A really pruned model (channel subsets: index tensors) exports; exporting leaves it usable in eager mode,
    in both orders (the lazily cached index tensors never hold a tracer's fake tensor)."""
    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, nontrivial_plan(model.config)).eval()
    with torch.no_grad():
        ref = pruned(pixel_values=images).logits
        exported = torch.export.export(pruned, (), {"pixel_values": images})
        torch.testing.assert_close(exported.module()(pixel_values=images).logits, ref)
        fresh = apply_width_plan(model, nontrivial_plan(model.config)).eval()  # export first, then eager
        torch.export.export(fresh, (), {"pixel_values": images})
        torch.testing.assert_close(fresh(pixel_values=images).logits, ref, rtol=0, atol=0)


def test_pruned_backbone_equals_the_classifier_features(
    tiny_vit, images: torch.Tensor, tmp_path: Path
) -> None:  # noqa: ANN001
    """On a really pruned model, AutoModel gives the features the pruned classifier reads."""
    from fake_hub import nontrivial_plan

    pruned = apply_width_plan(tiny_vit, nontrivial_plan(tiny_vit.config)).eval()
    pruned.save_pretrained(tmp_path)
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(backbone, p3b_hf.P3BViTModel)
    with torch.no_grad():
        feats = backbone(pixel_values=images).last_hidden_state
        torch.testing.assert_close(
            pruned.classifier(feats[:, 0]), pruned(pixel_values=images).logits, rtol=0, atol=0
        )


def _grads(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter gradients of one training step (dropout / drop path seeded)."""
    model.train()
    model.zero_grad()
    torch.manual_seed(0)
    model(pixel_values=images, labels=torch.tensor([0, 1, 2])).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fixture", FAMILIES)
def test_reentrant_gradient_checkpointing_on_a_pruned_model(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})`` (the torch
    checkpoint that takes positional arguments only) on a really pruned model (a removed attention and a
    removed MLP sub-block included) gives the gradients of the plain forward -- every parameter's, BEiT's shared
    relative position bias table's too -- and so does the default (non-reentrant) checkpointing."""
    from fake_hub import nontrivial_plan

    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, nontrivial_plan(model.config))
    plain = _grads(pruned, images)
    assert len(plain) > 10
    if fixture == "tiny_beit_shared":
        assert plain["beit.encoder.relative_position_bias.relative_position_bias_table"].abs().sum() > 0
    for reentrant in (True, False):
        pruned.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        checkpointed = _grads(pruned, images)
        pruned.gradient_checkpointing_disable()
        assert checkpointed.keys() == plain.keys(), reentrant
        for n in plain:
            torch.testing.assert_close(checkpointed[n], plain[n], rtol=0, atol=1e-6, msg=f"{n} {reentrant}")


@pytest.mark.parametrize(
    "fixture", ["tiny_vit", "tiny_beit", "tiny_dinov2", "tiny_ijepa"]
)  # DeiT: the ViT code
def test_attention_maps_of_a_pruned_model(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """``output_attentions=True`` gives one tensor per layer, ``[batch, kept heads, tokens, tokens]``; a layer
    whose attention sub-block was removed kept 0 heads: ``[batch, 0, tokens, tokens]`` (docs/hf_contract.md)."""
    from fake_hub import nontrivial_plan

    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, nontrivial_plan(model.config)).eval()
    with torch.no_grad():
        out = pruned(pixel_values=images, output_attentions=True)
        as_tuple = pruned(pixel_values=images, output_attentions=True, return_dict=False)
    n = 16 + p3b_hf.locate(model).num_special_tokens  # 16 patches + CLS (I-JEPA: none)
    heads = pruned.config.layer_num_heads
    assert heads == [3, 4, 0]  # layer 2: attention removed
    assert len(out.attentions) == pruned.config.num_hidden_layers
    for kept, a in zip(heads, out.attentions):
        assert isinstance(a, torch.Tensor) and a.shape == (3, kept, n, n) and a.dtype == torch.float32
        if kept:
            torch.testing.assert_close(a.sum(-1), torch.ones(3, kept, n))
    assert [tuple(a.shape) for a in as_tuple[-1]] == [tuple(a.shape) for a in out.attentions]


@pytest.mark.parametrize("fixture", ["tiny_vit", "tiny_beit", "tiny_dinov2", "tiny_ijepa"])
def test_peft_lora_on_a_model_with_removed_sub_blocks(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """peft LoRA with ``target_modules`` naming the Linears of the family (``dense``; DINOv2's MLP: ``fc1``,
    ``fc2``) wraps every match -- the constant left of a removed sub-block too (an ``nn.Linear`` with 0 inputs,
    whose adapter adds exactly 0) -- trains, and merges back to the same function."""
    peft = pytest.importorskip("peft")
    from fake_hub import nontrivial_plan

    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, nontrivial_plan(model.config)).eval()
    with torch.no_grad():
        ref = pruned(pixel_values=images).logits
    targets = ["dense", "fc1", "fc2"] if fixture == "tiny_dinov2" else ["dense"]
    lora = peft.get_peft_model(pruned, peft.LoraConfig(r=4, target_modules=targets, init_lora_weights=True))
    wrapped = [n for n, m in lora.named_modules() if isinstance(m, peft.tuners.lora.Linear)]
    removed = "encoder.layer.2.attention.output.dense"  # the removed attention's constant
    assert any(n.endswith(removed) for n in wrapped), wrapped
    with torch.no_grad():  # B = 0 at init: the adapted model is the pruned one
        torch.testing.assert_close(lora(pixel_values=images).logits, ref, rtol=0, atol=1e-6)
    lora.train()
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        lora(pixel_values=images, labels=torch.tensor([0, 1, 2])).loss.backward()
        opt.step()
    lora.eval()
    with torch.no_grad():
        tuned = lora(pixel_values=images).logits
        assert not torch.allclose(tuned, ref)
        merged = lora.merge_and_unload()
        torch.testing.assert_close(merged(pixel_values=images).logits, tuned, rtol=1e-5, atol=1e-5)


def test_the_contract_table_is_true(tmp_path: Path) -> None:
    """The cheap rows of docs/hf_contract.md's table, re-run on a tiny pruned and stock model of every family by
    scripts/hf_contract_matrix.py (the script builds the whole table), equal the documented cells."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "hf_contract_matrix", root / "scripts" / "hf_contract_matrix.py"
    )
    matrix = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = matrix  # (its dataclass looks the module up)
    spec.loader.exec_module(matrix)
    documented = {}
    for line in (root / "docs" / "hf_contract.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 1 + len(matrix.FAMILIES):
            documented[cells[0]] = cells[1:]
    assert documented.pop("entry point") == list(matrix.FAMILIES)
    assert set(documented) == {title for title, _ in matrix.CHECKS.values()}
    cheap = ["attentions", "attentions-eager", "hidden-states", "checkpointing-reentrant", "bf16"]
    for family in matrix.FAMILIES:
        cases = matrix.build(tmp_path, family)
        for key in cheap:
            title, fn = matrix.CHECKS[key]
            got = matrix.cell(*(matrix.run_check(fn, cases[v])[0] for v in ("pruned", "stock")))
            assert got == documented[title][matrix.FAMILIES.index(family)], (family, key)
