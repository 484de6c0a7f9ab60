"""Test support for the Hub tests: a real ``huggingface_hub`` cache laid out on disk, a commit recorder at the network
boundary (``HfApi.create_commit`` / ``create_repo``), a read-only loopback Hub, and a tiny CatalystTrainer run with a
real HTTP mentor.

The recorder writes every captured commit into the cache as a new snapshot, exactly where a download would put it,
so that what a push uploads is what ``from_pretrained(repo_id)`` and ``hf_hub_download`` read back offline.
:class:`LoopbackHub` serves those snapshots over HTTP (``HF_ENDPOINT``) for code paths that only run online.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.hf_api import RepoUrl

from peft_catalyst import CatalystTrainer
from peft_catalyst.mentors import OpenAIMentor
from tests import tiny

# Fake credentials shaped like real ones closely enough for the key-pattern scrubbing (``hf_``/``sk-`` prefixes), but
# with separators, so that no scanner mistakes them for committed tokens.
FAKE_HF_TOKEN = "hf_FakeToken-for-tests-0123456789"
FAKE_MENTOR_KEY = "sk-test-FAKEKEY0123456789abcdef"
URL_PASSWORD = "s3cr3tpassw0rd"

# Repository ids the tests publish into a local cache (never a real Hub repository; HF_HUB_OFFLINE=1).
LLAMA_BASE = "org/tiny-llama"
LLAMA_ADAPTER = "org/catalyst-llama"
BERT_BASE = "org/tiny-bert"
BERT_ADAPTER = "org/bert-catalyst"


def repo_folder(cache: Path, repo_id: str) -> Path:
    """``<cache>/models--org--name``, the folder ``huggingface_hub`` keeps a model repository in."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def snapshot_files(cache: Path, repo_id: str) -> dict[str, bytes]:
    """The files of the repository's ``main`` snapshot in the cache (empty when it has none)."""
    folder = repo_folder(cache, repo_id)
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return {}
    snapshot = folder / "snapshots" / ref.read_text().strip()
    return {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}


def write_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], *, replace: bool = False) -> str:
    """Add a commit to the cached repository as a download would leave it (blobs, snapshot links, ``refs/main``).

    The new snapshot holds the previous one's files updated with ``files`` (all of them with ``replace``). Returns
    the commit hash.
    """
    folder = repo_folder(cache, repo_id)
    merged = dict(files) if replace else {**snapshot_files(cache, repo_id), **files}
    digest = hashlib.sha1()
    for name in sorted(merged):
        digest.update(name.encode() + b"\0" + hashlib.sha256(merged[name]).digest())
    commit = digest.hexdigest()
    for name, data in merged.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(blob, link.parent), link)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return commit


def save_to_cache(cache: Path, repo_id: str, *objects: Any) -> str:
    """``save_pretrained`` each object (model, tokenizer) and lay the files out as the cached repo ``repo_id``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for obj in objects:
            obj.save_pretrained(tmp)
        root = Path(tmp)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return write_snapshot(cache, repo_id, files, replace=True)


def _read(path_or_fileobj: Any) -> bytes:
    if isinstance(path_or_fileobj, bytes):
        return path_or_fileobj
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        return Path(path_or_fileobj).read_bytes()
    if isinstance(path_or_fileobj, io.IOBase):
        return path_or_fileobj.read()
    raise TypeError(type(path_or_fileobj))


@dataclass
class Commit:
    """One captured ``create_commit`` call."""

    repo_id: str
    files: dict[str, bytes]
    message: str
    token: Any
    kwargs: dict[str, Any]
    oid: str


def validate_yaml(api, content: str, **kwargs) -> None:
    """What ``upload_folder`` asks the Hub (``/api/validate-yaml``) before a README is uploaded, checked locally: the
    card's metadata block must parse as a YAML mapping."""
    from huggingface_hub import ModelCard

    data = ModelCard(content).data.to_dict()
    if not isinstance(data, dict):
        raise ValueError(f"Invalid metadata in README.md: {data!r}")


@dataclass
class HubRecorder:
    """Replaces the network calls of a push (``create_repo``, ``create_commit`` and the README check of
    ``upload_folder``); commits land in the on-disk cache."""

    cache: Path
    commits: list[Commit] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)

    def install(self, monkeypatch) -> HubRecorder:
        """Patch ``HfApi.create_repo`` and ``HfApi.create_commit`` (the network boundary) for the test."""
        recorder = self

        def create_repo(api, repo_id, **kwargs):
            recorder.created.append({"repo_id": repo_id, "token": api.token, **kwargs})
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(api, repo_id, operations, *, commit_message, **kwargs):
            files = {op.path_in_repo: _read(op.path_or_fileobj) for op in operations}
            oid = write_snapshot(recorder.cache, repo_id, files)
            token = kwargs.get("token") or api.token  # upload_folder passes it per call, HfApi(token=...) per client
            recorder.commits.append(Commit(repo_id, files, commit_message, token, kwargs, oid))
            return CommitInfo(
                commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
                commit_message=commit_message,
                commit_description="",
                oid=oid,
            )

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "_validate_yaml", validate_yaml)
        # With hf_xet installed, upload_folder streams through its own pipeline; without it, it ends in one
        # create_commit, the boundary recorded here (the folder's filtering is upload_folder's own).
        monkeypatch.setattr("huggingface_hub.hf_api.is_xet_available", lambda: False)
        return self


def use_cache(monkeypatch, root: Path) -> Path:
    """Point ``huggingface_hub`` (env and the constants it read at import) at an empty cache under ``root``."""
    from huggingface_hub import constants

    cache = Path(root) / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert constants.HF_HUB_OFFLINE, "tests must run with HF_HUB_OFFLINE=1 (tests/conftest.py)"
    return cache


class LoopbackHub:
    """A read-only Hub on 127.0.0.1 serving the ``main`` snapshots of a cache: ``HEAD``/``GET /{repo}/resolve/...``.

    Enough for ``hf_hub_download`` and ``file_exists`` online (``HF_ENDPOINT=hub.url``): the headers carry the commit,
    the ETag and the size; a missing file or repository answers 404 with the Hub's ``X-Error-Code``. Every request
    path is recorded in :attr:`requests`, and anything else answers 404 so unexpected calls show in the test.
    """

    def __init__(self, cache: Path) -> None:
        self.cache = Path(cache)
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - keep test output clean
                pass

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                hub._answer(self, body=False)

            def do_GET(self):  # noqa: N802
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "RepoNotFound")
        repo_id, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
        ref = repo_folder(self.cache, repo_id) / "refs" / "main"
        if not ref.is_file():
            return self._error(handler, 404, "RepoNotFound")
        commit = ref.read_text().strip()
        file = repo_folder(self.cache, repo_id) / "snapshots" / commit / filename
        if not file.is_file():
            return self._error(handler, 404, "EntryNotFound")
        data = file.read_bytes()
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


# ---------------------------------------------------------------------------------------------------------------
# A tiny real catalyst run
# ---------------------------------------------------------------------------------------------------------------


def credentialed_url(base_url: str) -> str:
    """The loopback server's URL with user info, as a careless user would configure it."""
    return base_url.replace("http://", f"http://mentor-user:{URL_PASSWORD}@")


def catalyst_trainer(tok, output_dir: Path, base_url: str, **kwargs) -> CatalystTrainer:
    """The tiny CatalystTrainer (tests/tiny.py) with an OpenAIMentor at ``base_url`` and an evaluation split.

    The soft prompt starts 50 times too large, so the first round's text candidates win.
    """
    mentor = OpenAIMentor("tiny-mentor", base_url=base_url, api_key=FAKE_MENTOR_KEY, timeout=10, max_retries=0)
    return tiny.catalyst_trainer(
        tok,
        output_dir,
        mentor,
        model=tiny.catalyst_model(tok, init_scale=50.0),
        eval_dataset=tiny.toy_reviews(tok, 16, seed=3),
        **kwargs,
    )


def leaked(data: bytes) -> list[str]:
    """Which test secrets (or recognisable parts of them) occur in ``data``."""
    text = data.decode("utf-8", errors="replace")
    needles = [FAKE_HF_TOKEN, FAKE_MENTOR_KEY, URL_PASSWORD, "mentor-user:", "FAKEKEY", "FakeToken"]
    return [n for n in needles if n in text]
