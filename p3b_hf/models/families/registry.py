"""THE family registry: :class:`~.record.Family` records keyed by stock and pruned ``model_type`` and by class
name, and the lookups generic code uses (:func:`family_of`, :func:`require_family`) plus the one
:class:`~p3b_hf.errors.UnsupportedModelError` for a model no record describes."""

from __future__ import annotations

from typing import Any

from ...errors import P3BError, UnsupportedModelError
from .record import PLAIN, STAGED, Family

#: stock model_type -> record, in registration order
REGISTRY: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}
_BY_CLASS: dict[str, Family] = {}
#: class name / model_type of a model a record knows it cannot run -> why (``Family.refused_classes``)
_REFUSED: dict[str, str] = {}


def register_family(
    family: Family, *, auto_classes: bool = True, remote_code: bool = True, replace: bool = False
) -> Family:
    """Add ``family`` to the registry (keyed by its stock and pruned ``model_type`` and its class names).

    ``auto_classes``: register the pruned config / classifier / backbone with ``AutoConfig``,
    ``AutoModelForImageClassification`` and ``AutoModel``, so pruned checkpoints load without
    ``trust_remote_code``. ``remote_code``: also write ``auto_map`` and the code files on ``save_pretrained``
    (the built-in families' self-contained model files); a family defined elsewhere (a test, a plug-in) says
    ``False``. A ``model_type`` or class already registered by another family is refused unless
    ``replace=True`` says the replacement is meant."""
    taken = [k for k in (family.name, family.pruned_model_type) if k in _BY_MODEL_TYPE]
    taken += [c for c in family.classes if c in _BY_CLASS]
    if (
        taken
        and not replace
        and any((_BY_MODEL_TYPE.get(k) or _BY_CLASS.get(k)) is not family for k in taken)
    ):
        raise P3BError(
            f"family {family.name!r}: {', '.join(taken)} already registered; choose other model_types / class "
            "names, or pass register_family(..., replace=True) to replace the registered family."
        )
    for key in taken if replace else ():
        old = _BY_MODEL_TYPE.get(key) or _BY_CLASS.get(key)
        if old is not None and old is not family:
            unregister_family(old.name)
    if family.kind not in (PLAIN, STAGED):
        raise ValueError(f"Family.kind must be {PLAIN!r} or {STAGED!r}, got {family.kind!r}")
    if family.plain and (family.stock_layout is None or family.pruned_layout is None):
        raise ValueError(f"plain family {family.name!r} needs stock_layout and pruned_layout")
    if family.staged and (family.stage_paths is None or family.dense_widths is None or family.cost is None):
        raise ValueError(
            f"staged family {family.name!r} needs stage_paths, dense_widths, stage_dims and cost"
        )
    REGISTRY[family.name] = family
    _BY_MODEL_TYPE[family.name] = family
    _BY_MODEL_TYPE[family.pruned_model_type] = family
    for cls in family.classes:
        _BY_CLASS[cls] = family
    _REFUSED.update(family.refused_classes)
    if auto_classes:
        from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

        cfg, model, backbone = family.config_class, family.model_class, family.backbone_class
        AutoConfig.register(family.pruned_model_type, cfg, exist_ok=True)
        AutoModelForImageClassification.register(cfg, model, exist_ok=True)
        AutoModel.register(cfg, backbone, exist_ok=True)
        if remote_code:
            cfg.register_for_auto_class()
            model.register_for_auto_class("AutoModelForImageClassification")
            backbone.register_for_auto_class("AutoModel")
        else:  # a subclass of a built-in pruned class must not inherit its auto_map
            for c in (cfg, model, backbone):
                c._auto_class = None
    return family


def unregister_family(name: str) -> Family | None:
    """Remove the family registered under stock ``model_type`` ``name`` (a plug-in's or a test's; the Auto
    class mappings stay, as transformers has no way to remove them). Returns the record, if there was one."""
    family = REGISTRY.pop(name, None)
    if family is not None:
        for key in (family.name, family.pruned_model_type):
            _BY_MODEL_TYPE.pop(key, None)
        for cls in family.classes:
            _BY_CLASS.pop(cls, None)
        for key in family.refused_classes:
            _REFUSED.pop(key, None)
    return family


def families(kind: str | None = None) -> list[Family]:
    """Every registered record (of ``kind`` if given)."""
    return [f for f in REGISTRY.values() if kind is None or f.kind == kind]


def pruned_configs() -> tuple[type, ...]:
    """Every pruned config class (``isinstance(cfg, pruned_configs())``: a p3b_hf pruned / full-width model)."""
    return tuple(f.config_class for f in REGISTRY.values())


def pruned_model_types() -> tuple[str, ...]:
    """The pruned ``model_type`` of every registered family (``p3b_vit`` ...), in registration order."""
    return tuple(f.pruned_model_type for f in REGISTRY.values())


def is_pruned_config(config: Any) -> bool:
    """Whether ``config`` is a p3b_hf pruned config (of any family)."""
    return isinstance(config, pruned_configs())


def _model_type(config: Any) -> str:
    return str(getattr(config, "model_type", "") or "")


def family_of(obj: Any) -> Family | None:
    """The record of a model (stock or pruned, DDP-wrapped too: by class, then by config) or of a config (by
    ``model_type``, stock or pruned); ``None`` if no record describes it."""
    obj = getattr(obj, "module", obj)
    if hasattr(obj, "config") and not isinstance(obj, type):
        for cls in type(obj).__mro__:
            if cls.__name__ in _BY_CLASS:
                return _BY_CLASS[cls.__name__]
        return None
    return _BY_MODEL_TYPE.get(_model_type(obj))


def needs_conversion(model: Any) -> bool:
    """Whether ``model`` is a stock classifier that generic code reads only after its record's ``from_stock``
    hook converted it (:func:`prunable`)."""
    inner = getattr(model, "module", model)
    fam = family_of(inner) if hasattr(inner, "config") else None
    return fam is not None and fam.from_stock is not None and not is_pruned_config(inner.config)


def prunable(model: Any) -> Any:
    """``model`` itself, or -- for a stock classifier whose record has a ``from_stock`` hook -- the same function
    in the family's full-width pruned format (bit for bit), which every generic code path reads. Models of
    other families, pruned models and non-models pass through unchanged."""
    inner = getattr(model, "module", model)
    return family_of(inner).from_stock(inner) if needs_conversion(inner) else model


def flat_config(config: Any) -> Any:
    """``config`` itself, or -- for a stock config of a family with a ``from_stock`` hook (CLIP's nested
    ``CLIPConfig``) -- the equivalent full-width pruned config, whose fields generic code reads."""
    fam = family_of(config)
    if fam is None or fam.from_stock is None or is_pruned_config(config):
        return config
    return fam.config_class.from_dense_config(config)


def family_by_name(name: str) -> Family:
    """The record registered under stock ``model_type`` ``name`` (KeyError naming the registered ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no family {name!r}; registered: {', '.join(REGISTRY)}") from None


def supported_classes_text() -> str:
    """Every supported classifier class, generated from the registry (a new family is named in every error
    without editing it)."""
    plain = [c for f in families(PLAIN) for c in f.classes]
    stage = [c for f in families(STAGED) for c in f.classes]
    return (
        f"{', '.join(plain)} (all methods) and {', '.join(stage)} (MLP hidden units, --method vbp / global)"
    )


def refusal_reason(obj: Any) -> str | None:
    """Why p3b_hf refuses a model or config a record names in ``refused_classes`` (by class name, then
    ``model_type`` / ``architectures``); ``None`` for any other model."""
    obj = getattr(obj, "module", obj)
    names = [c.__name__ for c in type(obj).__mro__] if hasattr(obj, "config") else []
    config = obj.config if hasattr(obj, "config") else obj
    names += [_model_type(config), *(getattr(config, "architectures", None) or [])]
    return next((_REFUSED[n] for n in names if n in _REFUSED), None)


def unsupported_model_error(subject: str, reason: str | None = None) -> UnsupportedModelError:
    """The one error for a model p3b_hf does not handle (every entry point raises it): ``subject`` names the
    model (its class, or its ``model_type`` when only the config was read), ``reason`` why, if known."""
    why = f" ({reason})" if reason else ""
    return UnsupportedModelError(
        f"p3b_hf cannot prune a {subject}{why}: supported classes are {supported_classes_text()}. Load one of "
        "these image classifiers, e.g. AutoModelForImageClassification.from_pretrained("
        "'facebook/deit-small-patch16-224'), 'microsoft/beit-base-patch16-224', 'facebook/dinov2-small' or "
        "'microsoft/swin-tiny-patch4-window7-224'."
    )


def config_subject(config: Any) -> str:
    """How an error names the model of a config: its class (``architectures``) and ``model_type``."""
    mt = _model_type(config)
    arch = getattr(config, "architectures", None) or []
    return f"{arch[0]} (model_type {mt!r})" if arch else f"model of model_type {mt!r}"


def is_supported_config(config: Any) -> bool:
    """Whether a stock or pruned config belongs to a registered family (``model_type`` only)."""
    return _model_type(config) in _BY_MODEL_TYPE


def require_family(config: Any, kind: str | None = None) -> Family:
    """The record of a stock or pruned config; the one :class:`UnsupportedModelError` if there is none, or if
    ``kind`` is given and the family is of the other kind."""
    fam = family_of(config)
    if fam is None:
        raise unsupported_model_error(config_subject(config), refusal_reason(config))
    if kind is not None and fam.kind != kind:
        supported = ", ".join(f.name for f in families(kind))
        if fam.staged:
            raise UnsupportedModelError(
                f"model_type {_model_type(config)!r} is a hierarchical family: only its MLP hidden units are "
                f"pruned (--method vbp / global); this code path needs a plain ViT block ({supported})."
            )
        raise UnsupportedModelError(
            f"model_type {_model_type(config)!r} is a plain-ViT family; this code path needs a hierarchical "
            f"family ({supported})."
        )
    return fam


def staged_family_of(obj: Any) -> Family | None:
    """The record of a staged (Swin / ConvNeXt-like) model or config, else ``None``."""
    fam = family_of(obj)
    return fam if fam is not None and fam.staged else None


def family_of_config(config: Any) -> str:
    """Name of the plain family of a stock or pruned config (raises for staged / unknown ones)."""
    return require_family(config, PLAIN).name


def stage_family_of_config(config: Any) -> Family | None:
    """The record of a staged config, else ``None`` (kept for callers that branch on the kind)."""
    return staged_family_of(config)


def dense_intermediate_size(config: Any) -> int:
    """MLP width of a stock or pruned plain config (some store ``mlp_ratio`` instead of ``intermediate_size``)."""
    f = getattr(config, "intermediate_size", None)
    if f is None:
        fam = family_of(config)
        if fam is not None and fam.is_gated(config) and fam.gated_mlp.width is not None:
            return int(fam.gated_mlp.width(config))
        f = int(int(config.hidden_size) * config.mlp_ratio)
    return int(f)
