"""The mentor protocol: a request (task + scored trajectory) in, candidate text prompts out.

A mentor knows nothing about torch or the trainer. Every backend shares :meth:`Mentor.propose`, which renders the
meta-prompt, calls the backend once (plus one stricter retry when the reply has no usable line), parses and filters
the reply, and keeps cumulative usage. Failures raise :class:`MentorError`; a reply without usable candidates is an
empty proposal with a ``warning``, which the trainer treats as a skipped round.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .metaprompt import MetaPrompt, resolve_meta_prompt
from .parsing import ParseResult, parse_reply, stems

logger = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "Mentor",
    "MentorError",
    "MentorProposal",
    "MentorRequest",
    "MentorUsage",
    "RetryPolicy",
    "TrajectoryPoint",
    "redact_url",
    "scrub_secrets",
]

T = TypeVar("T")

#: Most characters of raw reply text that are parsed and kept; a runaway reply is truncated, not an error.
MAX_RAW_CHARS = 64_000


class MentorError(Exception):
    """The one exception a mentor raises: ``reason`` is a short machine-readable tag, the cause is chained.

    Reasons used: ``timeout``, ``connection``, ``rate_limited``, ``server_error``, ``client_error``, ``auth``,
    ``bad_response``, ``response_too_large``, ``cache_miss``, ``config``, ``generation``.
    """

    def __init__(self, message: str, reason: str = "error", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        #: Seconds the server asked to wait (``Retry-After``), when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"[{self.reason}] {self.args[0] if self.args else ''}"


@dataclass(frozen=True)
class TrajectoryPoint:
    """One scored prompt of the trajectory: its text, its loss (lower is better) and an optional task metric."""

    text: str
    score: float
    loss: float | None = None


@dataclass
class PastRound:
    """An earlier round's outcome (temporary)."""

    round: int
    proposed: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    taken: str | None = None
    current_score: float | None = None


@dataclass(frozen=True)
class MentorRequest:
    """What the mentor is asked: the task, the scored trajectory, and how many prompts of how many words to return."""

    task_description: str
    trajectory: Sequence[TrajectoryPoint]
    num_candidates: int = 4
    max_words: int = 8
    manual_prompt: str | None = None
    metric: str = "loss"
    higher_is_better: bool = False
    earlier_rounds: Sequence[PastRound] = ()

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")
        points = tuple(
            p if isinstance(p, TrajectoryPoint) else TrajectoryPoint(**p)
            for p in self.trajectory  # type: ignore[arg-type]
        )
        object.__setattr__(self, "trajectory", points)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for logs and the chat log)."""
        return {
            "task_description": self.task_description,
            "trajectory": [asdict(p) for p in self.trajectory],
            "num_candidates": self.num_candidates,
            "max_words": self.max_words,
            "manual_prompt": self.manual_prompt,
        }


@dataclass
class MentorProposal:
    """A mentor's answer: usable candidates in the mentor's order, the raw reply and what the call cost.

    ``candidates`` is empty when the reply had no usable line; ``warning`` then says why. ``rejected`` lists
    ``[text, reason]`` pairs the filters dropped, for diagnostics. ``messages`` is the request as first sent;
    ``retry_messages`` the conversation of the stricter retry, when there was one (``attempts == 2``), and ``raw``
    then holds both replies.
    """

    candidates: list[str]
    raw: str
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str
    request_id: str | None
    messages: list[dict[str, str]]
    rejected: list[list[str]] = field(default_factory=list)
    attempts: int = 1
    cached: bool = False
    warning: str | None = None
    retry_messages: list[dict[str, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; :meth:`from_dict` reads it back (the cache stores this)."""
        return {
            "candidates": list(self.candidates),
            "raw": self.raw,
            "latency_s": self.latency_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "request_id": self.request_id,
            "messages": [dict(m) for m in self.messages],
            "rejected": [list(r) for r in self.rejected],
            "attempts": self.attempts,
            "cached": self.cached,
            "warning": self.warning,
            "retry_messages": [dict(m) for m in self.retry_messages] if self.retry_messages is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MentorProposal:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so older cache rows stay readable."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class MentorUsage:
    """Cumulative accounting of a mentor: calls, failures, cache hits, tokens and wall-clock latency."""

    calls: int = 0
    failures: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable / deep-copyable despite the lock
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def record(
        self,
        *,
        latency_s: float,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        failed: bool = False,
        cache_hit: bool = False,
    ) -> None:
        """Add one call (thread-safe)."""
        with self._lock:
            self.calls += 1
            self.failures += int(failed)
            self.cache_hits += int(cache_hit)
            self.prompt_tokens += prompt_tokens or 0
            self.completion_tokens += completion_tokens or 0
            self.latency_s += latency_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable snapshot."""
        with self._lock:
            return {
                "calls": self.calls,
                "failures": self.failures,
                "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "latency_s": round(self.latency_s, 6),
            }


@dataclass
class Completion:
    """What a backend returns for one chat request: one text per sample plus the metadata it reported."""

    texts: list[str]
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str | None = None


# --------------------------------------------------------------------------------------------------------- secrets
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}")
_KEYLIKE = re.compile(r"\b(sk|hf|gsk|pk|rk)[-_][A-Za-z0-9._-]{8,}")


def scrub_secrets(text: str, secrets: Iterable[str | None] = (), *, patterns: bool = True) -> str:
    """Remove the given secrets from ``text`` and, with ``patterns``, anything shaped like an API key or token."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    if not patterns:
        return text
    text = _BEARER.sub(r"\1***", text)
    return _KEYLIKE.sub("***", text)


def scrub_exception(exc: BaseException, secrets: Iterable[str | None]) -> None:
    """Rewrite an exception's message in place so a chained traceback cannot print a secret the server echoed."""
    secrets = [s for s in secrets if s]
    try:
        exc.args = tuple(scrub_secrets(a, secrets) if isinstance(a, str) else a for a in exc.args)
        for attr in ("message", "body"):
            value = getattr(exc, attr, None)
            if isinstance(value, str):
                setattr(exc, attr, scrub_secrets(value, secrets))
            elif isinstance(value, dict):
                setattr(exc, attr, {"scrubbed": True})
    except Exception:  # pragma: no cover - exotic exception types with read-only attributes
        pass


def redact_url(url: str | None) -> str | None:
    """A URL without user info, query or fragment: safe to log or put in a name."""
    if not url:
        return url
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------------------------------------- retries
@dataclass
class RetryPolicy:
    """Bounded retries for transient faults: at most ``max_retries`` more attempts, each wait capped.

    A server's ``Retry-After`` is honoured up to ``max_wait_s``; otherwise exponential backoff with jitter. The
    total wall time of a call is therefore at most ``(max_retries + 1) * attempt_time + max_retries * max_wait_s``.
    """

    max_retries: int = 2
    max_wait_s: float = 20.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def wait_time(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            return min(retry_after, self.max_wait_s)
        backoff = min(self.initial_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return min(backoff * (1 - 0.25 * random.random()), self.max_wait_s)

    def run(
        self,
        fn: Callable[[], T],
        *,
        describe: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[T, int]:
        """Call ``fn`` until it succeeds or a non-transient ``MentorError`` / the retry budget ends it.

        ``fn`` must raise ``MentorError``; the reasons ``timeout``, ``connection``, ``rate_limited`` and
        ``server_error`` are transient. A ``Retry-After`` longer than ``max_wait_s`` ends the call at once (waiting
        less would only hit the limit again). Returns ``(result, attempts)``.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), attempt
            except MentorError as exc:
                if exc.reason not in TRANSIENT_REASONS or attempt > self.max_retries:
                    raise
                if exc.retry_after is not None and exc.retry_after > self.max_wait_s:
                    raise MentorError(
                        f"{describe}: the server asks to wait {exc.retry_after:.0f} s, more than "
                        f"max_retry_wait={self.max_wait_s:.0f} s",
                        reason=exc.reason,
                        retry_after=exc.retry_after,
                    ) from exc
                wait = self.wait_time(attempt, exc.retry_after)
                logger.warning("%s failed (%s), retry %d/%d in %.1f s", describe, exc, attempt, self.max_retries, wait)
                sleep(wait)


TRANSIENT_REASONS = frozenset({"timeout", "connection", "rate_limited", "server_error"})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    import email.utils

    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


# --------------------------------------------------------------------------------------------------------- mentor
class Mentor(ABC):
    """Base class of every mentor: turns a :class:`MentorRequest` into a :class:`MentorProposal`.

    Subclasses implement :meth:`_complete` (one chat request to the backend, raising :class:`MentorError` on any
    fault) and :meth:`cache_identity`; this class renders the meta-prompt, parses, retries once with a stricter
    instruction when nothing usable came back, and keeps :attr:`usage`.

    Args:
        meta_prompt: a :class:`MetaPrompt`, a user-turn template (str) or a template file (path; see
            ``resolve_meta_prompt``), or None for :attr:`default_meta_prompt`.
        strict_retry: when a reply has no usable candidate, ask once more with a stricter instruction.
        few_shot: prepend a worked example (another task) as a previous chat turn; helps small local models.
        min_task_overlap: drop candidates that share no word with the task description (see ``parse_candidates``).
    """

    name: str = "mentor"
    backend: str = "mentor"
    #: The meta-prompt used when none is given; a template string or file replaces only its user turn.
    default_meta_prompt: MetaPrompt = MetaPrompt()
    #: Credentials this mentor holds; scrubbed from replies, errors and anything written (set by subclasses).
    _secrets: list[str] = []

    def __init__(
        self,
        *,
        meta_prompt: MetaPrompt | str | Any | None = None,
        strict_retry: bool = True,
        few_shot: bool = False,
        min_task_overlap: bool = False,
    ) -> None:
        self.meta_prompt = resolve_meta_prompt(meta_prompt, base=self.default_meta_prompt)
        self.strict_retry = strict_retry
        self.few_shot = few_shot
        self.min_task_overlap = min_task_overlap
        self.usage = MentorUsage()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for mentors without resources
        """Release network clients or other resources (no-op by default)."""

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op for mentors that are always reachable
        """Raise :class:`MentorError` when the backend cannot be reached right now; costs no tokens.

        Called once before training, so that an unreachable endpoint is reported at start, not at the first round.
        """

    def __enter__(self) -> Mentor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- to implement ---------------------------------------------------------------------------------------------
    @abstractmethod
    def _complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        """Send one chat request; raise :class:`MentorError` on any fault (after the backend's own retries)."""

    @abstractmethod
    def cache_identity(self) -> dict[str, Any]:
        """Backend, model, sampling parameters and seed: what, besides the messages, decides the reply.

        Never include a key, token or credentialed URL: this goes into the cache key and the cache file.
        """

    # -- shared logic ---------------------------------------------------------------------------------------------
    def build_messages(self, request: MentorRequest) -> list[dict[str, str]]:
        """The chat messages sent for ``request`` (system, optional few-shot turn, the rendered meta-prompt)."""
        return self.meta_prompt.render(request, few_shot=self.few_shot)

    def parse(self, raw_texts: Sequence[str], request: MentorRequest) -> ParseResult:
        """Parse and filter the samples of one reply into usable candidates (in order, deduplicated)."""
        return parse_reply(
            raw_texts,
            max_words=request.max_words,
            num_candidates=request.num_candidates,
            exclude=self._excluded_texts(request),
            task_description=request.task_description if self.min_task_overlap else None,
            banned_words=self._example_words(request),
        )

    def _scrub_texts(self, texts: Sequence[str]) -> list[str]:
        """Replies with this mentor's own credentials removed (a server may echo them)."""
        return [scrub_secrets(t, self._secrets, patterns=False) for t in texts] if self._secrets else list(texts)

    def _example_words(self, request: MentorRequest) -> list[str]:
        """Few-shot example words absent from this task (and its prompts): using one means copying the example."""
        if not self.few_shot:
            return []
        own = " ".join([request.task_description, request.manual_prompt or ""] + [p.text for p in request.trajectory])
        own_stems = stems(own)
        return [w for w in self.meta_prompt.example_words() if not stems(w) & own_stems]

    def _excluded_texts(self, request: MentorRequest) -> list[str]:
        """Texts a candidate must not copy: the trajectory, the manual prompt, the few-shot example answers."""
        texts = [p.text for p in request.trajectory]
        if request.manual_prompt:
            texts.append(request.manual_prompt)
        if self.few_shot:
            texts.extend(self.meta_prompt.example_answers())
        return texts

    def propose(self, request: MentorRequest) -> MentorProposal:
        """Ask the backend for candidates; raises :class:`MentorError`, or returns an empty proposal with a warning."""
        start = time.perf_counter()
        messages = self.build_messages(request)
        retry_error: str | None = None
        retry_messages: list[dict[str, str]] | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        try:
            completion = self._complete(messages, request)
            prompt_tokens, completion_tokens = completion.prompt_tokens, completion.completion_tokens
            raw_texts = self._scrub_texts(completion.texts)
            parsed = self.parse(raw_texts, request)
            attempts = 1
            if not parsed.candidates and self.strict_retry:
                logger.info(
                    "%s: no usable candidate (%s); retrying with a stricter instruction", self.name, parsed.summary()
                )
                retry_messages = self.meta_prompt.retry_messages(messages, raw_texts[0] if raw_texts else "", request)
                attempts = 2
                try:
                    retry = self._complete(retry_messages, request)
                except MentorError as exc:  # the first reply stands: an empty proposal, with the reason
                    retry_error = str(exc)
                else:
                    prompt_tokens = _add(prompt_tokens, retry.prompt_tokens)
                    completion_tokens = _add(completion_tokens, retry.completion_tokens)
                    retry_texts = self._scrub_texts(retry.texts)
                    retry_parsed = self.parse(retry_texts, request)
                    retry_parsed.rejected = parsed.rejected + retry_parsed.rejected
                    parsed, raw_texts, completion = retry_parsed, raw_texts + retry_texts, retry
        except MentorError:
            self.usage.record(
                latency_s=time.perf_counter() - start,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                failed=True,
            )
            raise
        except Exception as exc:  # a backend bug must not kill training: surface it as the one error type
            self.usage.record(latency_s=time.perf_counter() - start, failed=True)
            raise MentorError(f"{self.name}: unexpected {type(exc).__name__}", reason="error") from exc
        latency = time.perf_counter() - start
        self.usage.record(latency_s=latency, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        proposal = MentorProposal(
            candidates=parsed.candidates,
            raw=_truncate("\n\n".join(_truncate(t) for t in raw_texts)),
            latency_s=latency,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=completion.model,
            request_id=completion.request_id,
            messages=messages,
            rejected=[[text, reason] for text, reason in parsed.rejected],
            attempts=attempts,
            retry_messages=retry_messages if attempts > 1 else None,
        )
        if not proposal.candidates:
            proposal.warning = f"no usable candidate in the reply ({parsed.summary()})"
            if retry_error:
                proposal.warning += f"; the stricter retry failed: {retry_error}"
            logger.warning("%s: %s", self.name, proposal.warning)
        else:
            logger.info(
                "%s: %d candidate(s) in %.2f s (%s prompt + %s completion tokens)",
                self.name,
                len(proposal.candidates),
                latency,
                prompt_tokens,
                completion_tokens,
            )
        return proposal


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


def _truncate(text: str | None, limit: int = MAX_RAW_CHARS) -> str:
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... truncated {len(text) - limit} characters]"
