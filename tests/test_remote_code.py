"""Pruned checkpoints load on stock transformers (``trust_remote_code=True``) in a process where p3b_hf
cannot be imported, and give exactly the logits of the in-memory pruned model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from fake_hub import BLOCK_P3B, clean_env, nontrivial_plan, run_python

from p3b_hf import apply_width_plan

MODELS = Path(__file__).parents[1] / "p3b_hf" / "models"
#: the shared code a plain-ViT family's modeling file imports relatively (copied by save_pretrained)
SHARED_CODE = ("modeling_p3b_layers.py", "modeling_p3b_checkpoint.py", "configuration_p3b_widths.py")

LOAD = r"""
import json, sys, torch
try:
    import p3b_hf  # noqa
    raise SystemExit("p3b_hf is importable: the test would not prove anything")
except ModuleNotFoundError:
    pass
from transformers import AutoModel, AutoModelForImageClassification
x_path, out_path, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
x = torch.load(x_path)
res, info = {}, {}
for d in dirs:
    try:
        AutoModelForImageClassification.from_pretrained(d)
        refused = None
    except ValueError as e:
        refused = str(e)
    model = AutoModelForImageClassification.from_pretrained(d, trust_remote_code=True).eval()
    with torch.no_grad():
        out = model(pixel_values=x)
    res[d] = {k: out[k] for k in ("logits", "cls_logits", "distillation_logits") if out.get(k) is not None}
    backbone = AutoModel.from_pretrained(d, trust_remote_code=True).eval()  # feature-extraction users
    with torch.no_grad():
        res[d]["backbone"] = backbone(pixel_values=x).last_hidden_state
    info[d] = {"cls": type(model).__module__ + "." + type(model).__name__, "refused": refused,
               "backbone_cls": type(backbone).__module__ + "." + type(backbone).__name__,
               "params": sum(p.numel() for p in model.parameters()), "layernorm_mode": model.config.layernorm_mode}
info["transformers"] = __import__("transformers").__version__
info["p3b_imported"] = any(m == "p3b_hf" or m.startswith("p3b_hf.") for m in sys.modules)
torch.save(res, out_path)
print("\nRESULT " + json.dumps(info))
"""


def _with_embed(plan):  # noqa: ANN001, ANN202
    """Also prune the residual stream: drop every 5th channel everywhere (layer subsets stay inside it)."""
    keep = [c for c in range(plan.hidden_size) if c % 5 != 4]
    plan.embed = keep
    for lp in plan.layers:
        for name in ("attn_in", "attn_out", "mlp_in", "mlp_out"):
            sub = getattr(lp, name)
            if sub is not None:
                setattr(lp, name, [c for c in sub if c in set(keep)])
    return plan


def test_pruned_models_of_every_family_load_without_p3b_hf(
    tmp_path: Path,
    tiny_vit,
    tiny_deit_teacher,  # noqa: ANN001
    tiny_deit,
    tiny_beit,
    tiny_beit_shared,
    tiny_dinov2,  # noqa: ANN001
    tiny_dinov2_registers,  # noqa: ANN001
    tiny_ijepa,  # noqa: ANN001
    tiny_clip,  # noqa: ANN001
    tiny_siglip,  # noqa: ANN001
    tiny_dinov2_swiglu,  # noqa: ANN001
    images: torch.Tensor,
) -> None:
    extra = {
        "beit": apply_width_plan(tiny_beit, nontrivial_plan(tiny_beit.config)),
        "beit_shared": apply_width_plan(
            tiny_beit_shared, _with_embed(nontrivial_plan(tiny_beit_shared.config))
        ),
        "dinov2": apply_width_plan(tiny_dinov2, _with_embed(nontrivial_plan(tiny_dinov2.config))),
        "dinov2_with_registers": apply_width_plan(
            tiny_dinov2_registers, _with_embed(nontrivial_plan(tiny_dinov2_registers.config))
        ),
        "ijepa": apply_width_plan(tiny_ijepa, _with_embed(nontrivial_plan(tiny_ijepa.config))),
        "clip": apply_width_plan(tiny_clip, _with_embed(nontrivial_plan(tiny_clip.config))),
        "siglip": apply_width_plan(tiny_siglip, _with_embed(nontrivial_plan(tiny_siglip.config))),
        # the shared gated MLP (gate / up / down) and the Hub layout of its weights, without p3b_hf
        "dinov2_swiglu": apply_width_plan(
            tiny_dinov2_swiglu, _with_embed(nontrivial_plan(tiny_dinov2_swiglu.config))
        ),
    }
    _check_stock_load(tmp_path, tiny_vit, tiny_deit_teacher, tiny_deit, images, extra=extra)


#: code files a family's modeling file imports beyond the shared ones (the family it builds on)
FAMILY_CODE = {
    "dinov2_with_registers": {"modeling_p3b_dinov2.py", "configuration_p3b_dinov2.py"},
    # its layers are ViT's: the ViT files are relative imports of its code
    "ijepa": {"modeling_p3b_vit.py", "configuration_p3b_vit.py"},
}


def _check_stock_load(
    tmp_path: Path,
    tiny_vit,
    tiny_deit_teacher,
    tiny_deit,
    images: torch.Tensor,  # noqa: ANN001
    extra: dict[str, torch.nn.Module] | None = None,
) -> None:
    cases = {
        "vit": apply_width_plan(tiny_vit, nontrivial_plan(tiny_vit.config)),
        "deit_distilled": apply_width_plan(
            tiny_deit_teacher,
            _with_embed(nontrivial_plan(tiny_deit_teacher.config)),
            rescale_attention=True,
            layernorm_mode="subset_stats",
        ),
        "deit": apply_width_plan(tiny_deit, nontrivial_plan(tiny_deit.config)),
        **(extra or {}),
    }
    refs = {}
    for name, model in cases.items():
        model.eval().save_pretrained(tmp_path / name)
        family = model.config.model_type.removeprefix("p3b_").replace("deit", "vit")
        code = {f"modeling_p3b_{family}.py", f"configuration_p3b_{family}.py", *SHARED_CODE}
        code |= FAMILY_CODE.get(family, set())
        assert {f.name for f in (tmp_path / name).glob("*.py")} == code  # the relative imports are copied too
        for f in code:
            assert (tmp_path / name / f).read_bytes() == (MODELS / f).read_bytes(), f
        with torch.no_grad():
            out = model(pixel_values=images)
        refs[name] = out
    assert (
        cases["deit_distilled"].config.distillation_head and cases["deit_distilled"].config.hidden_size < 48
    )
    assert (
        cases["vit"].config.layer_num_heads == [3, 4, 0]
        and cases["vit"].config.layer_intermediate_sizes[1] == 0
    )

    outside = tmp_path / "elsewhere"  # cwd outside the repo; -I keeps cwd and PYTHONPATH off sys.path
    outside.mkdir()
    torch.save(images, tmp_path / "x.pt")
    out = run_python(
        BLOCK_P3B + LOAD,
        cwd=outside,
        env=clean_env(tmp_path / "hf_home", HF_HUB_OFFLINE="1"),
        args=(str(tmp_path / "x.pt"), str(tmp_path / "out.pt"), *(str(tmp_path / n) for n in cases)),
    )
    info = json.loads(out.rsplit("RESULT ", 1)[1])
    res = torch.load(tmp_path / "out.pt")
    assert info["p3b_imported"] is False
    assert info["transformers"] == transformers.__version__
    for name, model in cases.items():
        d = str(tmp_path / name)
        assert info[d]["cls"].startswith("transformers_modules."), info[d]
        assert info[d]["cls"].endswith(type(model).__name__)
        assert "trust_remote_code" in info[d]["refused"]  # stock transformers refuses without the flag
        assert info[d]["params"] == sum(p.numel() for p in model.parameters())
        assert info[d]["layernorm_mode"] == model.config.layernorm_mode
        assert torch.equal(res[d]["logits"], refs[name].logits), name
        base = getattr(model, model.base_model_prefix)
        assert info[d]["backbone_cls"].startswith("transformers_modules.")
        assert info[d]["backbone_cls"].endswith(type(base).__name__), info[d]
        with torch.no_grad():
            assert torch.equal(res[d]["backbone"], base(pixel_values=images).last_hidden_state), name
    distilled = str(tmp_path / "deit_distilled")
    assert torch.equal(res[distilled]["cls_logits"], refs["deit_distilled"].cls_logits)
    assert torch.equal(res[distilled]["distillation_logits"], refs["deit_distilled"].distillation_logits)


STRICT = r"""
import json, sys
try:
    import p3b_hf  # noqa
    raise SystemExit("p3b_hf is importable: the test would not prove anything")
except ModuleNotFoundError:
    pass
from transformers import AutoModelForImageClassification
res = {}
for d in sys.argv[1:]:
    kw = {"num_labels": 3, "ignore_mismatched_sizes": True} if d.endswith("new_head") else {}
    try:
        model = AutoModelForImageClassification.from_pretrained(d, trust_remote_code=True, **kw)
        res[d] = {"loaded": type(model).__module__, "labels": model.config.num_labels}
    except Exception as e:  # noqa: BLE001
        res[d] = {"error": type(e).__name__, "value_error": isinstance(e, ValueError), "message": str(e)}
print("\nRESULT " + json.dumps(res))
"""


def test_remote_code_refuses_what_does_not_fit_without_p3b_hf(tmp_path: Path, tiny_vit) -> None:  # noqa: ANN001
    """The documented stock path (``trust_remote_code=True``, p3b_hf unimportable): a missing tensor, a missing
    head and widths that differ from the config are refused by the pushed code itself, naming the tensors;
    a new head on purpose (``ignore_mismatched_sizes=True``) still loads."""
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "vit"
    apply_width_plan(tiny_vit, nontrivial_plan(tiny_vit.config)).eval().save_pretrained(src)
    weights = load_file(src / "model.safetensors")
    body = "vit.encoder.layer.0.attention.attention.query.weight"
    cases = {}
    for name, drop in {
        "no_tensor": [body],
        "no_head": ["classifier.weight", "classifier.bias"],
        "wider": [],
    }.items():
        cases[name] = tmp_path / name
        shutil.copytree(src, cases[name])
        save_file({k: v for k, v in weights.items() if k not in drop}, cases[name] / "model.safetensors")
    cfg = json.loads((cases["wider"] / "config.json").read_text())
    cfg["layer_intermediate_sizes"][0] += 1
    (cases["wider"] / "config.json").write_text(json.dumps(cfg))
    cases["new_head"] = src.rename(tmp_path / "new_head")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = run_python(
        BLOCK_P3B + STRICT,
        cwd=outside,
        env=clean_env(tmp_path / "hf_home", HF_HUB_OFFLINE="1"),
        args=tuple(str(p) for p in cases.values()),
    )
    res = {Path(k).name: v for k, v in json.loads(out.rsplit("RESULT ", 1)[1]).items()}
    assert res["new_head"] == {"loaded": res["new_head"]["loaded"], "labels": 3}
    assert res["new_head"]["loaded"].startswith("transformers_modules.")
    for name in ("no_tensor", "no_head", "wider"):
        assert res[name]["error"] == "P3BCheckpointMismatchError" and res[name]["value_error"], res[name]
    assert f"1 tensor(s) missing from the weights ({body})" in res["no_tensor"]["message"]
    assert (
        "2 tensor(s) missing from the weights (classifier.bias, classifier.weight)"
        in res["no_head"]["message"]
    )
    assert "pass ignore_mismatched_sizes=True" in res["no_head"]["message"]
    assert (
        "vit.encoder.layer.0.intermediate.dense.weight: file [48, 48], config [49, 48]"
        in res["wider"]["message"]
    )


HUB_LOAD = r"""
import json, sys, torch
try:
    import p3b_hf  # noqa
    raise SystemExit("p3b_hf is importable: the test would not prove anything")
except ModuleNotFoundError:
    pass
from transformers import AutoModel, AutoModelForImageClassification
x = torch.load(sys.argv[1]); res, info = {}, {}
for repo in sys.argv[3:]:
    model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
    backbone = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    with torch.no_grad():
        res[repo] = {"logits": model(pixel_values=x).logits, "backbone": backbone(pixel_values=x).last_hidden_state}
    info[repo] = {"cls": type(model).__module__ + "." + type(model).__name__,
                  "backbone_cls": type(backbone).__module__ + "." + type(backbone).__name__}
info["p3b_imported"] = any(m == "p3b_hf" or m.startswith("p3b_hf.") for m in sys.modules)
torch.save(res, sys.argv[2])
print("\nRESULT " + json.dumps(info))
"""


@pytest.mark.filterwarnings("ignore:.*has no preprocessor_config.json")
def test_every_family_loads_from_the_hub_without_p3b_hf(
    tmp_path: Path,
    tiny_vit,
    tiny_deit,
    tiny_beit,
    tiny_dinov2,  # noqa: ANN001
    tiny_dinov2_registers,  # noqa: ANN001
    images: torch.Tensor,
) -> None:
    """Pushed with ``p3b-hf push`` to the fake Hub, pulled by repo id with ``trust_remote_code=True`` where p3b_hf
    cannot be imported: the shared code files (relative imports of the family's modeling file) are uploaded and
    fetched, and every family gives exactly the logits and features of the in-memory pruned model."""
    from fake_hub import FakeHubServer, HubStore, RecordingHfApi
    from test_stage_families import _random_plan, tiny

    from p3b_hf.hub import push_pruned

    cases = {
        name: apply_width_plan(model, nontrivial_plan(model.config)).eval()
        for name, model in {
            "vit": tiny_vit,
            "deit": tiny_deit,
            "beit": tiny_beit,
            "dinov2": tiny_dinov2,
            "dinov2_with_registers": tiny_dinov2_registers,
        }.items()
    }
    cases.update(
        {f: apply_width_plan(tiny(f), _random_plan(tiny(f), 4)).eval() for f in ("swin", "convnext")}
    )
    store = HubStore(tmp_path / "hub")
    for name, model in cases.items():
        model.save_pretrained(tmp_path / name)
        pushed = push_pruned(
            tmp_path / name, f"p3b-test/{name}", api=RecordingHfApi(store), verify=False, model_card=False
        ).files
        family = "vit" if name == "deit" else name
        code = {
            f"modeling_p3b_{family}.py",
            f"configuration_p3b_{family}.py",
            "modeling_p3b_checkpoint.py",
            "configuration_p3b_widths.py",
        }
        if name not in ("swin", "convnext"):
            code |= {"modeling_p3b_layers.py"}
        code |= FAMILY_CODE.get(family, set())
        assert {f for f in pushed if f.endswith(".py")} == code, name
    torch.save(images, tmp_path / "x.pt")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with FakeHubServer(store, lifetime_s=180) as hub:
        out = run_python(
            BLOCK_P3B + HUB_LOAD,
            cwd=outside,
            env=clean_env(tmp_path / "hf_home", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0"),
            args=(str(tmp_path / "x.pt"), str(tmp_path / "out.pt"), *(f"p3b-test/{n}" for n in cases)),
            timeout=240,
        )
    info = json.loads(out.rsplit("RESULT ", 1)[1])
    res = torch.load(tmp_path / "out.pt")
    assert info.pop("p3b_imported") is False
    for name, model in cases.items():
        repo = f"p3b-test/{name}"
        base = getattr(model, model.base_model_prefix)
        assert info[repo]["cls"].startswith("transformers_modules.") and info[repo]["cls"].endswith(
            type(model).__name__
        )
        assert info[repo]["backbone_cls"].endswith(type(base).__name__), info[repo]
        with torch.no_grad():
            assert torch.equal(res[repo]["logits"], model(pixel_values=images).logits), name
            assert torch.equal(res[repo]["backbone"], base(pixel_values=images).last_hidden_state), name


#: the config.json keys p3b_hf wrote before the pruned configs subclassed the stock ones (then: PretrainedConfig)
OLD_KEYS = {
    "common": (
        "architectures",
        "attention_probs_dropout_prob",
        "auto_map",
        "base_model_name_or_path",
        "dtype",
        "hidden_act",
        "hidden_dropout_prob",
        "hidden_size",
        "id2label",
        "image_size",
        "initializer_range",
        "intermediate_size",
        "label2id",
        "layer_attention_scales",
        "layer_attn_in",
        "layer_attn_out",
        "layer_head_dims",
        "layer_intermediate_sizes",
        "layer_mlp_in",
        "layer_mlp_out",
        "layer_norm_eps",
        "layer_num_heads",
        "layernorm_mode",
        "model_type",
        "num_attention_heads",
        "num_channels",
        "num_hidden_layers",
        "p3b_hf_version",
        "patch_size",
        "prune_ratio",
        "pruning_method",
        "transformers_version",
    ),
    "vit": (
        "distillation_head",
        "distilled",
        "qkv_bias",
    ),
    "beit": (
        "drop_path_rate",
        "layer_bias_heads",
        "layer_scale_init_value",
        "shared_bias_num_heads",
        "use_absolute_position_embeddings",
        "use_mask_token",
        "use_mean_pooling",
        "use_relative_position_bias",
        "use_shared_relative_position_bias",
    ),
    "dinov2": (
        "drop_path_rate",
        "layerscale_value",
        "mlp_ratio",
        "qkv_bias",
        "use_mask_token",
        "use_swiglu_ffn",
    ),
}


def test_configs_written_before_the_stock_subclasses_still_load(
    tmp_path: Path,
    tiny_deit_teacher,
    tiny_beit_shared,
    tiny_dinov2,  # noqa: ANN001
    images: torch.Tensor,
) -> None:
    """A pruned dir saved in the earlier format (its config.json holds only the keys listed above; DINOv2's
    ``mlp_ratio`` a float, which the stock ``Dinov2Config`` refuses) loads into the same model: same widths,
    bit-identical logits. The new format writes every old key (it only adds stock ones)."""
    from transformers import AutoModelForImageClassification

    cases = {
        "vit": apply_width_plan(
            tiny_deit_teacher,
            _with_embed(nontrivial_plan(tiny_deit_teacher.config)),
            layernorm_mode="subset_stats",
        ),
        "beit": apply_width_plan(tiny_beit_shared, _with_embed(nontrivial_plan(tiny_beit_shared.config))),
        "dinov2": apply_width_plan(tiny_dinov2, nontrivial_plan(tiny_dinov2.config)),
    }
    for family, model in cases.items():
        d = tmp_path / family
        model.eval().save_pretrained(d)
        cfg = json.loads((d / "config.json").read_text())
        keys = {*OLD_KEYS["common"], *OLD_KEYS[family]}
        assert keys <= set(cfg), (family, keys - set(cfg))
        old = {k: cfg[k] for k in keys if k != "auto_map"}  # the earlier dirs held the earlier code files
        if family == "dinov2":
            old["mlp_ratio"] = float(old["mlp_ratio"])
        for f in d.glob("*.py"):
            f.unlink()
        (d / "config.json").write_text(json.dumps(old))
        again = AutoModelForImageClassification.from_pretrained(d).eval()
        assert type(again) is type(model) and again.config.model_type == model.config.model_type
        for key in (
            "layer_num_heads",
            "layer_head_dims",
            "layer_intermediate_sizes",
            "layer_attn_in",
            "layer_mlp_out",
        ):
            assert getattr(again.config, key) == getattr(model.config, key), (family, key)
        assert again.config.layernorm_mode == model.config.layernorm_mode
        with torch.no_grad():
            assert torch.equal(again(pixel_values=images).logits, model(pixel_values=images).logits), family
    assert cases["vit"].config.distillation_head and cases["beit"].config.use_shared_relative_position_bias
