"""Hub push + pull, offline: a recording HfApi writes commits into a local store that a local HTTP server
serves through ``HF_ENDPOINT``; loads run in subprocesses (HF_ENDPOINT / HF_HUB_OFFLINE are read at import)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from cli_args import TINY_EPOCH_ARGS, prune_argv
from fake_hub import (
    BLOCK_P3B,
    FakeHubServer,
    HubStore,
    RecordingHfApi,
    clean_env,
    run_python,
    save_pruned_dir,
    snapshot_bytes,
)

from p3b_hf import count_cost
from p3b_hf.cli import main as cli_main
from p3b_hf.errors import CheckpointError, HubError, P3BError
from p3b_hf.hub import build_model_card, push_pruned

REPO = "p3b-test/tiny-vit-p3b50"
EXPECTED_FILES = {
    "README.md",
    "config.json",
    "configuration_p3b_vit.py",
    "modeling_p3b_vit.py",
    "modeling_p3b_layers.py",
    "modeling_p3b_checkpoint.py",
    "configuration_p3b_widths.py",
    "model.safetensors",
    "preprocessor_config.json",
    "width_plan.json",
    "pruning_report.json",
    "plots/widths.png",
}

LOAD = """
import json, sys, torch
from transformers import AutoImageProcessor, AutoModelForImageClassification
repo, x_path, out_path, trust, revisions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5:]
x = torch.load(x_path)
res = {}
for rev in revisions:
    kw = {"trust_remote_code": True} if trust else {}
    model = AutoModelForImageClassification.from_pretrained(repo, revision=rev, **kw).eval()
    proc = AutoImageProcessor.from_pretrained(repo, revision=rev)
    with torch.no_grad():
        res[rev] = model(pixel_values=x).logits
    print(json.dumps({"rev": rev, "cls": type(model).__module__ + "." + type(model).__name__,
                      "proc": type(proc).__name__, "heads": model.config.layer_num_heads,
                      "mlp": model.config.layer_intermediate_sizes, "p3b_imported": "p3b_hf" in sys.modules}))
torch.save(res, out_path)
"""


def cli_push(argv: list[str]) -> int:
    """``p3b-hf push ...`` through the real CLI entry point."""
    return cli_main(["push", *argv])


def _named(requests: list[tuple[str, str]], store: HubStore) -> list[tuple[str, str]]:
    """Requests with commit shas replaced by their branch name (transformers resolves main -> sha first)."""
    names = {sha: ref for ref, sha in store.refs(REPO).items()}
    return [(m, "/".join(names.get(p, p) for p in path.split("/"))) for m, path in requests]


def _load(
    tmp: Path,
    env: dict[str, str],
    x: torch.Tensor,
    trust: bool,
    block: bool,
    revisions: tuple[str, ...],
    tag: str,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    x_path, out_path = tmp / "x.pt", tmp / f"logits_{tag}.pt"
    torch.save(x, x_path)
    code = (BLOCK_P3B if block else "import p3b_hf\n") + LOAD
    out = run_python(
        code, cwd=tmp, env=env, args=(REPO, str(x_path), str(out_path), "1" if trust else "0", *revisions)
    )
    infos = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return infos, torch.load(out_path)


@pytest.fixture
def pruned_dir(tmp_path: Path, tiny_vit: torch.nn.Module) -> tuple[Path, torch.nn.Module]:
    out = tmp_path / "pruned"
    return out, save_pruned_dir(tiny_vit, out)


def test_push_uploads_files_and_model_card(pruned_dir: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    model_dir, pruned = pruned_dir
    store = HubStore(tmp_path / "hub")
    api = RecordingHfApi(store)
    result = push_pruned(model_dir, REPO, api=api, private=True)
    assert [c["call"] for c in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0]["private"] is True
    commit = api.calls[1]
    assert set(commit["files"]) == EXPECTED_FILES == set(result.files)
    hub = snapshot_bytes(store, REPO)
    for name in EXPECTED_FILES - {"README.md"}:  # uploaded bytes are the local files
        assert hub[name] == (model_dir / name).read_bytes(), name
    cfg = json.loads(hub["config.json"])
    assert cfg["model_type"] == "p3b_vit"
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_p3b_vit.P3BViTConfig",
        "AutoModelForImageClassification": "modeling_p3b_vit.P3BViTForImageClassification",
        "AutoModel": "modeling_p3b_vit.P3BViTModel",
    }
    assert cfg["layer_num_heads"] == pruned.config.layer_num_heads == [3, 4, 0]
    assert cfg["layer_intermediate_sizes"][1] == 0
    card = hub["README.md"].decode()
    assert card == result.model_card
    report = json.loads((model_dir / "pruning_report.json").read_text())
    assert "base_model: facebook/deit-tiny-patch16-224" in card
    assert "- uoft-cs/cifar100" in card and "library_name: transformers" in card  # preset -> Hub id
    assert "pipeline_tag: image-classification" in card and "pruning-p3b" in card
    assert f"{report['dense']['params'] / 1e6:.2f} M -> {count_cost(pruned)['params'] / 1e6:.2f} M" in card
    assert f"{report['dense']['macs'] / 1e9:.3f} G -> {count_cost(pruned)['macs'] / 1e9:.3f} G" in card
    assert "| top-1 accuracy, right after pruning | 50.00 % |" in card
    assert "| top-1 accuracy, dense | 75.00 % |" in card
    assert "![kept widths per layer](plots/widths.png)" in card
    assert "attn2" in card and "mlp1" in card  # removed sub-blocks are listed
    assert f'from_pretrained("{REPO}", trust_remote_code=True)' in card
    assert "value: 0.5" in card  # model-index accuracy


def test_model_card_without_report_uses_config(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    pruned = save_pruned_dir(tiny_vit, tmp_path / "m", with_report=False)
    card = build_model_card(tmp_path / "m", "me/x")
    assert f"-> {count_cost(pruned)['params'] / 1e6:.2f} M" in card
    assert "plots/widths.png" not in card and "base_model:" not in card


def test_push_then_pull_by_repo_id_through_local_hub(
    pruned_dir: tuple[Path, torch.nn.Module], tmp_path: Path, images: torch.Tensor
) -> None:
    """push -> HTTP resolve/etag/cache -> from_pretrained("org/name"): stock (remote code) and with p3b_hf."""
    model_dir, pruned = pruned_dir
    with torch.no_grad():
        ref = pruned(pixel_values=images).logits
    store = HubStore(tmp_path / "hub")
    api = RecordingHfApi(store)
    push_pruned(model_dir, REPO, api=api)
    push_pruned(model_dir, REPO, api=api, revision="v2", commit_message="second branch")
    assert set(store.refs(REPO)) == {"main", "v2"} and store.refs(REPO)["main"] != store.refs(REPO)["v2"]
    hf_home = tmp_path / "hf_home"
    with FakeHubServer(store, lifetime_s=90) as hub:
        env = clean_env(hf_home, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        # (1) stock transformers, p3b_hf not importable: remote code downloaded and run
        infos, logits = _load(tmp_path, env, images, trust=True, block=True, revisions=("main",), tag="stock")
        assert infos[0]["cls"].startswith("transformers_modules.") and not infos[0]["p3b_imported"]
        assert infos[0]["cls"].endswith("P3BViTForImageClassification")
        assert infos[0]["proc"].startswith("ViTImageProcessor")
        assert infos[0]["heads"] == [3, 4, 0] and infos[0]["mlp"][1] == 0
        assert torch.equal(logits["main"], ref)
        first = _named(hub.requests, store)
        assert first[0] == ("GET", f"/api/models/{REPO}/revision/main")  # resolves main -> commit sha first
        for name in (
            "config.json",
            "model.safetensors",
            "modeling_p3b_vit.py",
            "modeling_p3b_layers.py",  # the shared modules it imports relatively are fetched too
            "modeling_p3b_checkpoint.py",
            "configuration_p3b_vit.py",
            "configuration_p3b_widths.py",
            "preprocessor_config.json",
        ):
            assert ("HEAD", f"/{REPO}/resolve/main/{name}") in first, (name, first)
            assert ("GET", f"/{REPO}/resolve/main/{name}") in first, (name, first)
        # (2) p3b_hf installed, no trust_remote_code, same cache: main resolves to the cached commit (no file
        #     requests); branch v2 is another commit with the same blobs: HEAD (etag) only, no download
        infos, logits = _load(
            tmp_path, env, images, trust=False, block=False, revisions=("main", "v2"), tag="pkg"
        )
        assert {i["cls"] for i in infos} == {"p3b_hf.models.modeling_p3b_vit.P3BViTForImageClassification"}
        assert torch.equal(logits["main"], ref) and torch.equal(logits["v2"], ref)
        second = _named(hub.requests[len(first) :], store)
        resolves = [r for r in second if "/resolve/" in r[1]]
        assert not [r for r in resolves if r[0] == "GET"], second  # every blob came from the cache
        assert ("HEAD", f"/{REPO}/resolve/v2/model.safetensors") in second, second  # new commit: etag check
        assert not [r for r in resolves if "/resolve/main/" in r[1]], second  # cached snapshot of main's sha
        assert not [r for r in second if r[0] == "GET" and r[1].endswith(".safetensors")], second
    # (3) server gone, HF_HUB_OFFLINE=1: stock transformers loads from the cache
    env = clean_env(hf_home, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
    infos, logits = _load(tmp_path, env, images, trust=True, block=True, revisions=("main",), tag="offline")
    assert infos[0]["cls"].startswith("transformers_modules.") and torch.equal(logits["main"], ref)


def test_push_cli(
    pruned_dir: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import p3b_hf.hub

    store = HubStore(tmp_path / "hub")
    apis: list[RecordingHfApi] = []
    monkeypatch.setattr(p3b_hf.hub, "HfApi", lambda: apis.append(RecordingHfApi(store)) or apis[-1])
    model_dir, _ = pruned_dir
    rc = cli_push(
        [
            "--model",
            str(model_dir),
            "--repo-id",
            REPO,
            "--private",
            "--revision",
            "dev",
            "--license",
            "apache-2.0",
        ]
    )
    assert rc == 0
    calls = apis[0].calls
    assert [c["call"] for c in calls] == ["create_repo", "create_branch", "create_commit"]
    assert calls[0]["private"] is True and calls[1]["branch"] == "dev" and calls[2]["revision"] == "dev"
    assert "license: apache-2.0" in calls[2]["contents"]["README.md"].decode()
    assert store.resolve(REPO, "dev") is not None and "model.safetensors" in snapshot_bytes(
        store, REPO, "dev"
    )
    assert "pushed 12 files" in capsys.readouterr().out


def test_push_resaves_code_files_when_missing(
    pruned_dir: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    """A dir saved without `import p3b_hf` (no auto_map, no .py files) still pushes a loadable repo."""
    model_dir, _ = pruned_dir
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.pop("auto_map")
    (model_dir / "config.json").write_text(json.dumps(cfg))
    for f in model_dir.glob("*.py"):
        f.unlink()
    store = HubStore(tmp_path / "hub")
    result = push_pruned(model_dir, REPO, api=RecordingHfApi(store))
    code = {
        "modeling_p3b_vit.py",
        "configuration_p3b_vit.py",
        "modeling_p3b_layers.py",
        "modeling_p3b_checkpoint.py",
    }
    code.add("configuration_p3b_widths.py")
    assert code <= set(result.files)
    hub = snapshot_bytes(store, REPO)
    assert "auto_map" in json.loads(hub["config.json"])
    assert (
        hub["modeling_p3b_vit.py"]
        == (Path(__file__).parents[1] / "p3b_hf/models/modeling_p3b_vit.py").read_bytes()
    )


def test_push_resaves_when_a_shared_code_file_is_lost(
    pruned_dir: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    """auto_map names only the family's files; the shared ones they import relatively are found in the copies
    (transformers' parser) -- one lost is re-written, never pushed missing (the repo would not load)."""
    model_dir, _ = pruned_dir
    (model_dir / "modeling_p3b_layers.py").unlink()
    store = HubStore(tmp_path / "hub")
    result = push_pruned(model_dir, REPO, api=RecordingHfApi(store))
    assert "modeling_p3b_layers.py" in result.files
    assert (
        snapshot_bytes(store, REPO)["modeling_p3b_layers.py"]
        == (Path(__file__).parents[1] / "p3b_hf/models/modeling_p3b_layers.py").read_bytes()
    )


def test_push_errors_name_the_fix(
    tmp_path: Path, pruned_dir: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture
) -> None:
    store = HubStore(tmp_path / "hub")
    model_dir, _ = pruned_dir
    with pytest.raises(P3BError, match="user-or-org/name"):
        push_pruned(model_dir, "no-slash", api=RecordingHfApi(store))
    with pytest.raises(CheckpointError, match="not a directory"):
        push_pruned(tmp_path / "missing", REPO, api=RecordingHfApi(store))
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle weights"):
        push_pruned(model_dir, REPO, api=RecordingHfApi(store))
    assert not store.exists(REPO)  # nothing was created on a failed push
    assert cli_push(["--model", str(tmp_path / "missing"), "--repo-id", REPO]) == 2
    assert "not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------ push pre-flight: offline, token, connection
def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once by us, then closed): connection refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["offline", "no_token", "unreachable", "rejected_token"])
def test_push_without_hub_access_is_one_line_before_any_work(
    case: str,
    pruned_dir: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The real ``HfApi`` (no fake): ``HF_HUB_OFFLINE=1``, no token (HF_TOKEN unset, an empty HF_HOME) and an
    endpoint that refuses connections (a closed port on 127.0.0.1) used to end in tracebacks from
    huggingface_hub / httpx (``OfflineModeIsEnabled``, ``LocalTokenNotFoundError``, ``httpx.ConnectError``) after
    the model was loaded; now each is one line (exit 2) before the model is even read. A token the Hub
    rejects (the local fake hub answers whoami with 401) is one line too. huggingface_hub reads these
    variables at import, so the test sets both the variables and the constants they fill."""
    from huggingface_hub import constants

    import p3b_hf.hub

    model_dir, _ = pruned_dir
    loaded: list[Path] = []
    monkeypatch.setattr(p3b_hf.hub, "verify_loads", loaded.append)
    home = tmp_path / "empty_hf_home"
    home.mkdir()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if case == "offline" else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", case == "offline")
    if case != "no_token":
        monkeypatch.setenv("HF_TOKEN", "hf_p3btest_not_a_real_token")  # never sent anywhere but 127.0.0.1
    with contextlib.ExitStack() as stack:
        if case == "rejected_token":  # the local fake hub answers whoami with 401
            endpoint = stack.enter_context(FakeHubServer(HubStore(tmp_path / "hub"), lifetime_s=60)).url
        else:
            endpoint = f"http://127.0.0.1:{_closed_port()}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        capsys.readouterr()
        assert cli_push(["--model", str(model_dir), "--repo-id", REPO]) == 2
        err = capsys.readouterr().err
        with pytest.raises(HubError, match="network|token|reach"):  # the library raises the same, typed
            push_pruned(model_dir, REPO)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("p3b-hf push: error: ")
    expected = {
        "offline": "HF_HUB_OFFLINE=1 is set (offline mode): a push needs the network. Unset it",
        "no_token": "No Hugging Face token found (HF_TOKEN is unset and no `hf auth login` token in HF_HOME)",
        "unreachable": f"Cannot reach the Hub at {endpoint} (ConnectError: ",
        "rejected_token": f"The Hub at {endpoint} rejected the token (HTTP 401): log in again",
    }[case]
    assert expected in err, err
    assert not loaded  # refused before the model was loaded and verified


def test_model_card_names_a_real_install_and_no_placeholder_link(
    pruned_dir: tuple[Path, torch.nn.Module],
) -> None:
    """Issue 24: the card linked a placeholder ``https://github.com/`` and told users to ``pip install p3b_hf``,
    a package that is not published; it now names the version that made the model and how to install it."""
    import p3b_hf

    model_dir, _ = pruned_dir
    card = build_model_card(model_dir, REPO)
    assert "https://github.com/" not in card and "](https://github.com" not in card
    assert "pip install p3b_hf" not in card
    assert "pip install -e ." in card and "not on PyPI" in card
    assert f"`p3b_hf {p3b_hf.__version__}`" in card


def test_run_outputs_hold_no_machine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune -> export -> bench -> push run on absolute tmp paths: pruning_report.json, export_report.json, the
    bench JSON, the model card and the uploaded config.json name models and data sets, never ``tmp_path``; the
    local config.json alone keeps the resolved dense path, so that bench finds the original from anywhere."""
    import sys

    from test_recipes import _tiny_data, _tiny_dense

    torch.set_num_threads(1)
    data, (dense_dir, _) = _tiny_data(tmp_path), _tiny_dense(tmp_path)
    out = tmp_path / "runs" / "pruned"
    argv = prune_argv(
        ["global", "--importance", "l1"], dense_dir, data, out, "--prune-ratio", "0.5", *TINY_EPOCH_ARGS
    )
    monkeypatch.setattr(sys, "argv", ["p3b-hf", *argv])  # the report records the command line
    assert cli_main(argv) == 0
    assert cli_main(["export", "--model", str(out), "--dataset", str(data), "--threads", "1"]) == 0
    bench = tmp_path / "bench.json"
    base = ["bench", "--model", str(out), "--device", "cpu", "--repeats", "1", "--warmup", "1"]
    assert cli_main([*base, "--min-repeat-s", "0", "--json", str(bench)]) == 0
    store = HubStore(tmp_path / "hub")
    result = push_pruned(out, REPO, api=RecordingHfApi(store), with_onnx=True)
    hub = snapshot_bytes(store, REPO)
    texts = {
        "pruning_report.json": (out / "pruning_report.json").read_text(),
        "export_report.json": (out / "onnx" / "export_report.json").read_text(),
        "bench.json": bench.read_text(),
        "README.md (card)": result.model_card,
        "config.json on the Hub": hub["config.json"].decode(),
    }
    for name, text in texts.items():
        assert str(tmp_path) not in text, name
    report = json.loads(texts["pruning_report.json"])
    assert report["base_model"] == "dense" and report["dataset"] == "data"
    assert "--model dense" in report["command"] and "--output-dir pruned" in report["command"]
    assert "| base model | dense |" in result.model_card
    assert json.loads(texts["bench.json"])["models"]["dense"]["source"] == "dense"
    assert json.loads(texts["config.json on the Hub"])["base_model_name_or_path"] == "dense"
    local = json.loads((out / "config.json").read_text())  # what tools read on this machine
    assert local["base_model_name_or_path"] == str(dense_dir.resolve())
