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
    looks_local = name.startswith((".", "/", "~")) or p.exists()
    if looks_local and not p.exists():
        raise CheckpointError(
            f"Model path {name} does not exist. Give a model directory (with config.json) "
            "or a Hub id such as facebook/deit-small-patch16-224."
        )
    if p.exists():
        if p.is_file():
            raise CheckpointError(
                f"{name} is a file; give the model *directory* that holds config.json and model.safetensors."
            )
        if not (p / "config.json").exists():
            raise CheckpointError(f"{name} has no config.json; it is not a saved HF model directory.")


def load_config(name: str) -> PretrainedConfig:
    _check_source(name)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"Cannot load the config of {name!r}: {e}. Check the path/Hub id; offline "
            "(HF_HUB_OFFLINE=1) only cached or local models load."
        ) from e


def _saved_state_dict(model: Any) -> dict[str, Any]:
    """The state dict as ``save_pretrained`` writes it: transformers 5 reverts its checkpoint key renamings on
    save (Swin's ``attention.q_proj`` is written as the Hub layout's ``attention.self.query``)."""
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers without key conversion
        return state
    return revert_weight_conversion(model, state)


def validate_checkpoint(model_dir: str | os.PathLike, config: PretrainedConfig | None = None) -> None:
    """Check that the tensors in ``model.safetensors`` have exactly the shapes the config implies.

    Reads only the safetensors header (no tensor data, no pickle). Raises :class:`CheckpointError`
    naming the disagreeing tensors, so a config edited by hand or weights from another run are caught
    before any weight is used.
    """
    from safetensors import safe_open

    model_dir = Path(model_dir)
    config = config or load_config(str(model_dir))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir} holds no .safetensors weights.")
    actual: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    actual[key] = tuple(fh.get_slice(key).get_shape())
        except Exception as e:
            raise CheckpointError(
                f"{f} is corrupt or truncated ({e}). Re-save or re-download the model."
            ) from e
    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    expected = {k: tuple(v.shape) for k, v in _saved_state_dict(model).items()}
    bad = [
        f"{k}: config implies {expected[k]}, file has {actual[k]}"
        for k in expected
        if k in actual and expected[k] != actual[k]
    ]
    missing = [k for k in expected if k not in actual]
    if bad or missing:
        detail = "; ".join(bad[:4] + [f"{k}: missing from the weights" for k in missing[:4]])
        raise CheckpointError(
            f"{model_dir}: config.json and the weights disagree ({detail}). They come from "
            "different runs or the config was edited; re-save the model with save_pretrained."
        )


def load_model(name: str, dtype: torch.dtype = torch.float32, **kwargs: Any) -> torch.nn.Module:
    """``AutoModelForImageClassification.from_pretrained`` restricted to safetensors; local p3b models
    are validated against their config first (:func:`validate_checkpoint`)."""
    _check_source(name)
    p = Path(name)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        pickles = [f.name for f in p.iterdir() if f.suffix in (".bin", ".pth", ".pt", ".ckpt")]
        if pickles:
            raise CheckpointError(
                f"{name} holds only pickle weights ({', '.join(pickles)}); p3b_hf never "
                "unpickles. Convert them once in a trusted environment with "
                "model.save_pretrained(dir) (writes model.safetensors)."
            )
        raise CheckpointError(f"{name} holds no model.safetensors.")
    if p.is_dir():
        cfg = load_config(name)
        if getattr(cfg, "model_type", "").startswith("p3b_"):
            validate_checkpoint(p, cfg)
    # a local dir is loaded by its absolute path, so that config._name_or_path -- which a pruned model keeps as
    # base_model_name_or_path to find its dense original again -- resolves from any working directory
    source = str(p.resolve()) if p.is_dir() else name
    try:
        from .models.families import prunable  # a nested stock config (CLIP) -> the full-width pruned format

        return prunable(
            AutoModelForImageClassification.from_pretrained(
                source, dtype=dtype, use_safetensors=True, **kwargs
            )
        )
    except OSError as e:
        raise CheckpointError(f"Cannot load model {name!r}: {e}") from e
    except ValueError as e:  # a pruned class's own check (modeling_p3b_*.py, also as remote code)
        if type(e).__name__ == "P3BCheckpointMismatchError":
            raise CheckpointError(str(e)) from e
        raise
    except Exception as e:  # safetensors header errors, size mismatches
        if (
            "safetensor" in type(e).__module__
            or "header" in str(e).lower()
            or "size mismatch" in str(e).lower()
        ):
            raise CheckpointError(
                f"The weights of {name!r} are corrupt or disagree with its config ({e}). "
                "Re-save or re-download the model."
            ) from e
        raise


def load_image_processor(name: str) -> Any:
    """The model's image processor (PIL backend works without torchvision)."""
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name)
    except OSError:
        return None
