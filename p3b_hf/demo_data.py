"""Deterministic demo data and the demo's source-domain pretraining (``p3b-hf demo``).

P3B's setting is transfer: a model pretrained on one domain is fine-tuned and pruned on another. No
Hub weights or data are reachable offline, so the demo makes both ends from installed packages:

* SOURCE domain: 62 Latin letters + digits rendered with 22 fonts (matplotlib's bundled DejaVu, STIX and
  Computer Modern TTFs, plus PIL's default font). A small ViT is pretrained on it in about a minute.
* TARGET domain: 44 glyphs of other scripts (24 Greek lowercase, 20 Cyrillic capitals with no Latin
  look-alike) rendered with the 16 fonts that cover them; train and eval are split **by font**
  (4 held-out fonts, one per family), so eval accuracy measures generalisation to unseen designs.

* DOMAINS (:func:`domain_glyph_dataset`): the same kind of target glyphs in four "domains", each a font family
  drawn in its own style (``ink``, ``outline``, ``colour``, ``faded``), in the layout of the Hub copies of PACS
  and Office-Home (``image`` / ``label`` / ``domain`` columns in one split): the offline stand-in for
  leave-one-domain-out runs (``--domain-column domain --test-domains outline``).

Only fonts shipped inside matplotlib (a dependency) and Pillow are used, so the data are identical on
every machine with the same package versions. Images are dev-bench style: 32x32 ink coverage, stored
as RGB black ink on white; rendering jitter (scale, rotation, shift) comes from a seeded numpy RNG.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from .models.families import DEFAULT_DEMO_FAMILY
from .transforms import glyph_batch_augment

SOURCE_CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TARGET_CLASSES = "αβγδεζηθικλμνξοπρστυφχψω" + "БГДЖЗИЙЛПФЦЧШЩЪЫЬЭЮЯ"
# matplotlib TTFs that map Latin letters and digits to ordinary glyphs (cmex/cmsy/cmmi are math symbol
# fonts; LastResort draws placeholder boxes; the *Display/STIXNonUni/STIXSiz* files lack these glyphs).
SOURCE_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)
PIL_DEFAULT_FONT = "<PIL default>"
TARGET_FONT_FILES = SOURCE_FONT_FILES[:16]  # DejaVu + STIX cover Greek and Cyrillic
TARGET_EVAL_FONTS = (
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralBol.ttf",
)
RENDER_SCALE = 4  # supersampling factor: render at 128 px, box-filter down to 32 px


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def load_font(name: str, pixel_size: int) -> ImageFont.FreeTypeFont:
    if name == PIL_DEFAULT_FONT:
        return ImageFont.load_default(pixel_size)  # type: ignore[return-value]
    return ImageFont.truetype(str(font_dir() / name), pixel_size)


def font_covers(name: str, chars: str) -> bool:
    """True when the font has a real glyph (not .notdef) for every character."""
    if name == PIL_DEFAULT_FONT:
        return all(c.isascii() for c in chars)
    from matplotlib.ft2font import FT2Font

    ft = FT2Font(str(font_dir() / name))
    return all(ft.get_char_index(ord(c)) != 0 for c in chars)


def render_glyph(
    font: ImageFont.FreeTypeFont, char: str, rng: np.random.Generator, size: int = 32, jitter: bool = True
) -> np.ndarray:
    """Ink coverage uint8 [size, size] (255 = ink) of one character, centred on the font's line box.

    Centring on the line box (anchor "mm"), not the glyph's bounding box, keeps case and x-height
    differences (o/O, c/C) visible. Jitter: scale 0.85-1.1, rotation +-6 deg, shift +-2 px.
    """
    big = size * RENDER_SCALE
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).text((big / 2, big / 2), char, font=font, fill=255, anchor="mm")
    if jitter:
        s = rng.uniform(0.85, 1.1)
        angle = math.radians(rng.uniform(-6.0, 6.0))
        dx, dy = rng.uniform(-2.0, 2.0, size=2) * RENDER_SCALE
        cos, sin = math.cos(angle) / s, math.sin(angle) / s
        c = big / 2
        # inverse map (output -> input) of: rotate+scale about the centre, then shift by (dx, dy)
        a, b, d, e = cos, sin, -sin, cos
        tx = c - a * (c + dx) - b * (c + dy)
        ty = c - d * (c + dx) - e * (c + dy)
        canvas = canvas.transform((big, big), Image.AFFINE, (a, b, tx, d, e, ty), Image.BILINEAR)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.uint8)


@dataclass(frozen=True)
class GlyphDomain:
    """A rendered glyph data set: coverage images, class ids and the font of each image."""

    images: np.ndarray  # uint8 [N, S, S], 255 = ink
    labels: np.ndarray  # int64 [N]
    fonts: np.ndarray  # int64 [N], index into font_names
    classes: list[str]
    font_names: list[str]


def render_domain(
    classes: str,
    font_names: Sequence[str],
    renders_per_font: int,
    seed: int,
    size: int = 32,
    desc: str = "render",
) -> GlyphDomain:
    """Render every class in every font ``renders_per_font`` times (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    pixel_size = int(0.72 * size * RENDER_SCALE)
    n = len(classes) * len(font_names) * renders_per_font
    images = np.zeros((n, size, size), np.uint8)
    labels = np.zeros(n, np.int64)
    fonts = np.zeros(n, np.int64)
    i = 0
    for f_idx, name in enumerate(tqdm(font_names, desc=desc, unit="font", leave=False)):
        font = load_font(name, pixel_size)
        for c_idx, ch in enumerate(classes):
            for _ in range(renders_per_font):
                images[i] = render_glyph(font, ch, rng, size)
                labels[i], fonts[i] = c_idx, f_idx
                i += 1
    return GlyphDomain(images, labels, fonts, list(classes), list(font_names))


def source_fonts() -> list[str]:
    return [f for f in SOURCE_FONT_FILES if (font_dir() / f).exists()] + [PIL_DEFAULT_FONT]


def target_fonts() -> tuple[list[str], list[str]]:
    """(train fonts, eval fonts) for the target domain; the split is by font design."""
    avail = [f for f in TARGET_FONT_FILES if (font_dir() / f).exists() and font_covers(f, TARGET_CLASSES)]
    return [f for f in avail if f not in TARGET_EVAL_FONTS], [f for f in avail if f in TARGET_EVAL_FONTS]


def to_dataset(domain: GlyphDomain) -> Any:
    """GlyphDomain -> ``datasets.Dataset`` with ``image`` (RGB, black ink on white) and ``label`` (ClassLabel)."""
    import datasets

    rgb = [Image.fromarray(np.repeat((255 - im)[..., None], 3, axis=-1)) for im in domain.images]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=domain.classes),
            "font": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": rgb, "label": domain.labels.tolist(), "font": [domain.font_names[i] for i in domain.fonts]},
        features=features,
    )


def target_dataset_dict(train_renders: int = 4, eval_renders: int = 2, seed: int = 0) -> Any:
    """The demo's TARGET data: ``DatasetDict(train=..., validation=...)`` split by font."""
    import datasets

    train_fonts, eval_fonts = target_fonts()
    train = render_domain(TARGET_CLASSES, train_fonts, train_renders, seed=seed + 101, desc="target train")
    evald = render_domain(TARGET_CLASSES, eval_fonts, eval_renders, seed=seed + 202, desc="target eval")
    return datasets.DatasetDict({"train": to_dataset(train), "validation": to_dataset(evald)})


# --------------------------------------------------------------------------- multi-domain glyphs
#: 12 Greek + 8 Cyrillic glyphs (a subset of TARGET_CLASSES: 20 classes keep the runs short)
DOMAIN_CLASSES = "αβγδεζηθικλμ" + "БГДЖЗИЙЛ"
#: domain -> (its font family: the four styles of one family, how it is drawn)
GLYPH_DOMAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "ink": (
        ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"),
        "DejaVu Sans, black ink on white",
    ),
    "outline": (
        (
            "DejaVuSansMono.ttf",
            "DejaVuSansMono-Bold.ttf",
            "DejaVuSansMono-Oblique.ttf",
            "DejaVuSansMono-BoldOblique.ttf",
        ),
        "DejaVu Sans Mono, hollow strokes (a ring around the glyph) on white",
    ),
    "colour": (
        ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf"),
        "DejaVu Serif, a random dark colour on a random light tint per image",
    ),
    "faded": (
        ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
        "STIX General, grey ink on grey paper with pixel noise",
    ),
}


def style_glyph(coverage: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Ink coverage uint8 [S, S] (255 = ink) -> an RGB uint8 [S, S, 3] image drawn in a domain's style."""
    c = coverage.astype(np.float32)[..., None] / 255.0
    if style == "outline":
        from PIL import ImageFilter

        # the ring just outside the strokes (dilation minus the glyph): a hollow, outlined glyph
        outer = (
            np.asarray(Image.fromarray(coverage).filter(ImageFilter.MaxFilter(3)), np.float32)[..., None]
            / 255.0
        )
        c = np.clip(1.5 * (outer - c), 0.0, 1.0)
        ink, paper = np.zeros(3, np.float32), np.ones(3, np.float32)
    elif style == "colour":
        ink = rng.uniform(0.0, 0.45, 3).astype(np.float32)
        paper = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    elif style == "faded":
        ink, paper = np.full(3, 0.45, np.float32), np.full(3, 0.78, np.float32)
    elif style == "ink":
        ink, paper = np.zeros(3, np.float32), np.ones(3, np.float32)
    else:
        raise ValueError(f"unknown glyph style {style!r}")
    rgb = paper * (1.0 - c) + ink * c
    if style == "faded":
        rgb = rgb + rng.normal(0.0, 0.05, rgb.shape).astype(np.float32)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def domain_glyph_dataset(
    classes: str = DOMAIN_CLASSES,
    renders_per_font: int = 3,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    size: int = 32,
) -> Any:
    """A multi-domain glyph set in the PACS / Office-Home Hub layout: ``DatasetDict(train=...)`` with
    ``image`` (RGB), ``label`` (ClassLabel of ``classes``), ``domain`` (string) and ``font``; every class
    in every font of every domain, ``renders_per_font`` jittered renders each (deterministic for a seed).
    ``domains``: a subset of :data:`GLYPH_DOMAINS` (default: all four)."""
    import datasets

    names = list(domains) if domains is not None else list(GLYPH_DOMAINS)
    unknown = [d for d in names if d not in GLYPH_DOMAINS]
    if unknown:
        raise ValueError(f"unknown glyph domain(s) {unknown}; known: {list(GLYPH_DOMAINS)}")
    images: list[Image.Image] = []
    labels: list[int] = []
    doms: list[str] = []
    fonts: list[str] = []
    for d_idx, domain in enumerate(names):
        files = [f for f in GLYPH_DOMAINS[domain][0] if (font_dir() / f).exists() and font_covers(f, classes)]
        if not files:
            raise ValueError(f"no installed font of domain {domain!r} covers {classes!r}")
        glyphs = render_domain(
            classes,
            files,
            renders_per_font,
            seed=seed + 1000 * (d_idx + 1),
            size=size,
            desc=f"domain {domain}",
        )
        rng = np.random.default_rng(seed + 1000 * (d_idx + 1) + 1)
        for im, lab, f in zip(glyphs.images, glyphs.labels, glyphs.fonts, strict=True):
            images.append(
                Image.fromarray(
                    style_glyph(im, domain if domain in ("outline", "colour", "faded") else "ink", rng)
                )
            )
            labels.append(int(lab))
            doms.append(domain)
            fonts.append(glyphs.font_names[f])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(classes)),
            "domain": datasets.Value("string"),
            "font": datasets.Value("string"),
        }
    )
    train = datasets.Dataset.from_dict(
        {"image": images, "label": labels, "domain": doms, "font": fonts}, features=features
    )
    return datasets.DatasetDict({"train": train})


# --------------------------------------------------------------------------- source pretraining


@dataclass(frozen=True)
class SourceModelSpec:
    """Architecture and pretraining budget of the demo's source model (also its cache key)."""

    hidden_size: int = 96
    num_layers: int = 4
    num_heads: int = 3
    mlp_dim: int = 384
    image_size: int = 32
    patch_size: int = 8  # 16 patches: ~3x cheaper than patch 4 on a CPU, still enough for 32 px glyphs
    renders_per_font: int = 4
    steps: int = 450
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    colour_augment: bool = False  # plain black-on-white learns much faster in a one-minute budget
    seed: int = 0
    #: a family with a demo source model (:func:`demo_families`): ViT, BEiT (relative position bias, layer
    #: scale, mean pooling) or DINOv2
    family: str = DEFAULT_DEMO_FAMILY


def demo_families() -> tuple[str, ...]:
    """The families the demo can build a source model of (records with a ``demo_model``)."""
    from .models.families import families

    return tuple(f.name for f in families() if f.demo_model is not None)


def build_source_model(spec: SourceModelSpec, classes: Sequence[str]) -> Any:
    """A randomly initialised source classifier of ``spec.family`` with the spec's widths (the family record's
    ``demo_model``)."""
    from .models.families import REGISTRY

    common = dict(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    fam = REGISTRY.get(spec.family)
    if fam is None or fam.demo_model is None:
        raise ValueError(f"Unknown demo family {spec.family!r}; choose {', '.join(demo_families())}.")
    torch.manual_seed(spec.seed)
    return fam.demo_model(common, spec.mlp_dim)


def demo_image_processor(image_size: int) -> Any:
    """The processor saved with every demo model: resize to image_size, scale to [0,1], (x - 0.5) / 0.5."""
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=2,
    )


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


@torch.no_grad()
def _accuracy(model: Any, domain: GlyphDomain, batch_size: int = 512) -> float:
    model.eval()
    x = torch.from_numpy(domain.images).float().div(255.0).unsqueeze(1)
    correct = 0
    for i in range(0, len(x), batch_size):
        rgb = _normalise((1.0 - x[i : i + batch_size]).expand(-1, 3, -1, -1))
        correct += (
            model(pixel_values=rgb).logits.argmax(-1) == torch.from_numpy(domain.labels[i : i + batch_size])
        ).sum()
    return float(correct) / len(x)


def pretrain_source_model(
    cache_dir: str | os.PathLike[str], spec: SourceModelSpec | None = None, log: Any = print
) -> tuple[Path, dict[str, Any]]:
    """Pretrain (or reuse from ``cache_dir``) the demo's source ViT on Latin glyphs; returns (dir, info).

    Plain torch loop on in-memory tensors (AdamW, warm-up + cosine, label smoothing 0.1; the renders are
    already jittered, colour augmentation is optional), because per-image PIL transforms would cost more
    than the model on 2 CPU cores.
    The directory is a normal HF model dir (safetensors + preprocessor_config.json).
    """
    spec = spec or SourceModelSpec()
    cache = Path(cache_dir)
    info_path = cache / "demo_source_info.json"
    if info_path.exists() and (cache / "model.safetensors").exists():
        info = json.loads(info_path.read_text())
        if info.get("spec") == asdict(spec):
            log(
                f"[demo] reusing cached source model {cache} (source accuracy {100 * info['source_eval_accuracy']:.1f} %)"
            )
            return cache, info
    t0 = time.time()
    fonts = source_fonts()
    train = render_domain(
        SOURCE_CLASSES, fonts, spec.renders_per_font, seed=spec.seed + 11, desc="source data"
    )
    held = render_domain(SOURCE_CLASSES, fonts, 1, seed=spec.seed + 12, desc="source eval")
    model = build_source_model(spec, SOURCE_CLASSES)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    warm = max(1, spec.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm)
            * 0.5
            * (1 + math.cos(math.pi * min(1.0, max(0, s - warm) / max(1, spec.steps - warm))))
        ),
    )
    g = torch.Generator().manual_seed(spec.seed)
    x_all = torch.from_numpy(train.images).float().div(255.0).unsqueeze(1)
    y_all = torch.from_numpy(train.labels)
    bar = tqdm(range(spec.steps), desc=f"pretrain source {spec.family}", unit="step")
    loss_ema = None
    for _ in bar:
        idx = torch.randint(0, len(x_all), (spec.batch_size,), generator=g)
        x = _normalise(
            glyph_batch_augment(x_all[idx], g)
            if spec.colour_augment
            else (1.0 - x_all[idx]).expand(-1, 3, -1, -1)
        )
        loss = F.cross_entropy(model(pixel_values=x).logits, y_all[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
        bar.set_postfix(loss=f"{loss_ema:.3f}")
    acc = _accuracy(model, held)
    model.eval()
    cache.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(cache)
    demo_image_processor(spec.image_size).save_pretrained(cache)
    info = {
        "spec": asdict(spec),
        "source_eval_accuracy": acc,
        "source_classes": len(SOURCE_CLASSES),
        "source_fonts": fonts,
        "source_train_images": int(len(train.images)),
        "pretrain_time_s": time.time() - t0,
    }
    info_path.write_text(json.dumps(info, indent=1))
    log(
        f"[demo] pretrained source ViT in {info['pretrain_time_s']:.0f} s: {100 * acc:.1f} % on fresh renders "
        f"of {len(SOURCE_CLASSES)} Latin glyphs (chance {100 / len(SOURCE_CLASSES):.1f} %)"
    )
    return cache, info
