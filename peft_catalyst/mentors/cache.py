"""An on-disk cache of mentor replies (stdlib ``sqlite3``), and replay of a finished run with no LLM at all.

Each row is keyed by the backend, model, sampling parameters and seed (``ChatMentor.cache_identity()``), the exact chat
messages, the request's candidate count and word budget, and its evidence (examples, errors, labels, best prompts).
A second key, the request alone, lets a replay find
the replies without the original mentor object (``CachedMentor(None, path, mode="replay")``).

Modes:
    ``"use"``     read-through / write-through: a hit returns the stored proposal, a miss asks the inner mentor and
                  stores its proposal (empty ones too, so a replay reproduces skipped rounds).
    ``"replay"``  cache only, never an LLM call: a miss is an empty proposal with a warning.
    ``"strict"``  cache only: a miss raises :class:`~peft_catalyst.mentors.base.ReplayMissError` (a
                  ``MentorError`` with ``reason="cache_miss"`` and the request's key), which ends a training run.

Replies from the cache count as ``usage.cache_hits``, never as ``usage.calls`` (those are the inner mentor's LLM
calls); a replay miss counts as neither.

Several processes may share one file (sqlite locking; the first stored reply for a key wins). No secret is
stored: identities carry no key or URL, and stored JSON is scrubbed of the inner mentor's key anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

from .base import Mentor, MentorError, MentorProposal, MentorRequest, ReplayMissError, scrub_secrets
from .chat import ChatMentor

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "CachedMentor", "request_key"]

CACHE_FORMAT = 1
CacheMode = Literal["use", "replay", "strict"]
_MODES = ("use", "replay", "strict")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mentor_replies (
    key         TEXT PRIMARY KEY,
    request_key TEXT NOT NULL,
    backend     TEXT NOT NULL,
    model       TEXT NOT NULL,
    identity    TEXT NOT NULL,
    proposal    TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mentor_replies_request ON mentor_replies (request_key, created_at);
"""


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def request_key(request: MentorRequest) -> str:
    """Key of a request alone (task, trajectory with scores, manual prompt, counts): used by mentor-less replay."""
    return _digest({"format": CACHE_FORMAT, "request": request.to_dict()})


def full_key(identity: dict[str, Any], messages: list[dict[str, str]], request: MentorRequest) -> str:
    """Key of one mentor call: backend/model/params/seed, the exact messages, the candidate/word budget and the
    evidence (examples, errors, labels, best prompts, proposal mode; absent when empty, so older keys still hold):
    a template that does not show the evidence still gets a new key when the evidence changes."""
    return _digest(
        {
            "format": CACHE_FORMAT,
            "identity": identity,
            "messages": messages,
            "num_candidates": request.num_candidates,
            "max_words": request.max_words,
            **({"evidence": evidence} if (evidence := request.evidence_dict()) else {}),
        }
    )


class CachedMentor(Mentor):
    """Wraps a mentor with an sqlite cache (``mode="use"``), or replays one with no LLM (``"replay"``/``"strict"``).

    Args:
        inner: the mentor to ask on a miss; may be None in the replay modes (replies are then found by request).
        path: the sqlite file (created in ``"use"`` mode; opened read-only to replay).
        mode: ``"use"``, ``"replay"`` or ``"strict"`` (see the module docstring).
    """

    backend = "cache"

    def __init__(self, inner: ChatMentor | None, path: str | os.PathLike[str], mode: CacheMode = "use") -> None:
        if mode not in _MODES:
            raise MentorError(f"cache mode must be one of {_MODES}, not {mode!r}", reason="config")
        if inner is None and mode == "use":
            raise MentorError("CachedMentor(mode='use') needs an inner mentor to ask on a miss", reason="config")
        super().__init__()
        self.inner = inner
        self.path = Path(path)
        self.mode: CacheMode = mode
        self.name = inner.name if inner is not None else f"replay:{self.path.name}"
        if mode == "use":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as conn, conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {CACHE_FORMAT}")
        elif not self.path.is_file():
            if mode == "strict":
                raise MentorError(f"strict replay: no cache file at {self.path}", reason="cache_miss")
            logger.warning("replay: no cache file at %s; every call will be a miss (empty proposal)", self.path)

    def __repr__(self) -> str:
        return f"CachedMentor(inner={self.inner!r}, path={str(self.path)!r}, mode={self.mode!r})"

    def secrets(self) -> list[str]:
        """The wrapped mentor's credentials (none when replaying)."""
        return self.inner.secrets() if self.inner is not None else []

    def close(self) -> None:
        """Close the inner mentor."""
        if self.inner is not None:
            self.inner.close()

    # -- Mentor API -------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Check the inner mentor when one will be asked (``"use"`` mode); a replay needs no backend."""
        if self.inner is not None and self.mode == "use":
            self.inner.check()

    @property
    def time_limit_s(self) -> float | None:
        """The inner mentor's, when one may be asked; a replay reads a file."""
        return self.inner.time_limit_s if self.inner is not None and self.mode == "use" else None

    def cache_identity(self) -> dict[str, Any]:
        """The inner mentor's identity (empty when replaying without one)."""
        return self.inner.cache_identity() if self.inner is not None else {}

    def propose(self, request: MentorRequest) -> MentorProposal:
        """Answer from the cache; in ``"use"`` mode ask the inner mentor on a miss and store its proposal."""
        start = time.perf_counter()
        rkey = request_key(request)
        key = None
        messages: list[dict[str, str]] = []
        if self.inner is not None:
            messages = self.inner.build_messages(request)
            key = full_key(self.inner.cache_identity(), messages, request)
        try:
            stored = self._lookup(key, rkey)
        except sqlite3.Error as exc:
            if self.mode != "use":
                self.usage.record(latency_s=time.perf_counter() - start, failed=True)
                raise MentorError(f"cannot read mentor cache {self.path}: {exc}", reason="cache_miss") from exc
            logger.warning("mentor cache %s unreadable (%s); asking %s directly", self.path, exc, self.name)
            stored = None
        if stored is not None:
            proposal = MentorProposal.from_dict(stored)
            proposal.cached = True
            proposal.latency_s = time.perf_counter() - start
            self.usage.record(latency_s=proposal.latency_s, cache_hit=True)
            logger.debug("%s: cache hit (%d candidates)", self.name, len(proposal.candidates))
            return proposal

        if self.mode == "strict":
            raise ReplayMissError(f"strict replay: no stored reply for request key {rkey[:16]} in {self.path}", rkey)
        if self.mode == "replay":
            latency = time.perf_counter() - start
            warning = f"replay: no stored reply for this request in {self.path.name}; skipping the round"
            logger.warning("%s", warning)
            return MentorProposal(
                candidates=[],
                raw="",
                latency_s=latency,
                prompt_tokens=None,
                completion_tokens=None,
                model=self.name,
                request_id=None,
                messages=messages,
                cached=True,
                warning=warning,
            )

        assert self.inner is not None and key is not None
        try:
            proposal = self.inner.propose(request)
        except MentorError:
            self.usage.record(latency_s=time.perf_counter() - start, failed=True)
            raise
        self.usage.record(
            latency_s=time.perf_counter() - start,
            prompt_tokens=proposal.prompt_tokens,
            completion_tokens=proposal.completion_tokens,
        )
        try:
            self._store(key, rkey, self.inner.cache_identity(), proposal)
        except sqlite3.Error as exc:  # a full disk or a locked file must not cost the reply
            logger.warning("could not store the mentor reply in %s: %s", self.path, exc)
        return proposal

    # -- storage --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of stored replies."""
        if not self.path.is_file():
            return 0
        with closing(self._connect()) as conn:
            try:
                return int(conn.execute("SELECT COUNT(*) FROM mentor_replies").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def _connect(self) -> sqlite3.Connection:
        if self.mode == "use":
            conn = sqlite3.connect(self.path, timeout=30.0)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError:  # network filesystems: keep the default journal
                pass
            return conn
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)

    def _lookup(self, key: str | None, rkey: str) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        with closing(self._connect()) as conn:
            try:
                if key is not None:
                    row = conn.execute("SELECT proposal FROM mentor_replies WHERE key = ?", (key,)).fetchone()
                    return json.loads(row[0]) if row else None
                rows = conn.execute(
                    "SELECT proposal, backend, model FROM mentor_replies WHERE request_key = ? "
                    "ORDER BY created_at DESC",
                    (rkey,),
                ).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return None
                raise
        if not rows:
            return None
        if len({(b, m) for _, b, m in rows}) > 1 or len({p for p, _, _ in rows}) > 1:
            logger.warning(
                "replay: %d stored replies match this request (%s); using the most recent. Pass the original "
                "mentor as `inner` to pick by backend, model and sampling parameters.",
                len(rows),
                ", ".join(sorted({f"{b}:{m}" for _, b, m in rows})),
            )
        return json.loads(rows[0][0])

    def _store(self, key: str, rkey: str, identity: dict[str, Any], proposal: MentorProposal) -> None:
        secrets = self.secrets()
        payload = scrub_secrets(json.dumps(proposal.to_dict(), ensure_ascii=False), secrets)
        identity_json = scrub_secrets(json.dumps(identity, sort_keys=True, default=str), secrets)
        with closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT OR IGNORE INTO mentor_replies"
                " (key, request_key, backend, model, identity, proposal, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    rkey,
                    str(identity.get("backend", "")),
                    str(identity.get("model", "")),
                    identity_json,
                    payload,
                    time.time(),
                ),
            )
