"""A tiny, local, Hub-compatible model store for tests (no network, 127.0.0.1 only).

- :class:`HubStore`: repos in a folder, one immutable snapshot per commit, branch refs.
- :class:`FakeHubServer`: serves the endpoints ``huggingface_hub`` / ``transformers`` use to *download*
  (``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``, ``Content-Length``;
  ``GET /api/models/{repo}[/revision/{rev}]``), so ``from_pretrained("org/name")`` runs the real
  download, etag and cache code when ``HF_ENDPOINT`` points at it. Every request is recorded.
  ``GET /api/whoami-v2`` answers 401 (no token is valid), as the Hub does for a revoked token.
  It shuts itself down after ``lifetime_s`` even if a test forgets to.
- :class:`RecordingHfApi`: an ``HfApi`` whose ``create_repo`` / ``create_branch`` / ``create_commit``
  write into the store (the real ones need the Hub's upload/LFS protocol) and record what was sent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, RepoUrl


class HubStore:
    """``root/{org}/{name}/commits/{sha}/...`` snapshots + ``refs.json`` (branch -> sha)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "refs.json").exists()

    def refs(self, repo_id: str) -> dict[str, str]:
        p = self.repo_dir(repo_id) / "refs.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def create_repo(self, repo_id: str) -> None:
        with self._lock:
            if not self.exists(repo_id):
                sha = self._write_commit(repo_id, None, {}, [])
                self._set_ref(repo_id, "main", sha)

    def create_branch(self, repo_id: str, branch: str, from_rev: str = "main") -> None:
        with self._lock:
            refs = self.refs(repo_id)
            if branch not in refs:
                self._set_ref(repo_id, branch, refs[from_rev])

    def resolve(self, repo_id: str, revision: str) -> str | None:
        refs = self.refs(repo_id)
        if revision in refs:
            return refs[revision]
        if (self.repo_dir(repo_id) / "commits" / revision).is_dir():
            return revision
        return None

    def snapshot(self, repo_id: str, sha: str) -> Path:
        return self.repo_dir(repo_id) / "commits" / sha

    def files(self, repo_id: str, sha: str) -> list[str]:
        snap = self.snapshot(repo_id, sha)
        return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())

    def commit(self, repo_id: str, branch: str, adds: dict[str, bytes], deletes: list[str]) -> str:
        with self._lock:
            parent = self.refs(repo_id)[branch]
            sha = self._write_commit(repo_id, parent, adds, deletes)
            self._set_ref(repo_id, branch, sha)
            return sha

    def _write_commit(
        self, repo_id: str, parent: str | None, adds: dict[str, bytes], deletes: list[str]
    ) -> str:
        h = hashlib.sha1(f"{repo_id}|{parent}|{time.time_ns()}".encode())
        for k in sorted(adds):
            h.update(k.encode() + hashlib.sha256(adds[k]).digest())
        sha = h.hexdigest()
        snap = self.snapshot(repo_id, sha)
        if parent is not None:
            shutil.copytree(self.snapshot(repo_id, parent), snap)
        snap.mkdir(parents=True, exist_ok=True)
        for path in deletes:
            (snap / path).unlink(missing_ok=True)
        for path, data in adds.items():
            (snap / path).parent.mkdir(parents=True, exist_ok=True)
            (snap / path).write_bytes(data)
        return sha

    def _set_ref(self, repo_id: str, branch: str, sha: str) -> None:
        refs = self.refs(repo_id)
        refs[branch] = sha
        self.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
        (self.repo_dir(repo_id) / "refs.json").write_text(json.dumps(refs))


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(send_body=True)

    def _reply(
        self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, send_body: bool = True
    ) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _error(
        self,
        code: int,
        error_code: str,
        msg: str,
        extra: dict[str, str] | None = None,
        send_body: bool = True,
    ) -> None:
        headers = {"X-Error-Code": error_code, "X-Error-Message": msg, "Content-Type": "application/json"}
        headers.update(extra or {})
        self._reply(code, json.dumps({"error": msg}).encode(), headers, send_body)

    def _serve(self, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((self.command, path))
        store = self.server.store
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "whoami-v2"]:  # no token is valid here: the push pre-flight's "rejected" case
            return self._error(
                401, "Unauthorized", "Invalid credentials in Authorization header", send_body=send_body
            )
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rev = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            return self._model_info(repo_id, rev, send_body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            return self._resolve(store, repo_id, rev, file, send_body)
        self._error(404, "NotFound", f"fake hub does not serve {path}", send_body=send_body)

    def _model_info(self, repo_id: str, rev: str, send_body: bool) -> None:
        store = self.server.store
        if not store.exists(repo_id):
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", send_body=send_body)
        sha = store.resolve(repo_id, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", send_body=send_body)
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "tags": [],
            "siblings": [{"rfilename": f} for f in store.files(repo_id, sha)],
        }
        self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, send_body)

    def _resolve(self, store: HubStore, repo_id: str, rev: str, file: str, send_body: bool) -> None:
        if not store.exists(repo_id):
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", send_body=send_body)
        sha = store.resolve(repo_id, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", send_body=send_body)
        target = store.snapshot(repo_id, sha) / file
        if not target.is_file():
            return self._error(
                404,
                "EntryNotFound",
                f"{file} does not exist at {rev}",
                {"X-Repo-Commit": sha},
                send_body=send_body,
            )
        data = target.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
        headers = {
            "ETag": f'"{_etag(data)}"',
            "X-Repo-Commit": sha,
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        self._reply(206 if start else 200, data[start:], headers, send_body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: HubStore
    requests: list[tuple[str, str]]


class FakeHubServer:
    """``with FakeHubServer(store) as hub: env["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, store: HubStore, lifetime_s: float = 120.0) -> None:
        self.store = store
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.store = store
        self._httpd.requests = []
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._httpd.requests

    def start(self) -> FakeHubServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._timer.cancel()
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeHubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RecordingHfApi(HfApi):
    """``HfApi`` whose write calls land in a :class:`HubStore` and are recorded in ``self.calls``."""

    def __init__(self, store: HubStore, endpoint: str = "http://127.0.0.1:9") -> None:
        super().__init__(endpoint=endpoint, token=False)
        self.store = store
        self.calls: list[dict[str, Any]] = []

    def whoami(self, token: Any = None, **kwargs: Any) -> dict[str, Any]:
        """The push pre-flight's token / connection check: the local store needs neither."""
        return {"name": "p3b-test", "type": "user"}

    def create_repo(
        self, repo_id: str, *, private: bool | None = None, exist_ok: bool = False, **kwargs: Any
    ) -> RepoUrl:
        if self.store.exists(repo_id) and not exist_ok:
            raise FileExistsError(repo_id)
        self.calls.append({"call": "create_repo", "repo_id": repo_id, "private": private})
        self.store.create_repo(repo_id)
        return RepoUrl(f"{self.endpoint}/{repo_id}", endpoint=self.endpoint)

    def create_branch(
        self, repo_id: str, *, branch: str, revision: str | None = None, exist_ok: bool = False, **kwargs: Any
    ) -> None:
        self.calls.append({"call": "create_branch", "repo_id": repo_id, "branch": branch})
        self.store.create_branch(repo_id, branch, revision or "main")

    def create_commit(
        self,
        repo_id: str,
        operations: Any,
        *,
        commit_message: str,
        revision: str | None = None,
        create_pr: bool | None = None,
        **kwargs: Any,
    ) -> CommitInfo:
        if not self.store.exists(repo_id):
            raise FileNotFoundError(f"create_commit on missing repo {repo_id}: call create_repo first")
        adds: dict[str, bytes] = {}
        deletes: list[str] = []
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as f:  # the real upload reads the same way (path, bytes or file object)
                    adds[op.path_in_repo] = f.read()
            elif isinstance(op, CommitOperationDelete):
                deletes.append(op.path_in_repo)
            else:
                raise TypeError(f"unsupported operation {op!r}")
        branch = revision or "main"
        sha = self.store.commit(repo_id, branch, adds, deletes)
        self.calls.append(
            {
                "call": "create_commit",
                "repo_id": repo_id,
                "revision": branch,
                "message": commit_message,
                "files": sorted(adds),
                "deletes": deletes,
                "create_pr": bool(create_pr),
                "contents": {k: v for k, v in adds.items() if k.endswith((".md", ".json", ".py"))},
            }
        )
        return CommitInfo(
            commit_url=f"{self.endpoint}/{repo_id}/commit/{sha}",
            commit_message=commit_message,
            commit_description="",
            oid=sha,
            _endpoint=self.endpoint,
        )


def snapshot_bytes(store: HubStore, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    sha = store.resolve(repo_id, revision)
    assert sha is not None
    snap = store.snapshot(repo_id, sha)
    return {f: (snap / f).read_bytes() for f in store.files(repo_id, sha)}


# ------------------------------------------------------------------ pruned model dirs and clean subprocesses
def nontrivial_plan(config: Any) -> Any:
    """Residual in/out subsets, fewer heads and head dims, a removed MLP and a removed attention."""
    from p3b_hf import WidthPlan

    plan = WidthPlan.full(config)
    c, hd, f = plan.hidden_size, plan.head_dim, plan.intermediate_size
    plan.layers[0].heads = [0, 2, 3]
    plan.layers[0].head_dims = list(range(0, hd, 2))
    plan.layers[0].attn_in = list(range(0, c, 2))
    plan.layers[0].attn_out = list(range(1, c, 3))
    plan.layers[0].mlp = list(range(f // 2))
    plan.layers[1].mlp = []  # MLP sub-block removed (its constant output bias survives)
    plan.layers[1].mlp_in = list(range(c // 3, c))
    plan.layers[2].head_dims = []  # attention sub-block removed
    plan.layers[2].mlp_in = list(range(0, c, 4))
    plan.layers[2].mlp_out = list(range(c // 2))
    return plan


def save_pruned_dir(
    dense: Any,
    out: Path,
    *,
    method: str = "p3b",
    dataset: str = "cifar100",
    accuracy: float | None = 0.5,
    with_report: bool = True,
) -> Any:
    """apply_width_plan + the lead's save/report/plot helpers, as `p3b-hf prune` writes a model dir."""
    from transformers import ViTImageProcessorPil

    from p3b_hf import apply_width_plan
    from p3b_hf.checkpoints import save_model_dir
    from p3b_hf.report import base_report, plot_widths, write_report

    plan = nontrivial_plan(dense.config)
    pruned = apply_width_plan(dense, plan).eval()
    size = dense.config.image_size
    processor = ViTImageProcessorPil(size={"height": size, "width": size})
    save_model_dir(pruned, out, image_processor=processor, plan=plan)
    if with_report:
        report = base_report(
            dense,
            pruned,
            method=method,
            prune_ratio=0.5,
            plan=plan,
            eval_metrics={"accuracy": accuracy} if accuracy is not None else None,
            dense_eval_metrics={"accuracy": 0.75},
            wall_time_s=1.0,
            extra={"dataset": dataset, "base_model": "facebook/deit-tiny-patch16-224"},
        )
        write_report(out, report)
        plot_widths(pruned, out / "plots" / "widths.png", dense_config=dense.config)
    return pruned


#: prepended to every "stock transformers" subprocess: p3b_hf cannot be imported at all
BLOCK_P3B = """
import sys
class _BlockP3B:
    def find_spec(self, name, path=None, target=None):
        if name == "p3b_hf" or name.startswith("p3b_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: stock-transformers test)")
        return None
sys.meta_path.insert(0, _BlockP3B())
"""


def run_python(
    code: str, cwd: Path, env: dict[str, str], args: tuple[str, ...] = (), timeout: float = 120
) -> str:
    """Run ``python -I -c code *args`` (isolated: no cwd/PYTHONPATH on sys.path) from ``cwd``; return stdout."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-I", "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


def clean_env(hf_home: Path, **extra: str) -> dict[str, str]:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_", "PYTHONPATH"))
    }
    env.update(
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env
