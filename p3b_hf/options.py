"""Typed options of a run, and the command line generated from them (HF's ``HfArgumentParser`` pattern).

Every option is a dataclass field declared exactly once, with its help text in ``metadata``: the CLI
(``add_options`` -> argparse), the recipes (``options_from_mapping`` <- YAML) and Python callers
(construct the dataclasses) all read the same declaration. Library code receives the dataclasses, never an
``argparse.Namespace``.

Field metadata (see :func:`option`): ``help``; ``flag`` (default ``--field-name``); ``choices``;
``metavar``; ``parse`` (a ``str -> value`` function for types argparse cannot build, e.g. ``"a:1,b:2"``);
``nargs``; ``repeat=True`` lets a list flag be given several times (``--eval-split a --eval-split b`` =
``--eval-split a,b``); ``cli=False`` keeps a field out of the command line (set by code, e.g. a budget
shared by all methods). A field without a default is a required flag.

Which flags the user actually gave is recorded while parsing (:func:`given_options`), so that a flag the
chosen method does not read can be refused (:func:`p3b_hf.runner.check_given_options`) -- never by
comparing a value with its default.

This module imports nothing from the rest of p3b_hf except the error type, so every layer may use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import OptionsError, P3BError

AUGMENTS = ("deit", "glyph", "basic", "none")
IMAGE_CHECKS = ("full", "header", "off")
MISSING = dataclasses.MISSING


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    flag: str | None = None,
    choices: Iterable[Any] | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    nargs: str | None = None,
    repeat: bool = False,
    cli: bool = True,
) -> Any:
    """A dataclass field that also declares its command-line flag."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "parse": parse,
        "nargs": nargs,
        "repeat": repeat,
        "cli": cli,
    }
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_number(
    flag: str,
    value: Any,
    valid: str,
    ok: Callable[[Any], bool],
    *,
    integer: bool = False,
    none_ok: bool = False,
) -> None:
    """Raise one :class:`OptionsError` naming ``flag`` and the valid range ``valid`` unless ``value`` is a
    finite number (an integer when ``integer``) for which ``ok`` holds, or ``None`` when ``none_ok``.

    Why here: a NaN epoch count or a negative worker count otherwise surfaces as a traceback deep in the
    Trainer (or, for label smoothing >= 1, as a run that silently ends at chance accuracy)."""
    if value is None and none_ok:
        return
    kind = numbers.Integral if integer else numbers.Real
    if not (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) and ok(value)):
        raise OptionsError(f"{flag} {value!r} is out of range: give {valid}.")


def comma_list(text: str | Iterable[str]) -> list[str]:
    """``"a,b, c"`` (or a list of such strings) -> ``["a", "b", "c"]``: a list option's command-line form."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    out = [i.strip() for i in items if i.strip()]
    if not out:
        raise P3BError(f"{text!r} names nothing; give a comma-separated list such as a,b")
    return out


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options."""
    return [
        f
        for f in dataclasses.fields(cls)
        if f.metadata.get("help") is not None and f.metadata.get("cli", True)
    ]


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``list[X]`` stays as is."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return tp, False


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def add_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    defaults: Mapping[str, Any] | None = None,
    title: str | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
    one_of: Iterable[str] = (),
) -> Any:
    """Declare ``cls``'s options on ``parser`` (in an argument group ``title``; ``defaults`` override the
    dataclass defaults for this command, e.g. 300 fine-tune epochs; ``choices`` set a field's choices known
    only at run time, e.g. the registered methods; ``one_of``: fields of which exactly one must be given, in
    one required mutually exclusive group -- ``bench --model | --random-arch``). Returns the group."""
    group = parser.add_argument_group(title) if title else parser
    one_of = tuple(one_of)
    exclusive = group.add_mutually_exclusive_group(required=True) if one_of else None
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls):
        meta = f.metadata
        default = dict(defaults or {}).get(f.name, _default_of(f))
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        tp, _ = _base_type(hints[f.name])
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
            kw["default"] = bool(default) if default is not MISSING else False
        else:
            origin = typing.get_origin(tp)
            if meta.get("parse") is not None:
                kw["type"] = _argparse_type(meta["parse"])
                if meta.get("repeat"):
                    kw["action"] = "extend"  # the flag given twice: both lists, in order
            elif origin is list:
                kw["type"] = typing.get_args(tp)[0]
                kw["nargs"] = "+"
            elif tp in (int, float, str):
                kw["type"] = tp
            if meta.get("nargs"):
                kw["nargs"] = meta["nargs"]
            field_choices = dict(choices or {}).get(f.name) or meta.get("choices")
            if field_choices:
                kw["choices"] = tuple(field_choices)
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            if default is MISSING:
                kw["required"] = True
            else:
                kw["default"] = default
        target = exclusive if f.name in one_of else group
        if target is exclusive:
            kw.pop("required", None)  # the group is required, its members are not
        kw["action"] = _recording(target, kw.get("action"))
        target.add_argument(flag_of(f), **kw)
    return group


#: the Namespace attribute holding the dests of the flags given on the command line (see given_options)
GIVEN = "_given_options"


def _recording(container: Any, action: Any) -> type:
    """``action`` (an argparse action name or class; ``None`` = store) as a class that also records its dest
    in the namespace when the flag is on the command line. argparse only calls an action for a flag that
    was given; defaults are set without it, so this is exact (a flag given with its default value counts as
    given). The set travels from a subcommand's namespace to the parent's with the other attributes."""
    base = container._registry_get("action", action, action)

    class Recorded(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, GIVEN, frozenset(getattr(namespace, GIVEN, frozenset())) | {self.dest})

    Recorded.__name__ = f"Recorded{base.__name__}"
    return Recorded


def given_options(ns: argparse.Namespace) -> frozenset[str]:
    """The field names of the options given on the command line that produced ``ns`` (not the defaults)."""
    return frozenset(getattr(ns, GIVEN, frozenset()))


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its :class:`P3BError` message becomes argparse's one-line error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except P3BError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def options_from_namespace(cls: type, ns: argparse.Namespace, **extra: Any) -> Any:
    """``cls`` from the parsed flags (fields that are not on the command line keep their defaults)."""
    values = {f.name: getattr(ns, f.name) for f in cli_fields(cls) if hasattr(ns, f.name)}
    return cls(**values, **extra)


def options_from_mapping(
    classes: Iterable[type],
    mapping: Mapping[str, Any],
    what: str = "options",
    defaults: Mapping[str, Any] | None = None,
) -> dict[type, Any]:
    """Distribute a flat ``{field: value}`` mapping (a recipe stage's ``args``) over the option classes of a
    command: each key must name a command-line field of exactly one of them. Values may be given as YAML
    gives them (numbers, booleans, lists) or as the command line would (strings, parsed like the flag).
    ``defaults`` replace dataclass defaults of fields the mapping does not set (a command's own defaults).
    Returns ``{cls: instance}``; an unknown key is one :class:`P3BError` listing the valid ones."""
    classes = list(classes)
    owner: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in classes:
        for f in cli_fields(cls):
            owner.setdefault(f.name.replace("-", "_"), (cls, f))
    per_class: dict[type, dict[str, Any]] = {cls: {} for cls in classes}
    for key, value in dict(defaults or {}).items():
        if key in owner:
            per_class[owner[key][0]][owner[key][1].name] = value
    unknown = []
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name not in owner:
            unknown.append(key)
            continue
        cls, f = owner[name]
        per_class[cls][f.name] = _coerce(f, typing.get_type_hints(cls)[f.name], value, what)
    if unknown:
        raise P3BError(
            f"{what}: unknown option(s) {', '.join(map(str, unknown))}; valid: {', '.join(sorted(owner))}."
        )
    try:
        return {cls: cls(**values) for cls, values in per_class.items()}
    except TypeError as e:  # a required field is missing
        raise P3BError(f"{what}: {e}") from e


def _coerce(f: dataclasses.Field, hint: Any, value: Any, what: str) -> Any:
    if value is None:
        return None
    tp, _ = _base_type(hint)
    parse = f.metadata.get("parse")
    try:
        if parse is not None:
            return parse(value) if isinstance(value, str) else value
        if tp is bool:
            return bool(value)
        if typing.get_origin(tp) is list:
            item = typing.get_args(tp)[0]
            return [item(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if tp in (int, float, str):
            return tp(value)
    except (TypeError, ValueError) as e:
        raise P3BError(
            f"{what}: {f.name}={value!r} is not a valid {getattr(tp, '__name__', tp)} ({e})."
        ) from e
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise P3BError(f"{what}: {f.name}={value!r} is not one of {', '.join(map(str, choices))}.")
    return value


# ============================================================================ the common options
@dataclasses.dataclass
class DataOptions:
    """Which images, which columns and splits, and how training batches are augmented and mixed."""

    dataset: str = option(
        help="Hub data set id, preset (cifar100, food101, ifood2019, inat2019), save_to_disk "
        "dir, parquet dir or imagefolder dir"
    )
    image_column: str | None = option(None, help="image column (auto: img/image)")
    label_column: str | None = option(None, help="label column (auto: fine_label/label)")
    train_split: str = option("train", help="training split")
    eval_split: list[str] | None = option(
        None,
        parse=comma_list,
        repeat=True,
        metavar="SPLIT[,SPLIT]",
        help="eval split(s): several (a comma list, or the flag repeated) are "
        "each evaluated and reported by name, the first is the primary "
        "one (auto: validation/test, else a stratified 10 %% of train)",
    )
    domain_column: str | None = option(
        None,
        help="column naming each image's domain (presets pacs, office-home: "
        "'domain'); used with --train-domains / --test-domains",
    )
    train_domains: list[str] | None = option(
        None,
        parse=comma_list,
        repeat=True,
        metavar="A,B,C",
        help="source domains to train on (default: every domain not in --test-domains)",
    )
    test_domains: list[str] | None = option(
        None,
        parse=comma_list,
        repeat=True,
        metavar="D[,E]",
        help="held-out target domains, each its own eval set (default: every "
        "domain not in --train-domains); leave-one-domain-out: "
        "--test-domains sketch",
    )
    source_holdout: float = option(
        0.1,
        help="with domains: fraction of each (source domain, class) held out of "
        "training as the in-domain 'source' eval set, the reference of the "
        "source-vs-target gap (0 = train on all of it, no gap)",
    )
    max_train_samples: int | None = option(None, help="use at most this many training images (seeded subset)")
    max_eval_samples: int | None = option(None, help="evaluate on at most this many images (seeded subset)")
    augment: str = option(
        "deit",
        choices=AUGMENTS,
        help="training augmentation: DeiT (RandAugment, erasing, crop/flip), glyph, basic, none",
    )
    mixup: float = option(0.8, help="Mixup alpha (0 = off)")
    cutmix: float = option(1.0, help="CutMix alpha (0 = off)")
    label_smoothing: float = option(0.1, help="label smoothing of the training targets, in [0, 1)")
    max_bad_images: int = option(
        0,
        metavar="N",
        help="unreadable images (truncated, empty, not an image, decompression bomb) found by the "
        "check before training: with at most N of them they are left out and listed in the log, "
        "with more the run stops naming them",
    )
    image_check: str = option(
        "full",
        choices=IMAGE_CHECKS,
        help="the image check before training: 'full' decodes every image the run uses (JPEG at "
        "1/8 scale), 'header' reads only format, size and the end-of-file marker (faster; a "
        "corrupt middle is found only when training reads it), 'off'",
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """One :class:`OptionsError` per out-of-range value (also run on construction)."""
        check_number(
            "--source-holdout",
            self.source_holdout,
            "a fraction in [0, 1), e.g. 0.1 (0 = no source eval set)",
            lambda v: 0 <= v < 1,
        )
        for flag, value in (
            ("--max-train-samples", self.max_train_samples),
            ("--max-eval-samples", self.max_eval_samples),
        ):
            check_number(
                flag,
                value,
                "a whole number >= 1 (or leave it out: all)",
                lambda v: v >= 1,
                integer=True,
                none_ok=True,
            )
        for flag, value in (("--mixup", self.mixup), ("--cutmix", self.cutmix)):
            check_number(flag, value, "an alpha >= 0, e.g. 0.8 (0 = off)", lambda v: v >= 0)
        check_number(
            "--label-smoothing",
            self.label_smoothing,
            "a value in [0, 1), e.g. 0.1 (0 = off; 1 would make every target uniform: nothing to learn)",
            lambda v: 0 <= v < 1,
        )
        check_number(
            "--max-bad-images",
            self.max_bad_images,
            "a whole number >= 0 (0 = refuse any)",
            lambda v: v >= 0,
            integer=True,
        )
        if self.image_check not in IMAGE_CHECKS:
            raise OptionsError(
                f"--image-check {self.image_check!r} is invalid: give one of {', '.join(IMAGE_CHECKS)}."
            )

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0 or self.label_smoothing > 0


@dataclasses.dataclass
class TrainOptions:
    """How the Trainer runs: epochs, batch, optimiser, precision, device, logging."""

    epochs: float = option(50.0, help="training epochs")
    batch_size: int = option(64, help="per-device batch size")
    eval_batch_size: int | None = option(None, help="per-device eval batch size (default: --batch-size)")
    lr: float | None = option(5e-4, help="peak learning rate (AdamW)")
    weight_decay: float = option(0.05, help="AdamW weight decay")
    seed: int = option(0, help="random seed (model init of new heads, data order, augmentation)")
    bf16: bool = option(False, help="bf16 mixed precision")
    fp16: bool = option(False, help="fp16 mixed precision (with a loss scaler)")
    device: str = option(
        "auto", choices=("auto", "cpu", "cuda"), help="where to train (auto: cuda if visible)"
    )
    num_workers: int = option(0, help="data loader worker processes")
    logging_steps: int = option(50, help="log the training loss every N optimizer steps")
    save_strategy: str = option("epoch", cli=False, help="Trainer checkpoints: 'epoch' (resumable) or 'no'")
    save_steps: int | None = option(
        None,
        metavar="N",
        help="checkpoint every N optimizer steps instead of once per epoch (resumable; a SIGTERM "
        "or Ctrl-C checkpoints at the next step anyway)",
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """One :class:`OptionsError` per out-of-range value (also run on construction)."""
        check_number("--epochs", self.epochs, "a finite number > 0, e.g. 50", lambda v: v > 0)
        for flag, value, none_ok in (
            ("--batch-size", self.batch_size, False),
            ("--eval-batch-size", self.eval_batch_size, True),
        ):
            check_number(flag, value, "a whole number >= 1", lambda v: v >= 1, integer=True, none_ok=none_ok)
        check_number("--lr", self.lr, "a finite learning rate > 0, e.g. 5e-4", lambda v: v > 0, none_ok=True)
        check_number("--weight-decay", self.weight_decay, "a finite number >= 0, e.g. 0.05", lambda v: v >= 0)
        check_number(
            "--seed", self.seed, "a whole number in [0, 2**32)", lambda v: 0 <= v < 2**32, integer=True
        )
        check_number(
            "--num-workers",
            self.num_workers,
            "a whole number >= 0 (0 = load in the main process)",
            lambda v: v >= 0,
            integer=True,
        )
        check_number(
            "--logging-steps", self.logging_steps, "a whole number >= 1", lambda v: v >= 1, integer=True
        )
        if self.bf16 and self.fp16:
            raise P3BError("Give at most one of --bf16 / --fp16.")
        if self.save_steps is not None and self.save_steps < 1:
            raise P3BError(f"--save-steps {self.save_steps} must be >= 1 (or left out: once per epoch).")


@dataclasses.dataclass
class OutputOptions:
    """Where the run writes, and what happens to an existing directory and to checkpoints."""

    output_dir: str = option(help="output model directory (written atomically at the end)")
    overwrite: bool = option(
        False, help="replace an existing --output-dir (only once the new run has finished)"
    )
    keep_checkpoints: bool = option(False, help="keep the Trainer checkpoints in OUTPUT_DIR.work/")
    resume: bool = option(False, help="resume from the last complete checkpoint in OUTPUT_DIR.work/")


@dataclasses.dataclass
class KDOptions:
    """Knowledge distillation from a teacher model (P3B-Dist, VBP's fine-tune, ``finetune --teacher``)."""

    teacher: str | None = option(None, help="KD teacher: a model dir / Hub id fine-tuned on the same labels")
    kd_alpha: float = option(0.5, help="weight of the KD term (1 - alpha weighs the CE)")
    kd_temperature: float = option(1.0, help="KD temperature")
    kd_kind: str = option(
        "soft",
        choices=("soft", "hard"),
        help="soft KL, or DeiT's hard distillation (CE to the teacher's argmax)",
    )
    kd_reduction: str | None = option(
        None,
        choices=("deit", "batchmean"),
        help="soft KD scale: 'deit' = KL summed / (batch x classes) as DeiT's "
        "DistillationLoss; 'batchmean' = / batch, K times larger (default: the "
        "method's own -- deit for P3B-Dist and finetune, batchmean for VBP)",
    )


@dataclasses.dataclass
class PruneOptions:
    """What ``p3b-hf prune`` does on top of the common options: the model, the method and the budget."""

    model: str = option(help="Hub id or local model dir (ViT/DeiT image classifier)")
    method: str = option("p3b", help="pruning method (p3b, vbp, global, or a registered one)")
    prune_ratio: float | None = option(None, help="fraction of whole-model parameters to remove, e.g. 0.5")
    pad_to: int | None = option(
        None,
        metavar="N",
        help="save the pruned model with every width zero-padded to a multiple of N (e.g. "
        "8): exactly the same function, aligned shapes for GPU kernels",
    )

    def check(self) -> None:
        if self.prune_ratio is not None and not 0.0 < self.prune_ratio < 1.0:
            from .errors import BudgetError

            raise BudgetError(
                f"--prune-ratio={self.prune_ratio} is impossible: give the fraction of whole-model "
                "parameters to remove, strictly between 0 and 1 (e.g. 0.5)."
            )
        if self.pad_to is not None and self.pad_to < 1:
            raise P3BError(
                f"--pad-to {self.pad_to} is invalid; give a positive channel multiple such as 8 (or "
                "leave it out)."
            )


@dataclasses.dataclass
class FinetuneOptions:
    """``p3b-hf finetune`` on top of the common options: the DeiT recipe's schedule and the head."""

    model: str = option(help="(pruned) model dir or Hub id")
    grad_accum_steps: int = option(1, help="gradient accumulation steps")
    min_lr: float = option(1e-5, help="cosine schedule floor")
    warmup_epochs: float = option(0.0, help="linear warm-up epochs")
    schedule: str = option(
        "cosine",
        choices=("cosine", "constant"),
        help="lr schedule: cosine to --min-lr (the DeiT recipe) or constant with no gradient "
        "clipping (P3B's pruning-run recipe, e.g. for a dense baseline at equal recipe)",
    )
    eval_each_epoch: bool = option(False, help="evaluate after every epoch (logged)")
    new_head: bool = option(
        False,
        help="kept for compatibility: a classifier whose labels differ from the data set's is always replaced "
        "by a fresh head, as in prune (logged: old -> new label count)",
    )

    def check(self) -> None:
        if self.grad_accum_steps < 1:
            raise P3BError("--grad-accum-steps must be >= 1.")


#: the fine-tune command's defaults where they differ from a pruning run's (the P3B reference fine-tune)
#: (the KD scaling is not here: unset, the trainer applies its method's, DeiT's for the fine-tune)
FINETUNE_DEFAULTS = {"epochs": 300.0, "batch_size": 128, "lr": None}


def command_line(*parts: Any) -> str:
    """The flags that reproduce ``parts`` (option dataclasses): every command-line field that differs from
    its default, as ``--flag value``. For display (reports, the demo's "same run via the CLI"); never parsed
    back by p3b_hf."""
    out: list[str] = []
    for obj in parts:
        if obj is None or not dataclasses.is_dataclass(obj):
            continue
        for f in cli_fields(type(obj)):
            value, default = getattr(obj, f.name), _default_of(f)
            if default is not MISSING and value == default:
                continue
            flag = flag_of(f)
            if isinstance(value, bool):
                out += [flag] if value else [f"--no-{flag[2:]}"]
            elif isinstance(value, (list, tuple)) and f.metadata.get("parse") is not None:
                out += [flag, ",".join(map(str, value))]
            elif isinstance(value, (list, tuple)):
                out += [flag, *map(str, value)]
            elif isinstance(value, dict):
                out += [flag, ",".join(f"{k}:{v}" for k, v in value.items())]
            elif value is not None:
                out += [flag, str(value)]
    return " ".join(out)


# ------------------------------------------------------------------------------------- tool commands
@dataclasses.dataclass
class CostOptions:
    """``p3b-hf cost``: analytic params / MACs from a config alone."""

    model: str = option(help="model dir or Hub id (only config.json is read)")
    image_size: int | None = option(None, help="count at another input resolution")
    json: bool = option(False, help="print JSON instead of a table")


@dataclasses.dataclass
class PushOptions:
    """``p3b-hf push``: upload a pruned model dir to the Hub (:func:`p3b_hf.hub.push`)."""

    model: str = option(help="model dir written by `p3b-hf prune` or `p3b-hf finetune`")
    repo_id: str = option(help="target Hub repo, e.g. me/deit-small-cifar100-p3b50")
    private: bool = option(False, help="create the repo as private (if it is new)")
    revision: str | None = option(None, help="branch to push to (created from main if missing)")
    create_pr: bool = option(False, help="open a pull request instead of pushing to a branch")
    commit_message: str | None = option(None, help="the commit message (default: generated)")
    token: str | None = option(
        None,
        help="Hub token (default: HF_TOKEN / `hf auth login`); it and the connection are checked before the "
        "model is read (offline mode, no token, a rejected token, no connection: one line, exit 2)",
    )
    dataset_name: str | None = option(
        None, help="Hub data set id for the model card (default: the one in pruning_report.json)"
    )
    license: str | None = option(None, help="license tag for the model card, e.g. apache-2.0")
    no_model_card: bool = option(
        False, help="do not generate README.md (an existing README.md in the dir is uploaded instead)"
    )
    no_verify: bool = option(False, help="skip the load + forward check before uploading")
    with_onnx: bool = option(
        False,
        help="also upload onnx/ (model.onnx, model_int8.onnx, export_report.json from `p3b-hf export`) "
        "and describe it in the model card",
    )


#: ``bench --random-arch`` shapes and ``--plan-style`` values (random plans shaped like P3B's output, or uniform)
RANDOM_ARCHS = ("deit-tiny", "deit-small", "deit-base")
BENCH_PLAN_STYLES = ("p3b", "uniform")


@dataclasses.dataclass
class BenchOptions:
    """``p3b-hf bench``: images/s of a pruned model vs its dense original (``--model``) or of a random plan
    (``--random-arch``; exactly one of the two)."""

    model: str | None = option(
        None,
        help="pruned model dir or Hub id of any family (ViT, DeiT, BEiT, DINOv2, Swin, ConvNeXt); its dense "
        "original is --dense-model, else config.json base_model_name_or_path (refused if it cannot be loaded)",
    )
    random_arch: str | None = option(
        None,
        choices=RANDOM_ARCHS,
        help="benchmark a random-weight pruned model of this DeiT shape instead of --model",
    )
    dense_model: str | None = option(
        None,
        help="--model: the dense original to time against (dir or Hub id; default: config.json "
        "base_model_name_or_path); 'random': random weights of the dense shape (ViT/DeiT)",
    )
    keep: float = option(
        0.25, help="--random-arch: fraction of whole-model parameters kept (default 0.25 = 75%% pruned)"
    )
    plan_style: str = option(
        "p3b",
        choices=BENCH_PLAN_STYLES,
        help="--random-arch: P3B-like residual in/out subsets (default) or uniform slimming",
    )
    plan_round_to: int | None = option(
        None, help="--random-arch: round every kept width of the random plan to a multiple of this"
    )
    seed: int = option(0, help="seed of the random plan and of the timed images")
    device: str | None = option(None, choices=("cpu", "cuda"), help="default: cuda if available")
    dtype: str | None = option(
        None, choices=("bf16", "fp16", "fp32"), help="default: bf16 on cuda, fp32 on cpu"
    )
    batch_size: int | None = option(None, help="default: 1024 on cuda, 1 on cpu (P3B)")
    repeats: int = option(10, help="timed repeats; the median is reported")
    warmup: int = option(3, help="untimed warm-up passes")
    compile: bool = option(False, help="also time the optimised path under torch.compile")
    variants: str | None = option(
        None,
        help="comma list for all models: eager, fast, compiled[+round8|+gather|+index_add|"
        "+dense|+conv|+nofold|+alltokens] (default eager,fast for ViT/DeiT, eager for BEiT / DINOv2 / "
        "Swin / ConvNeXt, which have no fast path; with --onnx eager,fast,ort-fp32,ort-int8)",
    )
    pruned_variants: str = option(
        "", help="extra variants timed for the pruned model only, e.g. fast+round8,compiled+round8"
    )
    min_repeat_s: float | None = option(
        None,
        help="repeat forward passes until one timed repeat lasts this long (default 0.2 s on cpu, 0 on cuda)",
    )
    threads: int | None = option(None, help="torch CPU threads (default: torch's)")
    json_out: str | None = option(None, flag="--json", help="write the full report (JSON) here")
    onnx: bool = option(
        False,
        help="CPU deployment table instead: dense and pruned in PyTorch eager, fast "
        "(optimize_for_inference) and ONNX Runtime fp32 / int8, per --onnx-batch-sizes "
        "(needs p3b_hf[onnx]; --variants / --pruned-variants then take eager, fast, ort-fp32, "
        "ort-int8[+nofold|+readfold|+hf|+static|+opsetN])",
    )
    onnx_batch_sizes: str = option("1,32", help="--onnx: batch sizes timed (default 1,32)")
    opset: int | None = option(None, help="--onnx: ONNX opset (default 20)")
