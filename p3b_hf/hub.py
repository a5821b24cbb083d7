"""Push a pruned model dir to the Hugging Face Hub, with a generated model card.

Why not ``model.push_to_hub``: it uploads only what ``save_pretrained`` writes (no image processor, no
pruning report or plots) and its card says nothing about the pruning. :func:`push_pruned` uploads an
explicit list of files from a model dir written by ``p3b-hf prune`` / ``p3b-hf finetune``:

- ``model.safetensors`` (or its shards + index) and ``config.json`` with the per-layer widths and
  ``auto_map``;
- the code files named in ``auto_map`` (each family's ``configuration_….py`` and ``modeling_….py``)
  and the shared ones they import relatively (``modeling_p3b_layers.py``,
  ``modeling_p3b_checkpoint.py``), so stock transformers loads the repo with ``trust_remote_code=True``
  (with ``p3b_hf`` installed the locally registered classes are used and no remote code runs);
- ``preprocessor_config.json``, ``width_plan.json``, ``pruning_report.json``, ``plots/*.png``;
- a ``README.md`` model card built from ``pruning_report.json`` (base model, data set, method,
  ratio, params/MACs before and after, accuracy -- per eval set / domain with the source-vs-target gap
  when the run had several --, the widths plot).

Everything goes up in **one** ``HfApi.create_commit`` (atomic on the Hub: no half-pushed repo).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

from .errors import CheckpointError, HubError, P3BError
from .models.families import pruned_model_types
from .options import PushOptions
from .report import model_ref, portable

REPORT_NAME = "pruning_report.json"
#: files uploaded when present (besides the weights, the auto_map code files and plots/*.png)
EXTRA_FILES = ("preprocessor_config.json", "width_plan.json", REPORT_NAME)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class PushResult:
    """What was pushed where (also handy for tests and logs)."""

    repo_id: str
    revision: str | None
    commit_url: str
    commit_oid: str
    files: list[str] = field(default_factory=list)
    model_card: str = ""


# ---------------------------------------------------------------------------------------- model dir checks
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-save the model dir.") from e


def check_model_dir(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Return ``config.json`` of a pushable model dir, or raise :class:`CheckpointError` naming the fix."""
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(
            f"--model {d} is not a directory; give the output dir of `p3b-hf prune` or "
            "`p3b-hf finetune` (it holds config.json and model.safetensors)."
        )
    config = _read_json(d / "config.json")
    if config is None:
        raise CheckpointError(f"{d} has no config.json; it is not a saved HF model dir.")
    if not _weight_files(d):
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in (".bin", ".pth", ".pt"))
        hint = (
            f" It holds pickle weights ({', '.join(pickles)}); re-save with model.save_pretrained(dir) "
            "to get safetensors."
            if pickles
            else ""
        )
        raise CheckpointError(f"{d} has no model.safetensors; only safetensors weights are pushed.{hint}")
    return config


def _weight_files(d: Path) -> list[str]:
    names = sorted(p.name for p in d.glob("*.safetensors"))
    if (d / "model.safetensors.index.json").exists():
        names.append("model.safetensors.index.json")
    return names


def _code_files(config: dict[str, Any], directory: Path | None = None) -> list[str]:
    """The ``.py`` files named by ``auto_map`` (``"modeling_x.XForImageClassification"``) and, read
    from the copies in ``directory``, the files they import relatively (``from .modeling_p3b_layers import``),
    recursively: what ``from_pretrained(trust_remote_code=True)`` fetches, found by transformers' own parser."""
    from transformers.dynamic_module_utils import get_relative_imports

    files = set()
    for ref in (config.get("auto_map") or {}).values():
        ref = ref[0] if isinstance(ref, (list, tuple)) else ref
        if not ref or "--" in ref:  # code hosted in another repo: nothing to upload from here
            continue
        files.add(ref.rsplit(".", 1)[0] + ".py")
    todo = sorted(files) if directory is not None else []
    while todo:
        path = Path(directory) / todo.pop()  # type: ignore[arg-type]
        for module in get_relative_imports(path) if path.is_file() else []:
            if f"{module}.py" not in files:
                files.add(f"{module}.py")
                todo.append(f"{module}.py")
    return sorted(files)


def _resave_with_code(model_dir: Path, staging: Path) -> list[str]:
    """Re-save weights + config through ``save_pretrained`` so the auto_map code files are written."""
    import p3b_hf  # noqa: F401  (registers the classes and their auto_map)

    from .loading import load_model

    model = load_model(str(model_dir))
    model.save_pretrained(staging)
    return sorted(p.name for p in staging.iterdir() if p.is_file())


def verify_loads(model_dir: str | os.PathLike) -> None:
    """Load the dir with p3b_hf and run one forward, so a broken dir is never pushed."""
    import torch

    from .loading import load_model

    model = load_model(str(model_dir)).eval()
    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
    with torch.no_grad():
        out = model(pixel_values=torch.zeros(1, cfg.num_channels, size, size))
    if not torch.isfinite(out.logits).all():
        raise CheckpointError(f"{model_dir} produces non-finite logits; not pushing it.")


def check_hub_access(api: HfApi, token: str | None) -> str:
    """Before any work: offline mode, the token and the connection, each as one :class:`HubError` line.

    Why: the upload itself would end in a traceback from deep inside huggingface_hub / httpx
    (``OfflineModeIsEnabled``, ``LocalTokenNotFoundError``, ``httpx.ConnectError``), after the model was
    loaded and verified. One ``whoami`` call proves the endpoint is reachable and the token is accepted;
    returns the account name.
    """
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    offline = (
        "HF_HUB_OFFLINE=1 is set (offline mode): a push needs the network. Unset it "
        "(`HF_HUB_OFFLINE=0 p3b-hf push ...`) and try again."
    )
    try:
        info = api.whoami(token=token)
    except OfflineModeIsEnabled as e:
        raise HubError(offline) from e
    except LocalTokenNotFoundError as e:
        if is_offline_mode():
            raise HubError(offline) from e
        raise HubError(
            "No Hugging Face token found (HF_TOKEN is unset and no `hf auth login` token in HF_HOME): "
            "log in with `hf auth login`, set HF_TOKEN, or pass --token with a write token."
        ) from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(
                f"The Hub at {api.endpoint} rejected the token (HTTP {status}): log in again with "
                "`hf auth login` or pass --token with a valid write token."
            ) from e
        raise HubError(
            f"The Hub at {api.endpoint} answered HTTP {status} to a token check ({_first_line(e)}); "
            "try again later or check HF_ENDPOINT."
        ) from e
    except Exception as e:  # httpx / requests connection errors, timeouts, DNS, proxies
        if not _is_network_error(e):
            raise
        raise HubError(
            f"Cannot reach the Hub at {api.endpoint} ({type(e).__name__}: {_first_line(e)}): check the "
            "network, proxy settings and HF_ENDPOINT, then try again."
        ) from e
    return str((info or {}).get("name", ""))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _is_network_error(e: BaseException) -> bool:
    """A connection-level failure (httpx for huggingface_hub >= 1.0, requests before; both OSError-like)."""
    if isinstance(e, (OSError, TimeoutError)):
        return True
    return type(e).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3")


# ---------------------------------------------------------------------------------------- model card
def _fmt_count(n: float | None, unit: str) -> str:
    if n is None:
        return "n/a"
    if unit == "G":
        return f"{n / 1e9:.3f} G"
    return f"{n / 1e6:.2f} M"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _hub_id(name: Any) -> str | None:
    """``name`` if it is a Hub repo id (``org/name``, or a data preset such as ``cifar100``), not a local path."""
    if not isinstance(name, str) or Path(name).exists():
        return None
    from .data import PRESETS

    preset = PRESETS.get(name.lower())
    if preset is not None:
        return preset.hub_id
    return name if _HUB_ID.match(name) else None


def build_model_card(
    model_dir: str | os.PathLike,
    repo_id: str,
    config: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    dataset: str | None = None,
    license: str | None = None,
    with_onnx: bool = False,
) -> str:
    """Model card text (YAML metadata + markdown) from ``pruning_report.json`` and ``config.json``.

    Works without a report too (then params/MACs come from the config via :func:`count_cost`). Paths of the
    machine that made the model never reach the card: the base model and data set are named by their Hub
    id or last path component (:func:`p3b_hf.report.model_ref`), also for reports written before that rule.
    """
    d = Path(model_dir)
    config = config if config is not None else check_model_dir(d)
    report = report if report is not None else (_read_json(d / REPORT_NAME) or {})
    config, report, dataset = portable(config), portable(report), model_ref(dataset)
    ft = report.get("finetune") or {}
    base = report.get("base_model") or config.get("base_model_name_or_path")
    data_name = dataset or ft.get("dataset") or report.get("dataset")
    data_name = _hub_id(data_name) or data_name
    method = report.get("method") or config.get("pruning_method") or "unknown"
    ratio = report.get("prune_ratio_requested", config.get("prune_ratio"))
    dense = report.get("dense") or {}
    pruned = report.get("pruned") or {}
    if not pruned:
        from transformers import AutoConfig

        from . import count_cost

        try:
            cost = count_cost(AutoConfig.from_pretrained(str(d)))
            pruned = {"params": cost["params"], "macs": cost["macs"]}
        except (OSError, ValueError):  # unknown model type: leave the numbers out
            pruned = {}
    acc = (report.get("eval") or {}).get("accuracy")
    dense_acc = (report.get("dense_eval") or {}).get("accuracy")
    ft_acc = (ft.get("eval") or {}).get("accuracy")
    final_acc = ft_acc if ft_acc is not None else acc

    eval_results = None
    if final_acc is not None and _hub_id(data_name):
        domains = (ft.get("domains") if ft.get("eval_sets") else None) or report.get("domains") or {}
        split = f"held-out domain(s): {', '.join(domains['test'])}" if domains.get("test") else None
        eval_results = [
            EvalResult(
                task_type="image-classification",
                dataset_type=data_name,
                dataset_name=data_name,
                metric_type="accuracy",
                metric_value=float(final_acc),
                dataset_split=split,
            )
        ]
    card_data = ModelCardData(
        base_model=_hub_id(base),
        datasets=[data_name] if _hub_id(data_name) else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        model_name=repo_id.split("/")[-1],
        tags=["p3b_hf", "pruning", "structured-pruning", "vision-transformer", f"pruning-{method}"],
        eval_results=eval_results,
    )

    version = config.get("p3b_hf_version") or report.get("p3b_hf_version")
    made_with = f"p3b_hf {version}" if version else "p3b_hf"
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    lines.append(
        f"A structurally pruned {config.get('model_type', 'ViT')} image classifier made with "
        f"`{made_with}` (method **{method}**"
        + (
            f", requested prune ratio **{ratio:g}** of all parameters"
            if isinstance(ratio, (int, float))
            else ""
        )
        + ")."
    )
    lines.append("")
    lines += [
        "| | |",
        "|---|---|",
        f"| base model | {base or 'n/a'} |",
        f"| data set | {data_name or 'n/a'} |",
        f"| method | {method} |",
        f"| requested prune ratio | {ratio if ratio is not None else 'n/a'} |",
        f"| params | {_fmt_count(dense.get('params'), 'M')} -> {_fmt_count(pruned.get('params'), 'M')} |",
        f"| MACs / image | {_fmt_count(dense.get('macs'), 'G')} -> {_fmt_count(pruned.get('macs'), 'G')} |",
    ]
    if report.get("achieved_param_reduction") is not None:
        lines.append(f"| achieved param reduction | {_pct(report['achieved_param_reduction'])} |")
    if report.get("achieved_mac_reduction") is not None:
        lines.append(f"| achieved MAC reduction | {_pct(report['achieved_mac_reduction'])} |")
    lines.append(f"| top-1 accuracy, dense | {_pct(dense_acc)} |")
    lines.append(f"| top-1 accuracy, right after pruning | {_pct(acc)} |")
    if ft:
        lines.append(
            f"| top-1 accuracy, after fine-tuning ({ft.get('epochs', '?')} epochs"
            + (", KD" if ft.get("teacher") else "")
            + f") | {_pct(ft_acc)} |"
        )
    from .latency.report import card_lines

    lines += card_lines(report.get("latency"))
    removed = report.get("removed_sub_blocks") or []
    if removed:
        lines.append(f"| removed sub-blocks | {', '.join(removed)} |")
    lines.append("")
    lines += eval_set_section(report)
    if (d / "plots" / "widths.png").exists():
        lines += ["## Kept widths per layer", "", "![kept widths per layer](plots/widths.png)", ""]
    widths = report.get("widths")
    if widths and "stage" in widths[0]:  # Swin / ConvNeXt: per stage and block
        lines += ["| stage | block | width | MLP |", "|---|---|---|---|"]
        lines += [f"| {w['stage']} | {w['block']} | {w.get('dim')} | {w.get('mlp')} |" for w in widths]
        lines.append("")
    elif widths:
        lines += [
            "| layer | heads | head dim | MLP | attn in/out | MLP in/out |",
            "|---|---|---|---|---|---|",
        ]
        for i, w in enumerate(widths):
            lines.append(
                f"| {i} | {w.get('heads')} | {w.get('head_dim')} | {w.get('mlp')} | "
                f"{w.get('attn_in')}/{w.get('attn_out')} | {w.get('mlp_in')}/{w.get('mlp_out')} |"
            )
        lines.append("")
    lines += [
        "## Usage",
        "",
        f"With `p3b_hf` installed, no remote code runs. It is not on PyPI: install it from a checkout of its "
        f"source repository (`pip install -e .` in the checkout; this model was made with `{made_with}`):",
        "",
        "```python",
        f"import p3b_hf  # registers the pruned classes ({', '.join(pruned_model_types())})",
        "from transformers import AutoImageProcessor, AutoModelForImageClassification",
        f'model = AutoModelForImageClassification.from_pretrained("{repo_id}")',
        f'processor = AutoImageProcessor.from_pretrained("{repo_id}")',
        "```",
        "",
        "With stock transformers only, the self-contained code files in this repo are used:",
        "",
        "```python",
        f'model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)',
        "```",
        "",
        "Each layer has its own widths (`layer_num_heads`, `layer_head_dims`, `layer_intermediate_sizes`, "
        "and the residual channel subsets `layer_attn_in/out`, `layer_mlp_in/out` in `config.json`; Swin / "
        "ConvNeXt: `block_intermediate_sizes` etc. per stage and block); the "
        "weights are physically smaller, parameter names follow the stock HF checkpoints of the family. "
        "`AutoModel.from_pretrained` gives the backbone without its head. `pruning_report.json` holds "
        "the full run report.",
        "",
    ]
    if with_onnx:  # the ONNX files pushed with --with-onnx: what they are, their checks and speed
        from .export import card_section, load_export_report

        lines += card_section(load_export_report(d) or {}, repo_id)
    body = portable("\n".join(lines))  # a last guard: no absolute path of this machine in the card
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))


def eval_set_section(report: dict[str, Any]) -> list[str]:
    """Model-card lines: accuracy per eval set (held-out domains, the in-domain source set, eval splits),
    the dense model's where measured, and the source-vs-target gap; ``[]`` for a run with one eval set.
    A fine-tuned model's own numbers (``finetune`` section) win over the pruning run's."""
    ft = report.get("finetune") or {}
    after_ft = bool(ft.get("eval_sets"))
    sets = ft.get("eval_sets") if after_ft else report.get("eval_sets")
    if not sets:
        return []
    dense = None if after_ft else report.get("dense_eval_sets")
    domains = (ft.get("domains") if after_ft else None) or report.get("domains") or {}
    gap = (ft.get("domain_gap") if after_ft else report.get("domain_gap")) or {}
    held_out = set(domains.get("test") or [])

    def role(name: str) -> str:
        if name == domains.get("source_set"):
            return f"in-domain: held-out images of the training domains ({', '.join(domains.get('train') or [])})"
        if name == "target" and domains:
            return f"all held-out domains ({', '.join(sorted(held_out))})"
        if name in held_out or name.removeprefix("domain ") in held_out:
            return "held-out domain (never trained on)"
        return "eval split"

    title = "after fine-tuning" if after_ft else "after pruning"
    lines = [f"## Accuracy per eval set ({title})", ""]
    if domains:
        lines += [
            f"Domain generalisation: trained on the domains {', '.join(domains.get('train') or [])} of column "
            f"`{domains.get('column')}`, tested on the held-out domain(s) {', '.join(domains.get('test') or [])}.",
            "",
        ]
    lines += ["| eval set | what | images | top-1 | dense top-1 |", "|---|---|---|---|---|"]
    for name, m in sets.items():
        d = (dense or {}).get(name) or {}
        lines.append(
            f"| {name} | {role(name)} | {m.get('samples', 'n/a')} | {_pct(m.get('accuracy'))} | "
            f"{_pct(d.get('accuracy'))} |"
        )
    lines.append("")
    if gap.get("gap") is not None:
        text = (
            f"Source-vs-target gap (`{gap['source_set']}` minus `{gap['target_set']}` top-1): "
            f"**{100 * gap['gap']:+.2f} pp**"
        )
        if gap.get("gap_change") is not None:
            text += (
                f"; dense model {100 * gap['dense_gap']:+.2f} pp, so pruning changed it by "
                f"{100 * gap['gap_change']:+.2f} pp"
            )
        lines += [text + ".", ""]
    return lines


# ---------------------------------------------------------------------------------------- push
def _portable_config(files: dict[str, Path], staging: Path) -> None:
    """Upload ``config.json`` with a local ``base_model_name_or_path`` reduced to its name: locally the absolute
    path lets ``p3b-hf bench`` find the dense original from any directory, on the Hub it would only leak this
    machine's layout (a Hub id is kept as is)."""
    cfg = json.loads(files["config.json"].read_text())
    base = cfg.get("base_model_name_or_path")
    if not isinstance(base, str) or not os.path.isabs(base):
        return
    cfg["base_model_name_or_path"] = model_ref(base)
    out = staging / "portable_config" / "config.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    files["config.json"] = out


def collect_files(
    model_dir: str | os.PathLike, config: dict[str, Any], with_onnx: bool = False
) -> dict[str, Path]:
    """``path_in_repo -> local file`` for everything :func:`push_pruned` uploads (card excluded)."""
    d = Path(model_dir)
    if with_onnx:
        from .export import FP32_NAME, INT8_NAME, ONNX_DIR
        from .export import REPORT_NAME as EXPORT_REPORT

        if not (d / ONNX_DIR / FP32_NAME).exists() or not (d / ONNX_DIR / EXPORT_REPORT).exists():
            raise CheckpointError(
                f"--with-onnx: {d} has no {ONNX_DIR}/{FP32_NAME} with its {EXPORT_REPORT}; run "
                f"`p3b-hf export --model {d}` first."
            )
        onnx_files = {
            f"{ONNX_DIR}/{n}": d / ONNX_DIR / n
            for n in (FP32_NAME, INT8_NAME, EXPORT_REPORT)
            if (d / ONNX_DIR / n).exists()
        }
    else:
        onnx_files = {}
    files: dict[str, Path] = {name: d / name for name in _weight_files(d)}
    files["config.json"] = d / "config.json"
    for name in _code_files(config, d):
        files[name] = d / name
    for name in EXTRA_FILES:
        if (d / name).exists():
            files[name] = d / name
    for png in sorted((d / "plots").glob("*.png")) if (d / "plots").is_dir() else []:
        files[f"plots/{png.name}"] = png
    files.update(onnx_files)
    return files


def push(opts: PushOptions, *, api: HfApi | None = None) -> PushResult:
    """``p3b-hf push``: :func:`push_pruned` with the command's typed options."""
    return push_pruned(
        opts.model,
        opts.repo_id,
        private=True if opts.private else None,
        revision=opts.revision,
        commit_message=opts.commit_message,
        token=opts.token,
        create_pr=opts.create_pr,
        dataset=opts.dataset_name,
        license=opts.license,
        model_card=not opts.no_model_card,
        verify=not opts.no_verify,
        api=api,
        with_onnx=opts.with_onnx,
    )


def push_pruned(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    dataset: str | None = None,
    license: str | None = None,
    model_card: bool = True,
    verify: bool = True,
    api: HfApi | None = None,
    with_onnx: bool = False,
) -> PushResult:
    """Upload a pruned model dir to ``repo_id`` in one commit and return what was pushed.

    ``revision``: a branch (created from ``main`` if missing). ``api``: an ``HfApi`` (tests pass a
    recording subclass); the default talks to ``HF_ENDPOINT``. ``verify``: load the dir and run one
    forward pass before uploading anything. ``with_onnx``: also upload ``onnx/`` (written by
    ``p3b-hf export``; refused if missing) and describe it in the model card. Offline mode, a missing or
    rejected token and an unreachable endpoint are :class:`HubError` before any work (:func:`check_hub_access`).
    """
    if not _HUB_ID.match(repo_id or ""):
        raise P3BError(f"--repo-id {repo_id!r} is not a Hub repo id; use 'user-or-org/name'.")
    d = Path(model_dir)
    config = check_model_dir(d)
    api = api if api is not None else HfApi()
    check_hub_access(api, token)  # offline / no token / no connection: one line, before any work
    with tempfile.TemporaryDirectory(prefix="p3b_hf_push_") as tmp:
        staging = Path(tmp)
        files = collect_files(d, config, with_onnx=with_onnx)
        is_p3b = config.get("model_type") in pruned_model_types()
        missing_code = [n for n in _code_files(config, d) if not (d / n).exists()]
        resaved = is_p3b and (not config.get("auto_map") or bool(missing_code))
        if resaved:
            # saved without `import p3b_hf` (no register_for_auto_class) or the .py files were lost:
            # re-save through save_pretrained, which writes the code files and auto_map.
            for name in _resave_with_code(d, staging):
                files[name] = staging / name
            config = json.loads((staging / "config.json").read_text())
            files = {
                k: v for k, v in files.items() if not k.endswith(".py") or k in _code_files(config, staging)
            }
        if is_p3b and not _code_files(config):
            raise CheckpointError(
                f"{d}/config.json has no auto_map even after re-saving; import p3b_hf before "
                "save_pretrained so the classes register for AutoModel."
            )
        if not (d / "preprocessor_config.json").exists():
            import warnings

            warnings.warn(
                f"{d} has no preprocessor_config.json: AutoImageProcessor.from_pretrained('{repo_id}') "
                "will fail. Save the image processor into the model dir first.",
                stacklevel=2,
            )
        if verify:
            verify_loads(staging if resaved else d)
        _portable_config(files, staging)
        card = ""
        if model_card:
            card = build_model_card(
                d, repo_id, config=config, dataset=dataset, license=license, with_onnx=with_onnx
            )
        elif (d / "README.md").exists():
            files["README.md"] = d / "README.md"

        operations = [
            CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(v)) for k, v in sorted(files.items())
        ]
        if card:
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        api.create_repo(repo_id, private=private, exist_ok=True, token=token, repo_type="model")
        if revision and revision != "main" and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload pruned model ({config.get('model_type')})",
            revision=revision,
            create_pr=create_pr,
            token=token,
            repo_type="model",
        )
    return PushResult(
        repo_id=repo_id,
        revision=revision,
        commit_url=str(getattr(info, "commit_url", info)),
        commit_oid=str(getattr(info, "oid", "")),
        files=[op.path_in_repo for op in operations],
        model_card=card,
    )
