"""Which HF entry points hold for a pruned model of each family, next to its stock model: docs/hf_contract.md.

For every family (ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt, DINOv2+registers, I-JEPA, CLIP, SigLIP) a tiny random-init stock classifier and a really
pruned copy of it (plain families: fewer heads and head dims, residual subsets, a removed attention and a
removed MLP sub-block; Swin: fewer MLP units, heads and head dims; ConvNeXt: fewer MLP units) are saved with
an image processor, and each check below runs on both (loaded back with ``AutoModelForImageClassification``).
A check passes when the entry point runs and gives what it promises (documented per check); the first line
of any exception is kept. The script prints the markdown table of docs/hf_contract.md (``--json`` also
writes every cell with its reason). Run from the repository root (CPU: 20 s without the ``compile`` row, a few
minutes with it)::

    python -m scripts.hf_contract_matrix [--families vit,swin] [--checks export,peft] [--json out.json]

Cells: ``yes``; ``yes (stock: no)`` where the pruned model does better than stock; ``no (stock too)`` where
stock transformers fails the same way; ``**no**`` where only the pruned model fails; ``n/a`` where the
family has no such thing (ConvNeXt has no attention); ``not run`` where an optional package is missing.
The cheap checks are tests (tests/test_hf_contract.py); this script is the complete matrix.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

FAMILIES = (
    "vit",
    "deit",
    "beit",
    "dinov2",
    "swin",
    "convnext",
    "dinov2_with_registers",
    "ijepa",
    "clip",
    "siglip",
)
TINY = dict(
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    image_size=32,
    patch_size=8,
    num_labels=5,
)


class NotApplicable(Exception):
    """The family has no such thing (e.g. attention maps of ConvNeXt)."""


class NotRun(Exception):
    """An optional package the check needs is not installed."""


def stock_model(family: str) -> torch.nn.Module:
    """A tiny random-init stock classifier of ``family`` (the layouts of the Hub checkpoints, in miniature)."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "vit":
        return tf.ViTForImageClassification(tf.ViTConfig(**TINY))
    if family == "deit":
        return tf.DeiTForImageClassification(tf.DeiTConfig(**TINY))
    if family == "beit":  # microsoft/beit-base-patch16-224: per-layer bias tables, layer scale, mean pooling
        return tf.BeitForImageClassification(
            tf.BeitConfig(
                **TINY, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1
            )
        )
    if family == "dinov2":
        cfg = {k: v for k, v in TINY.items() if k != "intermediate_size"}
        return tf.Dinov2ForImageClassification(tf.Dinov2Config(**cfg, mlp_ratio=2))
    if family == "dinov2_with_registers":  # facebook/dinov2-with-registers-*: 4 registers there, 2 here
        cfg = {k: v for k, v in TINY.items() if k != "intermediate_size"}
        return tf.Dinov2WithRegistersForImageClassification(
            tf.Dinov2WithRegistersConfig(**cfg, mlp_ratio=2, num_register_tokens=2)
        )
    if family == "ijepa":  # facebook/ijepa_*: no CLS token, the classifier reads the patch mean
        return tf.IJepaForImageClassification(tf.IJepaConfig(**TINY))
    if (
        family == "clip"
    ):  # openai/clip-vit-base-patch16 as a classifier: nested CLIPConfig, quick-GELU, pre-LN
        vision = {k: v for k, v in TINY.items() if k != "num_labels"}
        return tf.CLIPForImageClassification(
            tf.CLIPConfig(vision_config=vision, num_labels=TINY["num_labels"])
        )
    if family == "siglip":  # google/siglip(2)-base-patch16-224 as a classifier: nested SiglipConfig, no CLS
        vision = {k: v for k, v in TINY.items() if k != "num_labels"}
        return tf.SiglipForImageClassification(
            tf.SiglipConfig(
                vision_config=vision, text_config={"vocab_size": 49408}, num_labels=TINY["num_labels"]
            )
        )
    if family == "swin":
        return tf.SwinForImageClassification(
            tf.SwinConfig(
                image_size=32,
                patch_size=2,
                embed_dim=16,
                depths=[2, 2],
                num_heads=[2, 4],
                window_size=4,
                num_labels=5,
            )
        )
    return tf.ConvNextForImageClassification(
        tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 2], num_stages=2, image_size=32, num_labels=5)
    )


def pruned_model(stock: torch.nn.Module, family: str) -> torch.nn.Module:
    """A really pruned copy of ``stock`` (see the module docstring)."""
    from p3b_hf import WidthPlan, apply_width_plan

    plan = WidthPlan.full(stock.config)
    if family in ("swin", "convnext"):
        for i, (lp, f) in enumerate(zip(plan.layers, plan.block_intermediate_sizes)):
            lp.mlp = list(range(0, f, 2))
            if plan.block_num_heads[i] > 1:
                lp.heads = list(range(plan.block_num_heads[i] - 1))
                lp.head_dims = list(range(0, plan.block_head_dims[i], 2))
        return apply_width_plan(stock, plan)
    c, hd, f = plan.hidden_size, plan.head_dim, plan.intermediate_size
    plan.layers[0].heads, plan.layers[0].head_dims = [0, 2, 3], list(range(0, hd, 2))
    plan.layers[0].attn_in, plan.layers[0].attn_out = list(range(0, c, 2)), list(range(1, c, 3))
    plan.layers[0].mlp = list(range(f // 2))
    plan.layers[1].mlp, plan.layers[1].mlp_in = [], list(range(c // 3, c))  # MLP sub-block removed
    plan.layers[2].head_dims = []  # attention sub-block removed
    plan.layers[2].mlp_in, plan.layers[2].mlp_out = list(range(0, c, 4)), list(range(c // 2))
    return apply_width_plan(stock, plan)


@dataclass
class Case:
    """One saved model (stock or pruned) of one family."""

    family: str
    directory: Path
    images: torch.Tensor

    def load(self, **kwargs: Any) -> torch.nn.Module:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(self.directory, **kwargs).eval()

    @property
    def pil_images(self) -> list[Image.Image]:
        rng = np.random.default_rng(0)
        return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]


def _logits(model: torch.nn.Module, x: torch.Tensor, **kw: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x, **kw).logits


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, what: str) -> None:
    err = (a.float() - b.float()).abs().max().item()
    if not err <= atol:
        raise AssertionError(f"{what}: max |delta| {err:.2e} > {atol}")


# ------------------------------------------------------------------------------------------------- checks
def check_pipeline_classification(case: Case) -> None:
    """``pipeline("image-classification")`` gives top-3 labels per image, scores summing to <= 1."""
    from transformers import pipeline

    out = pipeline("image-classification", model=str(case.directory), device="cpu")(case.pil_images, top_k=3)
    assert len(out) == 2 and all(len(r) == 3 and sum(d["score"] for d in r) <= 1 + 1e-5 for r in out)


def check_pipeline_features(case: Case) -> None:
    """``pipeline("image-feature-extraction")`` gives finite features per image."""
    from transformers import pipeline

    out = pipeline("image-feature-extraction", model=str(case.directory), device="cpu")(case.pil_images)
    arr = np.array(out)
    assert arr.shape[0] == 2 and np.isfinite(arr).all(), arr.shape


def _num_maps(config: Any) -> int:
    """Attention maps per forward: one per layer; Swin: one per stage (its last block's, stock convention)."""
    from p3b_hf.models.families import flat_config

    config = flat_config(config)  # a nested stock config (CLIP): the flat one
    return len(config.depths) if hasattr(config, "depths") else int(config.num_hidden_layers)


def check_attentions(case: Case, **load: Any) -> None:
    """``output_attentions=True`` on the model as loaded (sdpa default): one map per layer (Swin: per stage),
    each row a softmax (a pruned layer without attention: 0 heads)."""
    if case.family == "convnext":
        raise NotApplicable("no attention")
    model = case.load(**load)
    with torch.no_grad():
        out = model(pixel_values=case.images, output_attentions=True)
    att = out.attentions
    assert att is not None and len(att) == _num_maps(model.config), (
        f"attentions: {None if att is None else len(att)}"
    )
    for a in att:
        if a.shape[1]:
            _close(a.sum(-1), torch.ones_like(a.sum(-1)), 1e-4, "attention rows")


def check_attentions_eager(case: Case) -> None:
    """``output_attentions=True`` on the model loaded with ``attn_implementation="eager"``: as above."""
    check_attentions(case, attn_implementation="eager")


def check_hidden_states(case: Case) -> None:
    """``output_hidden_states=True``: the embeddings + one state per layer (per stage for Swin / ConvNeXt), finite."""
    model = case.load()
    with torch.no_grad():
        out = model(pixel_values=case.images, output_hidden_states=True)
    from p3b_hf.models.families import flat_config

    cfg = flat_config(model.config)  # a nested stock config (CLIP): the flat one
    expected = (len(cfg.depths) if hasattr(cfg, "depths") else cfg.num_hidden_layers) + 1
    hs = out.hidden_states
    assert hs is not None and len(hs) == expected, f"hidden states: {None if hs is None else len(hs)}"
    assert all(torch.isfinite(h).all() for h in hs)


def _grads(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    torch.manual_seed(0)
    model(pixel_values=x, labels=torch.arange(x.shape[0]) % 5).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _checkpointing(case: Case, reentrant: bool) -> None:
    model = case.load()
    plain = _grads(model, case.images)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert model.is_gradient_checkpointing
    got = _grads(model, case.images)
    assert got.keys() == plain.keys(), f"{len(plain) - len(got)} parameters lost their gradient"
    for n in plain:
        _close(got[n], plain[n], 1e-5, n)


def check_checkpointing(case: Case) -> None:
    """``gradient_checkpointing_enable()`` (non-reentrant): the plain forward's gradients, every parameter."""
    _checkpointing(case, reentrant=False)


def check_checkpointing_reentrant(case: Case) -> None:
    """``gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})``: likewise."""
    _checkpointing(case, reentrant=True)


def check_interpolate(case: Case) -> None:
    """``interpolate_pos_encoding=True`` at 48 px (trained at 32): finite logits (the flag is accepted)."""
    model = case.load()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    logits = _logits(model, x, interpolate_pos_encoding=True)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def check_bf16(case: Case) -> None:
    """``from_pretrained(..., dtype=torch.bfloat16)`` called with float32 pixels: bf16 logits near fp32's."""
    ref = _logits(case.load(), case.images)
    logits = _logits(case.load(dtype=torch.bfloat16), case.images)
    assert logits.dtype == torch.bfloat16, logits.dtype
    _close(logits, ref, 0.05 + 0.05 * ref.abs().max().item(), "bf16 logits")


def check_compile(case: Case, backend: str = "inductor") -> None:
    """``torch.compile(model)``: the eager logits (atol 1e-4)."""
    model = case.load()
    ref = _logits(model, case.images)
    torch._dynamo.reset()
    _close(_logits(torch.compile(model, backend=backend), case.images), ref, 1e-4, "compiled logits")


def check_export(case: Case) -> None:
    """``torch.export.export(model, (), {"pixel_values": x})``: the exported module gives the eager logits."""
    model = case.load()
    ref = _logits(model, case.images)
    with torch.no_grad():
        ep = torch.export.export(model, (), {"pixel_values": case.images})
        _close(ep.module()(pixel_values=case.images).logits, ref, 1e-5, "exported logits")
    _close(_logits(model, case.images), ref, 0, "eager logits after export")


def check_trainer(case: Case) -> None:
    """``transformers.Trainer``: 2 steps on CPU, finite loss, the weights move."""
    import datasets
    from transformers import Trainer, TrainingArguments

    model = case.load()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    ds = datasets.Dataset.from_dict(
        {"pixel_values": torch.randn(8, 3, 32, 32, generator=g).numpy(), "labels": [i % 5 for i in range(8)]}
    )
    ds.set_format("torch")
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=4,
            max_steps=2,
            learning_rate=1e-2,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        out = Trainer(model=model, args=args, train_dataset=ds).train()
    assert np.isfinite(out.training_loss), out.training_loss
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def check_peft(case: Case) -> None:
    """peft LoRA (``target_modules="all-linear"``): the model at init, trains a step, merges back exactly."""
    try:
        import peft
    except ImportError as e:
        raise NotRun("peft is not installed") from e
    model = case.load()
    ref = _logits(model, case.images)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear"))
    _close(_logits(lora, case.images), ref, 1e-5, "LoRA at init")
    lora.train()
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    opt.zero_grad()
    lora(pixel_values=case.images, labels=torch.arange(case.images.shape[0]) % 5).loss.backward()
    opt.step()
    lora.eval()
    tuned = _logits(lora, case.images)
    _close(_logits(lora.merge_and_unload(), case.images), tuned, 1e-4, "merged LoRA")


CHECKS: dict[str, tuple[str, Callable[[Case], None]]] = {
    "pipeline-cls": ('`pipeline("image-classification")`', check_pipeline_classification),
    "pipeline-features": ('`pipeline("image-feature-extraction")`', check_pipeline_features),
    "attentions": ("`output_attentions=True` (sdpa default)", check_attentions),
    "attentions-eager": ('`output_attentions=True` (`attn_implementation="eager"`)', check_attentions_eager),
    "hidden-states": ("`output_hidden_states=True`", check_hidden_states),
    "checkpointing": ("gradient checkpointing (non-reentrant)", check_checkpointing),
    "checkpointing-reentrant": (
        "gradient checkpointing (`use_reentrant=True`)",
        check_checkpointing_reentrant,
    ),
    "interpolate": ("`interpolate_pos_encoding=True` (other resolution)", check_interpolate),
    "bf16": ("bf16 weights, fp32 pixels", check_bf16),
    "compile": ("`torch.compile`", check_compile),
    "export": ("`torch.export`", check_export),
    "trainer": ("`transformers.Trainer`", check_trainer),
    "peft": ('peft LoRA (`target_modules="all-linear"`)', check_peft),
}


def run_check(fn: Callable[[Case], None], case: Case) -> tuple[str, str]:
    """``(status, reason)``: status ``ok`` / ``fail`` / ``n/a`` / ``not run``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(case)
        return "ok", ""
    except NotApplicable as e:
        return "n/a", str(e)
    except NotRun as e:
        return "not run", str(e)
    except Exception as e:  # noqa: BLE001 -- every failure is a table cell
        line = (str(e).strip().splitlines() or [""])[0][:200]
        where = traceback.extract_tb(e.__traceback__)[-1]
        return "fail", f"{type(e).__name__}: {line} ({Path(where.filename).name}:{where.lineno})"


def cell(pruned: str, stock: str) -> str:
    """The table cell of a pruned result next to its stock result (see the module docstring)."""
    if pruned in ("n/a", "not run"):
        return pruned
    if pruned == "ok":
        return "yes" if stock == "ok" else "yes (stock: no)"
    return "no (stock too)" if stock == "fail" else "**no**"


def build(root: Path, family: str) -> dict[str, Case]:
    from transformers import ViTImageProcessorPil

    import p3b_hf  # noqa: F401 -- registers the pruned classes with the Auto* factories

    stock = stock_model(family).eval()
    pruned = pruned_model(stock, family).eval()
    proc = ViTImageProcessorPil(size={"height": 32, "width": 32})
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    cases = {}
    for name, model in (("stock", stock), ("pruned", pruned)):
        d = root / family / name
        model.save_pretrained(d)
        proc.save_pretrained(d)
        cases[name] = Case(family, d, images)
    return cases


def markdown(results: dict[str, dict[str, dict[str, tuple[str, str]]]], families: list[str]) -> str:
    """``results[check][family][variant] = (status, reason)`` -> the markdown table."""
    lines = ["| entry point | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for key, (title, _) in CHECKS.items():
        if key not in results:
            continue
        row = [cell(results[key][f]["pruned"][0], results[key][f]["stock"][0]) for f in families]
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--checks", default=",".join(CHECKS))
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (inductor needs a C++ compiler)"
    )
    parser.add_argument("--json", default=None, help="also write every cell with its reason here")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    checks = [c for c in args.checks.split(",") if c]
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no load reports of the backbone pipelines
    results: dict[str, dict[str, dict[str, tuple[str, str]]]] = {c: {} for c in checks}
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            cases = build(Path(tmp), family)
            for key in checks:
                fn = CHECKS[key][1]
                if key == "compile":
                    fn = lambda case: check_compile(case, args.compile_backend)  # noqa: E731
                results[key][family] = {v: run_check(fn, cases[v]) for v in ("stock", "pruned")}
                print(
                    f"# {family:9s} {key:24s} "
                    + "  ".join(f"{v}={results[key][family][v]}" for v in ("stock", "pruned")),
                    flush=True,
                )
    print()
    print(markdown(results, families))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
