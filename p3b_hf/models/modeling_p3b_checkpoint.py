# Remote code: shipped next to every pruned checkpoint as a relative import of its modeling_p3b_*.py
# (``save_pretrained`` copies a code file's relative imports, ``from_pretrained(trust_remote_code=True)``
# fetches them), so it imports only torch / transformers.
"""How every pruned class loads and saves, written once for all families.

``_P3BStrictLoading.from_pretrained`` refuses weights that do not fit the config (a pruned checkpoint is only
meaningful whole), with p3b_hf installed and as remote code alike; ``save_pretrained`` also names the backbone
class in ``auto_map``, so ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works on a classifier
checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import re
import struct
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig


class P3BCheckpointMismatchError(ValueError):
    """The weights do not fit the config: tensors are missing, or have other widths than the config implies.

    Stock ``from_pretrained`` would give such tensors random values (a log line only) or stop with a long
    load report and a ``RuntimeError``; a pruned checkpoint is only meaningful whole, so it is refused."""


def _safetensors_shapes(directory: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from the safetensors header(s) of a local model dir (no tensor data is read); ``None``
    when there is no ``model.safetensors`` (or index) or a header is unreadable (transformers reports that)."""
    index = os.path.join(directory, "model.safetensors.index.json")
    try:
        if os.path.isfile(index):
            with open(index) as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        elif os.path.isfile(os.path.join(directory, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            return None
        shapes: dict[str, tuple[int, ...]] = {}
        for name in files:
            with open(os.path.join(directory, name), "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
            shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        return shapes
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _refuse_misfit(
    model: nn.Module,
    source: Any,
    missing: Any,
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ignore_mismatched_sizes: bool,
) -> None:
    """Raise :class:`P3BCheckpointMismatchError` naming the missing / mismatched tensors and the fix. With
    ``ignore_mismatched_sizes=True`` the classifier head (the keys outside the backbone) may be re-initialised
    -- a new head on purpose -- but nothing else."""
    prefix = f"{model.base_model_prefix}."
    has_head = isinstance(getattr(model, model.base_model_prefix, None), nn.Module)
    head = {k for k in [*missing, *mismatched] if has_head and not k.startswith(prefix)}
    if ignore_mismatched_sizes:
        missing = [k for k in missing if k not in head]
        mismatched = {k: v for k, v in mismatched.items() if k not in head}
    missing = sorted(missing)
    if not missing and not mismatched:
        return
    parts = []
    if missing:
        more = ", ..." if len(missing) > 4 else ""
        parts.append(f"{len(missing)} tensor(s) missing from the weights ({', '.join(missing[:4])}{more})")
    if mismatched:
        shown = "; ".join(
            f"{k}: file {list(f)}, config {list(c)}" for k, (f, c) in sorted(mismatched.items())[:4]
        )
        parts.append(f"{len(mismatched)} tensor(s) whose shape is not the one the config implies ({shown})")
    if set(missing) | set(mismatched) <= head:
        fix = (
            "To train a new classifier head on purpose, pass ignore_mismatched_sizes=True (and num_labels=...): "
            "only the head is then re-initialised. Otherwise re-save the model with save_pretrained."
        )
    else:
        fix = (
            "config.json and the weights come from different runs, or one of them was edited or truncated: "
            "re-save the model with save_pretrained (p3b-hf prune / finetune write both together)."
        )
    raise P3BCheckpointMismatchError(
        f"{source}: the weights do not fit {type(model).__name__}'s config: {'; '.join(parts)}. transformers "
        f"would load this with random values in their place. {fix}"
    )


def _check_before_loading(cls: Any, source: Any, kwargs: dict[str, Any], ignore: bool) -> None:
    """Compare a local dir's safetensors header with the shapes its config implies before transformers builds
    the model, so different widths give one message. Hub ids, variants and config overrides in ``kwargs`` are
    left to the check after loading (same rules)."""
    if not isinstance(source, (str, os.PathLike)) or kwargs.get("variant") or kwargs.get("gguf_file"):
        return
    directory = os.path.join(os.fspath(source), kwargs.get("subfolder") or "")
    shapes = _safetensors_shapes(directory) if os.path.isdir(directory) else None
    if shapes is None:
        return
    config = kwargs.get("config")
    if config is None:
        config = cls.config_class.from_pretrained(directory)
        if any(
            hasattr(config, k) for k in kwargs if k not in ("dtype", "torch_dtype", "attn_implementation")
        ):
            return
    elif not isinstance(config, PretrainedConfig):
        return
    try:
        with torch.device("meta"):
            model = cls(copy.deepcopy(config))
    except Exception:  # noqa: BLE001 - let transformers build it and report; the check after loading still runs
        return
    state = model.state_dict()
    try:  # transformers 5 renames some checkpoint keys on load (Swin); compare under the names on disk
        from transformers.core_model_loading import revert_weight_conversion

        state = revert_weight_conversion(model, state)
    except Exception:  # noqa: BLE001 - older transformers: module names are the checkpoint names
        pass
    expected = {k: tuple(v.shape) for k, v in state.items()}
    prefix, has_head = (
        model.base_model_prefix,
        isinstance(getattr(model, model.base_model_prefix, None), nn.Module),
    )
    matched: set[str] = set()
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    complete = True  # every tensor on disk has a place in the model: then missing ones can be named too
    head_file = not has_head and any(k.startswith(f"{prefix}.") for k in shapes)  # backbone from a classifier
    for key, shape in shapes.items():
        if head_file and not key.startswith(f"{prefix}."):
            continue  # the classifier of the checkpoint: not part of the backbone (transformers drops it too)
        name = key if key in expected else (f"{prefix}.{key}" if has_head else key.removeprefix(f"{prefix}."))
        if name not in expected:
            complete = False
            continue
        matched.add(name)
        if expected[name] != shape:
            mismatched[name] = (shape, expected[name])
    ignored = [re.compile(p) for p in (getattr(cls, "_keys_to_ignore_on_load_missing", None) or [])]
    missing = (
        [k for k in expected if k not in matched and not any(p.search(k) for p in ignored)]
        if complete
        else []
    )
    _refuse_misfit(model, source, missing, mismatched, ignore)


class _P3BStrictLoading:
    """A base of every pruned model class (before ``PreTrainedModel``). ``from_pretrained`` refuses a checkpoint
    with missing tensors or other widths than its config (see :class:`P3BCheckpointMismatchError`), with p3b_hf
    installed and as remote code alike."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        ignore = bool(kwargs.pop("ignore_mismatched_sizes", False))
        want_info = bool(kwargs.pop("output_loading_info", False))
        _check_before_loading(cls, pretrained_model_name_or_path, kwargs, ignore)
        # transformers re-initialises what does not fit (instead of raising its RuntimeError); refused below
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *model_args,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **kwargs,
        )
        mismatched = {m[0]: (tuple(m[1]), tuple(m[2])) for m in info.get("mismatched_keys") or ()}
        _refuse_misfit(
            model, pretrained_model_name_or_path, info.get("missing_keys") or (), mismatched, ignore
        )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """Also name the backbone class (``_backbone_class_name``) in ``auto_map`` when the code files are saved,
        so that ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works on a classifier checkpoint."""
        base = getattr(type(self), "_backbone_class_name", None)
        if type(self)._auto_class is not None and base:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", f"{type(self).__module__.split('.')[-1]}.{base}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


def _register_stock_key_mapping(stock_type: str, p3b_type: str) -> None:
    """Read (and write) the stock Hub checkpoint layout of a family built on the stock classes (Swin, ConvNeXt):
    transformers 5 renames some legacy checkpoint keys on load for the stock ``model_type`` only (Swin:
    ``attention.self.query`` -> ``attention.q_proj``; ConvNeXt has no renaming in 5.18); give ``p3b_type`` the
    same mapping, so a Hub checkpoint loads into a full-width config unchanged."""
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    stock = get_checkpoint_conversion_mapping(stock_type)
    if stock and get_checkpoint_conversion_mapping(p3b_type) is None:
        register_checkpoint_conversion_mapping(p3b_type, stock)


def _register_stock_mlp_key_mapping(stock_name: str, p3b_type: str) -> None:
    """Read (and write) the stock Hub layout of a gated MLP: transformers 5 splits a legacy fused
    ``mlp.weights_in`` into ``gate_proj`` / ``up_proj`` and renames ``mlp.weights_out`` to ``down_proj`` on load
    for the stock model only (DINOv2-giant's SwiGLU); give ``p3b_type`` those MLP entries of ``stock_name``'s
    mapping (not its other renamings: the pruned format keeps the legacy attention names), so a Hub checkpoint
    loads into a full-width config unchanged and a pruned one is saved in the same layout."""
    from transformers.conversion_mapping import (
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    stock = get_checkpoint_conversion_mapping(stock_name) or []
    mlp = [t for t in stock if any("mlp.weights_" in str(p) for p in t.source_patterns)]
    if mlp and get_checkpoint_conversion_mapping(p3b_type) is None:
        register_checkpoint_conversion_mapping(p3b_type, mlp)
