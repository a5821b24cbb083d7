"""Load models, configs and image processors from a local dir or a Hub id, with clear errors.

Only safetensors weights are accepted (``use_safetensors=True``): loading never unpickles.
Importing p3b_hf registers the pruned classes, so no ``trust_remote_code`` is needed for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig

from .errors import CheckpointError


def _check_source(name: str) -> None:
    p = Path(name)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/") and p.exists() or p.exists()
    if looks_local and not p.exists():
        raise CheckpointError(f"Model path {name} does not exist. Give a model directory (with config.json) "
                              "or a Hub id such as facebook/deit-small-patch16-224.")
    if p.exists():
        if p.is_file():
            raise CheckpointError(f"{name} is a file; give the model *directory* that holds config.json and "
                                  "model.safetensors.")
        if not (p / "config.json").exists():
            raise CheckpointError(f"{name} has no config.json; it is not a saved HF model directory.")


def load_config(name: str) -> PretrainedConfig:
    _check_source(name)
    try:
        return AutoConfig.from_pretrained(name)
    except OSError as e:
        raise CheckpointError(f"Cannot load the config of {name!r}: {e}. Check the path/Hub id; offline "
                              "(HF_HUB_OFFLINE=1) only cached or local models load.") from e


def load_model(name: str, dtype: torch.dtype = torch.float32, **kwargs: Any) -> torch.nn.Module:
    """``AutoModelForImageClassification.from_pretrained`` restricted to safetensors."""
    _check_source(name)
    p = Path(name)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        pickles = [f.name for f in p.iterdir() if f.suffix in (".bin", ".pth", ".pt", ".ckpt")]
        if pickles:
            raise CheckpointError(f"{name} holds only pickle weights ({', '.join(pickles)}); p3b_hf never "
                                  "unpickles. Convert them once in a trusted environment with "
                                  "model.save_pretrained(dir) (writes model.safetensors).")
        raise CheckpointError(f"{name} holds no model.safetensors.")
    try:
        return AutoModelForImageClassification.from_pretrained(name, dtype=dtype, use_safetensors=True, **kwargs)
    except OSError as e:
        raise CheckpointError(f"Cannot load model {name!r}: {e}") from e
    except Exception as e:  # safetensors header errors, size mismatches
        if "safetensor" in type(e).__module__ or "header" in str(e).lower() or "size mismatch" in str(e).lower():
            raise CheckpointError(f"The weights of {name!r} are corrupt or disagree with its config ({e}). "
                                  "Re-save or re-download the model.") from e
        raise


def load_image_processor(name: str) -> Any:
    """The model's image processor (PIL backend works without torchvision)."""
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name)
    except OSError:
        return None
