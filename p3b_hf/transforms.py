"""Image transforms and batch-level mixing for fine-tuning/pruning runs.

Three training recipes, all ending in the model's own normalisation (mean/std of its image processor):

* ``"deit"``  -- DeiT's recipe: RandomResizedCrop (bicubic) + horizontal flip + RandAugment(2 ops, m9)
  + RandomErasing(p=0.25, per-pixel normal values, timm's "pixel" mode).
* ``"glyph"`` -- the dev-bench recipe for rendered glyphs: random dark ink on a light background per
  image, +-8 degree rotation, scale 0.9-1.1, Gaussian noise sigma 0.03 (without colour randomisation a
  glyph model overfits the exact rendering).
* ``"basic"`` -- resize, zero-pad by 1/8 and random-crop back, horizontal flip (the CIFAR recipe).
* ``"none"``  -- the eval transform (resize [+ centre crop, when the processor does one] + normalise).

torchvision is optional (extra ``vision``: ``pip install -e ".[vision]"``; PyPI torchvision does not import beside CPU-only
torch). When it imports, the DeiT recipe uses ``torchvision.transforms.v2``; otherwise the PIL/torch
implementations below, which follow torchvision's algorithms (same op set, magnitude bins, sampling
rules), are used. All randomness comes from torch's global RNG, so ``transformers.set_seed`` /
``Trainer(seed=...)`` make runs reproducible and DataLoader workers get distinct streams.

Mixup/CutMix/label smoothing act on whole batches (timm's ``Mixup`` in "batch" mode, pure torch):
see :func:`mix_batch`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

AUGMENTS = ("deit", "glyph", "basic", "none")


@dataclass(frozen=True)
class Preprocess:
    """What the model's image processor prescribes: output size, resize rule and normalisation."""

    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = Image.BILINEAR
    crop_pct: float = 1.0  # <1: resize the short side to image_size / crop_pct, then centre-crop


def preprocess_from_processor(image_processor: object | None, image_size: int | None = None) -> Preprocess:
    """Read mean/std/size/resample from an HF image processor (``None`` -> 0.5/0.5 at ``image_size``).

    Why: a pruned model must see exactly the normalisation it was pretrained with, and the saved model
    directory ships that same processor.
    """
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    resample, crop_pct, proc_size = Image.BILINEAR, 1.0, None
    if image_processor is not None:
        if getattr(image_processor, "do_normalize", True):
            mean = _triple(getattr(image_processor, "image_mean", None) or mean)
            std = _triple(getattr(image_processor, "image_std", None) or std)
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        r = getattr(image_processor, "resample", None)
        resample = int(getattr(r, "value", r)) if r is not None else resample
        size = _size_of(getattr(image_processor, "size", None))
        crop = (
            _size_of(getattr(image_processor, "crop_size", None))
            if getattr(image_processor, "do_center_crop", False)
            else None
        )
        proc_size = crop or size
        if crop and size and size > crop:
            crop_pct = crop / size
    final = int(image_size or proc_size or 224)
    return Preprocess(image_size=final, mean=mean, std=std, resample=resample, crop_pct=crop_pct)


def _triple(v: float | Sequence[float]) -> tuple[float, float, float]:
    vals = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
    return (vals[0], vals[1], vals[2]) if len(vals) == 3 else (vals[0],) * 3


def _size_of(size: object) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    for key in ("height", "shortest_edge", "width"):
        v = get(key)
        if v:
            return int(v)
    return None


# ------------------------------------------------------------------------------------------ basics


def _rand() -> float:
    return float(torch.rand(()))


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand()


def _randint(lo: int, hi: int) -> int:
    """Integer in [lo, hi) like ``torch.randint``."""
    return int(torch.randint(lo, hi, ()))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB, scaling high-bit-depth images instead of clipping them.

    Why: PIL's ``convert("RGB")`` clips 16-bit (``I;16*``) and 32-bit integer (``I``) pixels at 255, so a
    16-bit PNG becomes an all-white image and a model trains to chance with exit 0. Here ``I;16*`` is scaled
    by 255/65535; ``I`` likewise when its values exceed 255 (16-bit data PIL opened as ``I``), by its own
    maximum beyond 65535; ``F`` (float) is taken as [0, 1] when its maximum is <= 1, else as [0, 255]
    (clipped).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16"):
            scale = 255.0 / 65535.0
        elif mode == "I":
            scale = 1.0 if top <= 255 else 255.0 / max(65535.0, top)
        else:
            scale = 255.0 if top <= 1.0 else 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode, see :func:`to_rgb`) -> RGB float CHW tensor in [0, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    return (x - _stats(pre.mean)) / _stats(pre.std)


@functools.lru_cache(maxsize=32)
def _stats(values: tuple[float, float, float]) -> torch.Tensor:
    """Mean/std as a cached [3, 1, 1] tensor (a new tensor per image costs more than the arithmetic)."""
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1)


def resize_eval(img: Image.Image, pre: Preprocess) -> Image.Image:
    """Deterministic eval geometry: resize (short side to size/crop_pct) + centre crop, or a plain resize."""
    s = pre.image_size
    if pre.crop_pct >= 1.0:
        return img.resize((s, s), pre.resample) if img.size != (s, s) else img
    short = int(math.floor(s / pre.crop_pct))
    w, h = img.size
    nw, nh = (short, max(1, round(h * short / w))) if w <= h else (max(1, round(w * short / h)), short)
    img = img.resize((nw, nh), pre.resample)
    left, top = (nw - s) // 2, (nh - s) // 2
    return img.crop((left, top, left + s, top + s))


# ------------------------------------------------------------------ torchvision-faithful fallbacks


def random_resized_crop(
    img: Image.Image,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    resample: int = Image.BICUBIC,
) -> Image.Image:
    """``torchvision.transforms.RandomResizedCrop`` (10 tries, then the centre-crop fallback)."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target_area = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = _randint(0, height - h + 1), _randint(0, width - w + 1)
            box = (left, top, left + w, top + h)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = height, int(round(height * max(ratio)))
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        box = (left, top, left + w, top + h)
    return img.resize((size, size), resample, box=box)


def _rand_aug_space(num_bins: int, width: int, height: int) -> dict[str, tuple[np.ndarray | None, bool]]:
    """torchvision's RandAugment op space: magnitude bins and whether the sign is randomised."""
    return {
        "Identity": (None, False),
        "ShearX": (np.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (np.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (np.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (np.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (np.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (np.linspace(0.0, 0.9, num_bins), True),
        "Color": (np.linspace(0.0, 0.9, num_bins), True),
        "Contrast": (np.linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (np.linspace(0.0, 0.9, num_bins), True),
        "Posterize": (8 - (np.arange(num_bins) / ((num_bins - 1) / 4)).round().astype(int), False),
        "Solarize": (np.linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }


def _apply_op(img: Image.Image, op: str, mag: float) -> Image.Image:
    fill = (0, 0, 0)
    nearest = Image.NEAREST
    if op == "ShearX":  # torchvision shears about the top-left corner (center=[0, 0])
        return img.transform(img.size, Image.AFFINE, (1, mag, 0, 0, 1, 0), nearest, fillcolor=fill)
    if op == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, mag, 1, 0), nearest, fillcolor=fill)
    if op == "TranslateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, -int(mag), 0, 1, 0), nearest, fillcolor=fill)
    if op == "TranslateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, -int(mag)), nearest, fillcolor=fill)
    if op == "Rotate":
        return img.rotate(mag, resample=nearest, fillcolor=fill)
    if op == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + mag)
    if op == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + mag)
    if op == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + mag)
    if op == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + mag)
    if op == "Posterize":
        return ImageOps.posterize(img, int(mag))
    if op == "Solarize":
        return ImageOps.solarize(img, int(mag))
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    return img


def rand_augment(img: Image.Image, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31) -> Image.Image:
    """``torchvision.transforms.v2.RandAugment(num_ops, magnitude)`` on an RGB PIL image."""
    space = _rand_aug_space(num_bins, img.size[0], img.size[1])
    names = list(space)
    for _ in range(num_ops):
        op = names[_randint(0, len(names))]
        bins, signed = space[op]
        mag = float(bins[magnitude]) if bins is not None else 0.0
        if signed and _rand() < 0.5:
            mag = -mag
        img = _apply_op(img, op, mag)
    return img


def random_erasing(
    x: torch.Tensor,
    p: float = 0.25,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """``RandomErasing(p, value="random")`` on a normalised CHW tensor (timm's per-pixel mode)."""
    if _rand() >= p:
        return x
    c, height, width = x.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase_area = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if not (h < height and w < width):
            continue
        top, left = _randint(0, height - h + 1), _randint(0, width - w + 1)
        x = x.clone()
        x[:, top : top + h, left : left + w] = torch.randn(c, h, w, dtype=x.dtype)
        return x
    return x


# --------------------------------------------------------------------------------------- glyphs


def glyph_batch_augment(
    cov: torch.Tensor,
    generator: torch.Generator | None = None,
    max_rotation: float = 8.0,
    scale: tuple[float, float] = (0.9, 1.1),
    ink: tuple[float, float] = (0.0, 0.45),
    background: tuple[float, float] = (0.55, 1.0),
    noise: float = 0.03,
) -> torch.Tensor:
    """dev-bench glyph augmentation of ink coverage ``[B, 1, H, W]`` in [0, 1] -> RGB ``[B, 3, H, W]`` in [0, 1].

    Per image: rotation +-``max_rotation`` degrees and scale in ``scale`` (bilinear, empty border), a
    random dark ink colour (channels in ``ink``) on a random light background (``background``), then
    Gaussian noise. All random numbers come from ``generator`` (default: torch's global RNG).
    """
    b = cov.shape[0]
    r = torch.rand(b, 8, generator=generator, dtype=cov.dtype)
    angle = (2 * r[:, 0] - 1) * math.radians(max_rotation)
    s = scale[0] + (scale[1] - scale[0]) * r[:, 1]
    cos, sin, zero = torch.cos(angle) / s, torch.sin(angle) / s, torch.zeros_like(s)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, [b, 1, *cov.shape[-2:]], align_corners=False)
    cov = F.grid_sample(cov, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)
    ink_c = ink[0] + (ink[1] - ink[0]) * r[:, 2:5].reshape(b, 3, 1, 1)
    bg_c = background[0] + (background[1] - background[0]) * r[:, 5:8].reshape(b, 3, 1, 1)
    out = bg_c + (ink_c - bg_c) * cov
    return (out + noise * torch.randn(out.shape, generator=generator, dtype=out.dtype)).clamp_(0, 1)


def glyph_augment(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """:func:`glyph_batch_augment` of one [0, 1] CHW image of dark ink on a light background
    (coverage = ``1 - gray``)."""
    return glyph_batch_augment((1.0 - x.mean(0, keepdim=True)).unsqueeze(0), **kwargs)[0]


# ----------------------------------------------------------------------------------- pipelines


def _torchvision_v2() -> object | None:
    try:
        from torchvision.transforms import v2  # type: ignore[import-not-found]
    except Exception:  # not installed, or the CPU-torch/torchvision ABI mismatch
        return None
    return v2


def _torchvision_deit(v2: Any, pre: Preprocess) -> Callable[[Image.Image], torch.Tensor] | None:
    """The DeiT recipe with torchvision v2 (None if this torchvision lacks a piece: use the fallback)."""
    try:
        return v2.Compose(
            [
                v2.RandomResizedCrop(
                    pre.image_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
                ),
                v2.RandomHorizontalFlip(),
                v2.RandAugment(num_ops=2, magnitude=9),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(pre.mean), list(pre.std)),
                v2.RandomErasing(p=0.25, value="random"),
            ]
        )
    except (AttributeError, TypeError, ValueError):
        return None


def make_image_transform(
    augment: str, pre: Preprocess, *, train: bool, use_torchvision: bool | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float tensor [3, S, S] for one recipe (``train=False``: eval transform).

    ``use_torchvision=None`` picks torchvision v2 for the DeiT recipe when it imports.
    """
    if augment not in AUGMENTS:
        from .errors import DataError

        raise DataError(f"Unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}.")
    s = pre.image_size

    def eval_tf(img: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(resize_eval(to_rgb(img), pre)), pre)

    if not train or augment == "none":
        return eval_tf
    if augment == "deit":
        v2 = _torchvision_v2() if use_torchvision in (None, True) else None
        tv = _torchvision_deit(v2, pre) if v2 is not None else None
        if tv is not None:
            return lambda img: tv(to_rgb(img))

        def deit_tf(img: Image.Image) -> torch.Tensor:
            img = random_resized_crop(to_rgb(img), s)
            if _rand() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img = rand_augment(img, num_ops=2, magnitude=9)
            return random_erasing(normalize(to_tensor(img), pre), p=0.25)

        return deit_tf
    if augment == "glyph":
        return lambda img: normalize(glyph_augment(to_tensor(resize_eval(to_rgb(img), pre))), pre)

    pad = max(1, s // 8)

    def basic_tf(img: Image.Image) -> torch.Tensor:
        x = to_tensor(to_rgb(img).resize((s, s), pre.resample))
        x = F.pad(x, (pad, pad, pad, pad))
        top, left = _randint(0, 2 * pad + 1), _randint(0, 2 * pad + 1)
        x = x[:, top : top + s, left : left + s]
        if _rand() < 0.5:
            x = x.flip(-1)
        return normalize(x, pre)

    return basic_tf


# ---------------------------------------------------------------------------- batch-level mixing


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    out = torch.full((labels.numel(), num_classes), off, dtype=torch.float32)
    return out.scatter_(1, labels.view(-1, 1).long(), 1.0 - smoothing + off)


def mix_batch(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mixup: float = 0.8,
    cutmix: float = 1.0,
    label_smoothing: float = 0.1,
    switch_prob: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Mixup`` (batch mode, prob 1): pair image i with image B-1-i, mix with lam ~ Beta(a, a).

    With both alphas > 0, CutMix is chosen with probability ``switch_prob``; CutMix's lam is corrected
    to the pasted box's true area. Returns (mixed images, dense targets [B, K] whose rows sum to 1).
    """
    y1 = smooth_one_hot(labels, num_classes, label_smoothing)
    if mixup <= 0 and cutmix <= 0:
        return pixel_values, y1
    use_cutmix = cutmix > 0 and (mixup <= 0 or _rand() < switch_prob)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    x = pixel_values.clone()
    flipped = pixel_values.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = _randint(0, h), _randint(0, w)
        y0, y1b = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1b = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x[..., y0:y1b, x0:x1b] = flipped[..., y0:y1b, x0:x1b]
        lam = 1.0 - (y1b - y0) * (x1b - x0) / float(h * w)
    else:
        x = x * lam + flipped * (1.0 - lam)
    return x, y1 * lam + y1.flip(0) * (1.0 - lam)
