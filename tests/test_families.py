"""BEiT and DINOv2 on the WidthPlan -> slice path: the same exactness guarantees as ViT/DeiT.

Stock tiny random-init models (``tests/conftest.py``: BEiT with per-layer relative position bias + mean
pooling, BEiT with a shared table + absolute positions + mask token + CLS pooling, DINOv2), every layer
scale, bias table, norm and token randomised so a wrongly sliced tensor changes the logits.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from masking import masked_forward
from transformers import AutoModelForImageClassification

import p3b_hf
from p3b_hf import UnsupportedModelError, WidthPlan, apply_width_plan, count_cost
from p3b_hf.models.families import FAMILIES, prunable

NEW = [
    "tiny_beit",
    "tiny_beit_shared",
    "tiny_dinov2",
    "tiny_dinov2_registers",
    "tiny_ijepa",
    "tiny_dinov2_swiglu",
    "tiny_clip",
    "tiny_siglip",
]
pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def _numel(model: torch.nn.Module) -> int:
    """Parameters the classifier runs (SigLIP's stock MAP head, never read, is left out of the pruned format)."""
    fam = p3b_hf.models.family_of(model)
    unread = fam.extras.get("unread_stock_params", ()) if fam is not None else ()
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(tuple(unread)))


def _random_plan(
    model: torch.nn.Module, seed: int, *, subsets: bool = True, removals: bool = False
) -> WidthPlan:
    """Random kept head dims, heads, MLP neurons and (optionally) residual read/write subsets."""
    rng = random.Random(seed)
    plan = WidthPlan.full(model.config)
    c, h, d, f = plan.hidden_size, plan.num_attention_heads, plan.head_dim, plan.intermediate_size
    lo = 0 if removals else 1
    for lp in plan.layers:
        lp.head_dims = sorted(rng.sample(range(d), rng.randint(lo, d)))
        lp.heads = sorted(rng.sample(range(h), rng.randint(1, h)))
        lp.mlp = sorted(rng.sample(range(f), rng.randint(lo, f)))
        if subsets:
            for name in ("attn_in", "attn_out", "mlp_in", "mlp_out"):
                if rng.random() < 0.7:
                    setattr(lp, name, sorted(rng.sample(range(c), rng.randint(lo, c))))
    return plan


@pytest.mark.parametrize("fixture", NEW)
def test_identity_plan_is_bit_identical(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(model, WidthPlan.full(model.config))
    assert type(pruned) is FAMILIES[model.base_model_prefix].model_class
    assert torch.equal(_logits(pruned, images), _logits(model, images))
    assert _numel(pruned) == _numel(model) == count_cost(model)["params"] == count_cost(pruned)["params"]
    # layer scales kept under their stock names (the families that have them)
    assert any("lambda" in k for k in pruned.state_dict()) == FAMILIES[model.base_model_prefix].layer_scale(
        model.config
    )


@pytest.mark.parametrize("fixture", NEW)
@pytest.mark.parametrize("seed", [0, 1])
def test_slicing_equals_masking(
    fixture: str, seed: int, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """Kept head dims, heads (their relative position bias columns), MLP neurons and residual read/write
    subsets (layer scale sliced with the written channels) == the dense model with the rest zero-masked."""
    model = request.getfixturevalue(fixture)
    plan = _random_plan(model, seed)
    pruned = apply_width_plan(model, plan)
    ref = masked_forward(model, plan, images)
    torch.testing.assert_close(_logits(pruned, images), ref, atol=2e-5, rtol=1e-5)
    assert (_logits(model, images) - ref).abs().max() > 1e-3  # the masks matter
    assert count_cost(pruned)["params"] == _numel(pruned) < _numel(model)


@pytest.mark.parametrize("fixture", NEW)
def test_removed_sub_blocks_become_exact_constants(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    model = prunable(request.getfixturevalue(fixture))  # (CLIP: its full-width twin, which locate reads)
    plan = WidthPlan.full(model.config)
    plan.layers[0].head_dims = []  # attention of layer 0: lambda_1 * o.bias remains
    plan.layers[1].mlp_in = []  # MLP of layer 1 reads nothing: lambda_2 * (fc2(gelu(b1)) + b2)
    plan.layers[1].attn_in = []  # attention reads nothing: lambda_1 * (o(v_bias) + o_bias), whatever the bias
    plan.layers[2].attn_out = []  # writes nothing: vanishes
    plan.layers[2].mlp = []
    pruned = apply_width_plan(model, plan)
    cfg = pruned.config
    assert cfg.layer_head_dims[:2] == [0, 0] and cfg.layer_intermediate_sizes[1:] == [0, 0]
    # no empty Linear stored: the only 0-input Linears are the constants (an nn.Linear for peft; bias only)
    assert all(
        type(m).__name__ == "P3BConstantOutput" and "weight" not in dict(m.named_parameters())
        for m in pruned.modules()
        if isinstance(m, torch.nn.Linear) and 0 in m.weight.shape
    )
    layer0 = f"{pruned.base_model_prefix}.encoder.layer.0."
    assert not any(
        k.startswith(layer0) and ("lambda_1" in k or "layer_scale1" in k) for k in pruned.state_dict()
    )
    torch.testing.assert_close(
        _logits(pruned, images), masked_forward(model, plan, images), atol=2e-5, rtol=1e-5
    )
    assert count_cost(pruned)["params"] == _numel(pruned)
    # the layer scale is in the constant: dropping it would change the logits
    layer0 = getattr(pruned, pruned.base_model_prefix).encoder.layer[0]
    const = layer0.attention.output.dense.bias
    mods = p3b_hf.locate(model)
    scale = 1.0 if mods.layers[0].ls1 is None else mods.layers[0].ls1  # (I-JEPA: no layer scale)
    torch.testing.assert_close(const, (mods.layers[0].o.bias * scale).detach())


@pytest.mark.parametrize("fixture", NEW)
def test_vbp_fold_equals_mean_replacement(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    """The mean-shift fold goes into fc2's bias, before the layer scale: lambda * (W2 h_K + b2 + W2_R mu_R)."""
    model = prunable(request.getfixturevalue(fixture))  # (CLIP: its full-width twin, which locate reads)
    plan = WidthPlan.full(model.config)
    mods = p3b_hf.locate(model)
    f = mods.intermediate_size
    fills = {}
    for i, lm in enumerate(mods.layers):
        keep = sorted(random.Random(i).sample(range(f), 40))
        removed = sorted(set(range(f)) - set(keep))
        mu = torch.randn(f, generator=torch.Generator().manual_seed(i))
        fills[i] = mu
        plan.layers[i].mlp = keep
        plan.layers[i].mlp_bias_delta = (lm.fc2.weight[:, removed] @ mu[removed]).tolist()
    pruned = apply_width_plan(model, plan)
    ref = masked_forward(model, plan, images, mlp_fill=fills)
    torch.testing.assert_close(_logits(pruned, images), ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", NEW)
def test_embedding_pruning_slices_every_coupled_tensor(
    fixture: str, request: pytest.FixtureRequest, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(fixture)
    plan = WidthPlan.full(model.config)
    plan.embed = list(range(0, 48, 2))
    plan.layers[0].attn_out = list(range(0, 48, 4))
    pruned = apply_width_plan(model, plan)
    sd = pruned.state_dict()
    assert pruned.config.hidden_size == 24
    for k, v in sd.items():
        if "lambda" in k or "layernorm" in k or "norm1" in k or "token" in k or "position_embeddings" in k:
            assert v.shape[-1] in (24, 12), k  # layer 0's attention writes 12 channels
    dino = fixture.startswith("tiny_dinov2")
    expected_in = 48 if dino else 24  # DINOv2 reads [CLS, mean]: both halves sliced
    assert pruned.classifier.weight.shape == (7, expected_in)
    if dino:
        torch.testing.assert_close(pruned.classifier.weight[:, 24:], model.classifier.weight[:, 48:][:, ::2])
    assert _logits(pruned, images).shape == (3, 7)
    assert count_cost(pruned)["params"] == _numel(pruned)


def test_shared_relative_bias_keeps_the_union_of_kept_heads(tiny_beit_shared, images: torch.Tensor) -> None:
    model = tiny_beit_shared
    plan = WidthPlan.full(model.config)
    plan.layers[0].heads = [1, 3]
    plan.layers[1].heads = [0, 3]
    plan.layers[2].head_dims = []  # no attention: uses no column
    pruned = apply_width_plan(model, plan)
    table = pruned.beit.encoder.relative_position_bias.relative_position_bias_table
    dense = p3b_hf.locate(model).shared_rel_bias
    assert torch.equal(table, dense[:, [0, 1, 3]])
    assert pruned.config.layer_bias_heads[:2] == [[1, 2], [0, 2]]
    torch.testing.assert_close(
        _logits(pruned, images), masked_forward(model, plan, images), atol=2e-5, rtol=1e-5
    )
    # every layer dropping heads 2 and 3: the shared table shrinks with them
    plan.layers[2].head_dims, plan.layers[2].heads = None, [0, 1]
    plan.layers[0].heads, plan.layers[1].heads = [0, 1], [0, 1]
    small = apply_width_plan(model, plan)
    assert small.config.shared_bias_num_heads == 2 and small.config.layer_bias_heads == [None] * 3
    assert count_cost(small)["params"] == _numel(small)


@pytest.mark.parametrize("fixture", NEW)
def test_save_reload_and_stock_checkpoint(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(fixture)
    pruned = apply_width_plan(
        model, _random_plan(model, 3, removals=True), provenance={"method": "test"}
    ).eval()
    pruned.save_pretrained(tmp_path / "pruned")
    files = {p.name for p in (tmp_path / "pruned").iterdir()}
    name = p3b_hf.models.family_of(model).name
    assert {f"configuration_p3b_{name}.py", f"modeling_p3b_{name}.py", "model.safetensors"} <= files
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert type(again) is type(pruned) and again.config.pruning_method == "test"
    assert torch.equal(_logits(again, images), _logits(pruned, images))
    # a full-width config loads the stock checkpoint's state dict (stock parameter names) unchanged
    model.save_pretrained(tmp_path / "stock")
    fam = FAMILIES[name]
    if fam.from_stock is not None:  # a nested stock config (CLIP): converted, not loaded under its own keys
        full = fam.from_stock(AutoModelForImageClassification.from_pretrained(tmp_path / "stock"))
    else:
        full = fam.model_class.from_pretrained(
            tmp_path / "stock", config=fam.config_class.from_dense_config(model.config)
        )
    assert torch.equal(_logits(full.eval(), images), _logits(model, images))


#: what each family's remote code imports relatively (what ``save_pretrained`` copies next to a checkpoint)
SHARED_IMPORTS = {
    "modeling_p3b_vit.py": {"configuration_p3b_vit", "configuration_p3b_widths", "modeling_p3b_layers"},
    "modeling_p3b_beit.py": {"configuration_p3b_beit", "configuration_p3b_widths", "modeling_p3b_layers"},
    "modeling_p3b_dinov2.py": {"configuration_p3b_dinov2", "configuration_p3b_widths", "modeling_p3b_layers"},
    "modeling_p3b_dinov2_with_registers.py": {
        "configuration_p3b_dinov2_with_registers",
        "modeling_p3b_dinov2",
        "configuration_p3b_dinov2",
        "configuration_p3b_widths",
        "modeling_p3b_layers",
    },
    "modeling_p3b_swin.py": {"configuration_p3b_swin", "configuration_p3b_widths"},
    "modeling_p3b_convnext.py": {"configuration_p3b_convnext", "configuration_p3b_widths"},
    "modeling_p3b_ijepa.py": {
        "configuration_p3b_ijepa",
        "configuration_p3b_vit",
        "configuration_p3b_widths",
        "modeling_p3b_layers",
        "modeling_p3b_vit",
    },
    "modeling_p3b_clip.py": {"configuration_p3b_clip", "configuration_p3b_widths", "modeling_p3b_layers"},
    "modeling_p3b_siglip.py": {"configuration_p3b_siglip", "configuration_p3b_widths", "modeling_p3b_layers"},
}
SHARED_MODULES = ("modeling_p3b_layers.py", "modeling_p3b_checkpoint.py", "configuration_p3b_widths.py")


def test_every_modeling_file_imports_the_shared_code_and_copies_none_of_it() -> None:
    """The pruned code is written once: every family file imports the shared modules (found by transformers' own
    relative-import parser, i.e. what ``save_pretrained`` copies and ``trust_remote_code`` fetches) and defines
    none of their names again; the loaded classes are the shared ones."""
    import ast
    import importlib

    from transformers import PreTrainedModel
    from transformers.dynamic_module_utils import get_relative_import_files

    from p3b_hf.models import modeling_p3b_checkpoint, modeling_p3b_layers

    root = Path(p3b_hf.__file__).parent / "models"
    shared_names = {
        node.name
        for name in SHARED_MODULES
        for node in ast.parse((root / name).read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    assert {
        "P3BLayerNorm",
        "_IndexCache",
        "_P3BStrictLoading",
        "_refuse_misfit",
        "P3BLayerWidths",
    } <= shared_names
    assert sorted(p.name for p in root.glob("modeling_p3b_*.py")) == sorted(
        [*SHARED_IMPORTS, *SHARED_MODULES[:2]]
    )
    for name, family_imports in SHARED_IMPORTS.items():
        imported = {Path(f).stem for f in get_relative_import_files(root / name)}
        assert imported == family_imports | {"modeling_p3b_checkpoint"}, name
        defined = {
            node.name
            for node in ast.parse((root / name).read_text()).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
        }
        assert not defined & shared_names, (name, defined & shared_names)
    models = []
    for name in SHARED_IMPORTS:
        mod = importlib.import_module(f"p3b_hf.models.{Path(name).stem}")
        models += [c for c in vars(mod).values() if isinstance(c, type) and c.__module__ == mod.__name__]
        if "modeling_p3b_layers" in SHARED_IMPORTS[name]:  # the layer step and attention are the shared ones
            fam = {
                "vit": "ViT",
                "beit": "Beit",
                "dinov2": "Dinov2",
                "registers": "Dinov2WithRegisters",
                "ijepa": "IJepa",
                "clip": "CLIP",
                "siglip": "Siglip",
            }[name.removesuffix(".py").split("_")[-1]]
            assert issubclass(getattr(mod, f"P3B{fam}Layer"), modeling_p3b_layers._P3BLayerMixin)
            if fam not in ("CLIP", "Siglip"):  # (CLIP and SigLIP use P3BAttention itself, under no alias)
                assert issubclass(getattr(mod, f"P3B{fam}Attention"), modeling_p3b_layers.P3BAttention)
            assert getattr(mod, f"P3B{fam}Layer").forward is modeling_p3b_layers._P3BLayerMixin.forward
    models = [c for c in models if issubclass(c, PreTrainedModel)]
    # 5 ViT/DeiT, 3 BEiT, 3 DINOv2, 3 DINOv2+reg, 2 Swin, 2 ConvNeXt, 3 I-JEPA, 3 CLIP, 3 SigLIP
    assert len(models) == 27, models
    for cls in models:
        assert issubclass(cls, modeling_p3b_checkpoint._P3BStrictLoading), cls


@pytest.mark.parametrize("builder", ["vit_msn", "siglip2"])
def test_unsupported_families_get_one_clear_error(builder: str) -> None:
    """(Swin and ConvNeXt are supported by VBP / global since issue 17: tests/test_stage_families.py; CLIP,
    DINOv2 with registers, I-JEPA and SigLIP since issue 27.) SigLIP2's NaFlex classifier (pre-patchified
    pixels + ``spatial_shapes``) is refused with the reason and the fixed-resolution checkpoint to load."""
    import transformers as tf

    tiny = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1)
    model = {
        "vit_msn": lambda: tf.ViTMSNForImageClassification(
            tf.ViTMSNConfig(**tiny, image_size=16, patch_size=8, num_labels=3)
        ),
        "siglip2": lambda: tf.Siglip2ForImageClassification(
            tf.Siglip2Config(
                vision_config=dict(tiny, num_patches=4), text_config=dict(tiny, vocab_size=10), num_labels=3
            )
        ),
    }[builder]()
    for call in (lambda: apply_width_plan(model, None), lambda: count_cost(model.config)):
        with pytest.raises(UnsupportedModelError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        assert type(model).__name__ in msg or repr(model.config.model_type) in msg
        assert "BeitForImageClassification" in msg and "Dinov2ForImageClassification" in msg
        assert "SwinForImageClassification" in msg and "ConvNextForImageClassification" in msg
        assert (
            "IJepaForImageClassification" in msg and "CLIPForImageClassification" in msg
        )  # from the registry
        assert "SiglipForImageClassification" in msg
        naflex = "spatial_shapes" in msg and "'google/siglip2-base-patch16-224'" in msg
        assert naflex == (builder == "siglip2")


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_swiglu_is_a_gated_mlp(registers: bool, tmp_path: Path, images: torch.Tensor) -> None:
    """use_swiglu_ffn=True (DINOv2-giant) is pruned, not refused: a hidden unit is a (gate row, up row, down
    column) triple; the pruned model equals the masked dense one, saves in the Hub layout (fused
    ``mlp.weights_in``) and reloads; cost == numel."""
    import transformers as tf
    from safetensors import safe_open

    name = "Dinov2WithRegisters" if registers else "Dinov2"
    torch.manual_seed(11)
    cfg = getattr(tf, f"{name}Config")(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        use_swiglu_ffn=True, num_labels=3, mlp_ratio=4,
    )  # fmt: skip
    model = getattr(tf, f"{name}ForImageClassification")(cfg).eval()
    lm = p3b_hf.locate(model).layers[0]
    assert lm.up is model.base_model.encoder.layer[0].mlp.up_proj and lm.fc1.out_features == 48  # (42+7)//8*8
    plan = WidthPlan.full(model.config)
    plan.layers[0].mlp, plan.layers[1].mlp = [0, 5, 7, 40], []
    pruned = apply_width_plan(model, plan).eval()
    mlp = pruned.base_model.encoder.layer[0].mlp
    assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (4, 4, 4)
    torch.testing.assert_close(mlp.up_proj.weight, lm.up.weight[[0, 5, 7, 40]])
    torch.testing.assert_close(
        _logits(pruned, images), masked_forward(model, plan, images), atol=2e-5, rtol=1e-5
    )
    assert count_cost(pruned)["params"] == _numel(pruned) and count_cost(model)["params"] == _numel(model)
    pruned.save_pretrained(tmp_path / "pruned")
    with safe_open(str(tmp_path / "pruned" / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    prefix = model.base_model_prefix
    assert f"{prefix}.encoder.layer.0.mlp.weights_in.weight" in keys  # the Hub layout (gate; up fused)
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert torch.equal(_logits(again, images), _logits(pruned, images))


def test_standard_sizes_count_as_published() -> None:
    """Analytic params == numel of the stock models (meta device) for the standard sizes (1000-class heads;
    DINOv2's reads [CLS, mean]: 2C*1000 + 1000), MACs at 224 px and at the config's resolution."""
    from transformers import (
        BeitConfig,
        BeitForImageClassification,
        Dinov2Config,
        Dinov2ForImageClassification,
    )

    cases = [  # config, class, params (1000 classes), MACs at 224 px, MACs at config.image_size
        (
            BeitConfig(use_relative_position_bias=True, use_mean_pooling=True, num_labels=1000),
            BeitForImageClassification,
            86_530_984,
            17_578_504_168,
            17_578_504_168,
        ),
        (
            Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518, num_labels=1000),
            Dinov2ForImageClassification,
            22_825_576,
            6_135_087_592,
            46_754_850_664,
        ),
        (
            Dinov2Config(hidden_size=768, num_attention_heads=12, image_size=518, num_labels=1000),
            Dinov2ForImageClassification,
            88_117_480,
            23_184_277_480,
            151_689_939_688,
        ),
    ]
    for cfg, cls, params, macs224, macs_native in cases:
        with torch.device("meta"):
            model = cls(cfg)
        assert count_cost(cfg)["params"] == _numel(model) == params
        assert count_cost(cfg, image_size=224)["macs"] == macs224 and count_cost(cfg)["macs"] == macs_native
    assert int(cases[0][2] / 1e6) == 86  # BEiT-B: 86.53 M
    backbone = [p - (2 * c.hidden_size * 1000 + 1000) for c, _, p, _, _ in cases[1:]]
    assert backbone == [22_056_576, 86_580_480]  # DINOv2 S/B backbones (papers: "21 M", "86 M"; README)


def test_transplanted_dinov2_and_beit_compute_the_vit_backbone(tiny_vit, images: torch.Tensor) -> None:  # noqa: ANN001
    """The dev-bench evidence starts DINOv2/BEiT from the pretrained ViT (p3b_hf.models.transplant)."""
    from p3b_hf.models.transplant import vit_to_beit, vit_to_dinov2

    with torch.no_grad():
        ref = tiny_vit(pixel_values=images, output_hidden_states=True)
        dino = vit_to_dinov2(tiny_vit)(pixel_values=images, output_hidden_states=True)
        beit = vit_to_beit(tiny_vit)(pixel_values=images, output_hidden_states=True)
    torch.testing.assert_close(dino.logits, ref.logits, rtol=1e-5, atol=1e-5)
    for a, b, r in zip(dino.hidden_states, beit.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, r, rtol=1e-5, atol=1e-5)  # key bias dropped: softmax-invariant
    assert not torch.allclose(beit.logits, ref.logits)  # BEiT classifies from the mean patch token


def test_dinov2_with_registers_transplant_is_exact_but_for_the_registers(
    tiny_vit, images: torch.Tensor
) -> None:  # noqa: ANN001
    """Issue 27's dev-bench evidence warm-starts DINOv2-with-registers from the ViT: without registers the
    transplant is the ViT's function; the registers (copies of the CLS token) attend, so with them it is not."""
    from p3b_hf.models.transplant import vit_to_dinov2_with_registers

    with torch.no_grad():
        ref = tiny_vit(pixel_values=images).logits
        none = vit_to_dinov2_with_registers(tiny_vit, num_register_tokens=0)(pixel_values=images).logits
        model = vit_to_dinov2_with_registers(tiny_vit, num_register_tokens=4)
        out = model(pixel_values=images, output_hidden_states=True)
    torch.testing.assert_close(none, ref, rtol=1e-5, atol=1e-5)
    assert out.hidden_states[-1].shape == (3, 1 + 4 + 16, 48) and out.logits.shape == ref.shape
    regs = model.dinov2_with_registers.embeddings.register_tokens
    assert torch.equal(regs[0], tiny_vit.vit.embeddings.cls_token[0].expand(4, -1))
    assert 1e-3 < float((out.logits - ref).abs().max()) < 10 * float(ref.abs().max())  # a warm start


def test_ijepa_transplant_keeps_the_patch_tokens_and_layers(tiny_vit, images: torch.Tensor) -> None:  # noqa: ANN001
    """I-JEPA has no CLS: the embeddings equal the ViT's patch tokens exactly, each layer is the ViT's (fed the
    same tokens, it gives the same output), but without the CLS the outputs move: a warm start."""
    from p3b_hf.models.transplant import vit_to_ijepa

    model = vit_to_ijepa(tiny_vit)
    with torch.no_grad():
        ref = tiny_vit(pixel_values=images, output_hidden_states=True)
        out = model(pixel_values=images, output_hidden_states=True)
        tokens = ref.hidden_states[0][:, 1:]
        torch.testing.assert_close(out.hidden_states[0], tokens, rtol=0, atol=1e-6)
        # one layer on patch tokens only: same module weights, so the same function
        torch.testing.assert_close(
            model.ijepa.layers[0](tokens), tiny_vit.vit.layers[0](tokens), rtol=0, atol=1e-6
        )
    assert out.hidden_states[-1].shape == (3, 16, 48) and out.logits.shape == ref.logits.shape
    assert float((out.hidden_states[-1] - ref.hidden_states[-1][:, 1:]).abs().max()) > 1e-3


def test_clip_transplant_is_exact_but_for_the_embedding_layernorm(tiny_vit, images: torch.Tensor) -> None:  # noqa: ANN001
    """CLIP: GELU via ``hidden_act``, the conv bias folded into the positions -- exact; with its
    ``pre_layrnorm`` bypassed, the final normalised tokens equal the ViT's. With it, a warm start."""
    from p3b_hf.models.transplant import vit_to_clip

    model = vit_to_clip(tiny_vit)
    assert model.config.vision_config.hidden_act == "gelu"
    with torch.no_grad():
        ref = tiny_vit.vit(pixel_values=images).last_hidden_state  # after the ViT's final LayerNorm
        vm = model.vision_model
        emb = vm.embeddings(images)
        torch.testing.assert_close(emb, tiny_vit.vit.embeddings(images), rtol=0, atol=1e-5)
        warm = vm.post_layernorm(vm(pixel_values=images).last_hidden_state)
        vm.pre_layrnorm = torch.nn.Identity()
        exact = vm.post_layernorm(vm(pixel_values=images).last_hidden_state)
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-4)
    assert float((warm - ref).abs().max()) > 1e-3


def test_vit_only_tools_refuse_the_new_families_clearly(tiny_beit, tiny_dinov2) -> None:  # noqa: ANN001
    """optimize_for_inference and pad_widths (--pad-to) do not know layer scale / bias tables / pooling yet."""
    from p3b_hf import P3BError
    from p3b_hf.optimize import optimize_for_inference
    from p3b_hf.padding import pad_widths

    for model in (tiny_beit, tiny_dinov2):
        pruned = apply_width_plan(model, _random_plan(model, 0))
        with pytest.raises(UnsupportedModelError, match="ViT/DeiT"):
            optimize_for_inference(model)
        with pytest.raises(UnsupportedModelError, match="ViT/DeiT"):
            optimize_for_inference(pruned)
        with pytest.raises(P3BError, match="--pad-to"):
            pad_widths(pruned, 8)


def test_unconverted_stock_clip_is_refused_where_modules_are_handed_out(
    tiny_clip, images: torch.Tensor
) -> None:  # noqa: ANN001
    """CLIP's nested ``CLIPConfig`` is read through its full-width twin (``prunable``): read-only entry points
    convert it themselves, but ``locate`` / ``locate_mlps`` (whose modules callers hook, gate and train) refuse
    the stock model with the fix, instead of handing out modules of a copy that the caller's forward never runs."""
    from p3b_hf.models import locate_mlps

    for fn in (p3b_hf.locate, locate_mlps):
        with pytest.raises(UnsupportedModelError, match=r"prunable\(model\)"):
            fn(tiny_clip)
    full = prunable(tiny_clip)
    assert p3b_hf.locate(full).pooling == "mean" and p3b_hf.locate(full).final_norm is None
    assert torch.equal(_logits(full, images), _logits(tiny_clip, images))
    assert count_cost(tiny_clip.config) == count_cost(tiny_clip) == count_cost(full)
