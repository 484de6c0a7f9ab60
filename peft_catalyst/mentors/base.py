"""The mentor contract: a :class:`MentorRequest` (task, scored trajectory, earlier rounds) in, a proposal out.

What the trainer calls on a mentor is :class:`Mentor`: ``name``, ``usage`` and ``propose(request)``. A mentor knows
nothing about torch or the trainer. Failures raise :class:`MentorError`; a reply without usable candidates is an
empty proposal with a ``warning``, which the trainer treats as a skipped round. Chat-model backends share
:class:`~peft_catalyst.mentors.chat.ChatMentor`, which renders the meta-prompt and parses the reply.
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
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

from peft_catalyst.records import LabeledExample, ScoredPrompt, is_better

logger = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "Mentor",
    "LabeledExample",
    "MentorError",
    "MentorProposal",
    "MentorRequest",
    "MentorUsage",
    "PROPOSALS",
    "PastRound",
    "ReplayMissError",
    "RetryPolicy",
    "ScoredPrompt",
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


class ReplayMissError(MentorError):
    """A strict replay has no stored reply for a request: the run cannot be replayed as asked.

    Unlike every other mentor fault this one ends the run (the trainer re-raises it, naming the round), because a
    strict replay promises that no round is skipped or answered differently. ``key`` is the request's cache key.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message, reason="cache_miss")
        self.key = key


def _finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (JSON has no inf/nan)."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


TrajectoryPoint = ScoredPrompt
"""The mentor API's name for a scored prompt of a request: an alias of :class:`~peft_catalyst.records.ScoredPrompt`
(one class), built as ``TrajectoryPoint(text, score, loss=None)``. A request keeps a point's text, score and loss."""


def _request_point(point: ScoredPrompt | dict[str, Any]) -> ScoredPrompt:
    """What a request keeps of a scored prompt: a copy holding ``text``, ``score`` and ``loss`` alone.

    A dict is a point as :meth:`MentorRequest.to_dict` writes it; an older ``{"text", "loss", "metric"}`` dict (written
    before scores were named, when the loss ranked the prompts) reads its loss as the score.
    """
    if isinstance(point, ScoredPrompt):
        text, score, loss = point.text, point.score, point.loss
    elif "score" not in point:
        text, score, loss = point["text"], point["loss"], point["loss"]
    else:
        text, score, loss = point["text"], point["score"], point.get("loss")
    if score is None:
        raise ValueError(f"a mentor request shows scored prompts only; {text!r} has no score")
    return ScoredPrompt(text, score, loss)


def _point_dict(point: ScoredPrompt) -> dict[str, Any]:
    """A request point's JSON form, ``{"text", "score", "loss"}``: what cache keys hash (:func:`_request_point` reads
    it back)."""
    return {"text": point.text, "score": point.score, "loss": point.loss}


@dataclass(frozen=True)
class PastRound:
    """An earlier round's outcome, so a mentor can learn across rounds: what was proposed, scored and taken.

    ``scores`` holds one ranking score per ``proposed`` text (None: not scored, or not finite); ``taken`` is the text
    that became the restart (None: the current prompt was kept); ``current_score`` is the incumbent's score.
    """

    round: int
    proposed: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    taken: str | None = None
    current_score: float | None = None

    def __post_init__(self) -> None:
        proposed = [str(t) for t in self.proposed]
        scores = [_finite_or_none(s) for s in self.scores]
        if len(scores) != len(proposed):
            raise ValueError(f"PastRound needs one score per proposed text, got {len(scores)} for {len(proposed)}")
        object.__setattr__(self, "proposed", proposed)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "current_score", _finite_or_none(self.current_score))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; :meth:`from_dict` reads it back."""
        return {
            "round": self.round,
            "proposed": list(self.proposed),
            "scores": list(self.scores),
            "taken": self.taken,
            "current_score": self.current_score,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PastRound:
        """Inverse of :meth:`to_dict`."""
        return cls(
            round=int(data["round"]),
            proposed=list(data.get("proposed") or []),
            scores=list(data.get("scores") or []),
            taken=data.get("taken"),
            current_score=data.get("current_score"),
        )


#: How a mentor proposes: ``"new"`` prompts from the scored history, or an ``"edit"`` of the best prompt so far that
#: fixes the errors shown.
Proposal = Literal["new", "edit"]
PROPOSALS: tuple[str, ...] = get_args(Proposal)


@dataclass(frozen=True)
class MentorRequest:
    """What the mentor is asked: the task, the scored trajectory, and how many prompts of how many words to return.

    ``metric`` names the score that ranks prompts (``ScoredPrompt.score``) and ``higher_is_better`` its direction;
    ``earlier_rounds`` holds the outcomes of the rounds before this one, oldest first.

    The evidence, plain data drawn from the catalyst split by the round: ``examples`` (labelled, balanced over the
    classes), ``errors`` (examples the current prompt gets wrong, with the predicted label; empty where the ranking
    has no notion of a label), ``labels`` (the class names or label words the doer uses) and ``best_prompts`` (the
    best discrete prompts scored so far, best first). ``proposal`` is ``"new"`` or ``"edit"`` (:data:`PROPOSALS`).
    Empty evidence and ``"new"`` leave :meth:`to_dict` as it was before they existed, so older cache keys still hold.
    """

    task_description: str
    trajectory: Sequence[ScoredPrompt]
    num_candidates: int = 4
    max_words: int = 8
    manual_prompt: str | None = None
    metric: str = "loss"
    higher_is_better: bool = False
    earlier_rounds: Sequence[PastRound] = ()
    examples: Sequence[LabeledExample] = ()
    errors: Sequence[LabeledExample] = ()
    labels: Sequence[str] = ()
    best_prompts: Sequence[ScoredPrompt] = ()
    proposal: Proposal = "new"

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")
        if not self.metric:
            raise ValueError("metric must be a non-empty name")
        points = tuple(_request_point(p) for p in self.trajectory)
        rounds = tuple(r if isinstance(r, PastRound) else PastRound.from_dict(r) for r in self.earlier_rounds)
        if self.proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, not {self.proposal!r}")
        object.__setattr__(self, "trajectory", points)
        object.__setattr__(self, "earlier_rounds", rounds)
        for name in ("examples", "errors"):
            items = getattr(self, name)
            object.__setattr__(
                self, name, tuple(e if isinstance(e, LabeledExample) else LabeledExample.from_dict(e) for e in items)
            )
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        best = tuple(_request_point(p) for p in self.best_prompts)
        object.__setattr__(self, "best_prompts", best)
        object.__setattr__(self, "higher_is_better", bool(self.higher_is_better))

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats score ``b`` in this request's direction."""
        return is_better(a, b, self.higher_is_better)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (broadcast between processes, logged to the chat log); see :meth:`from_dict`."""
        return {
            "task_description": self.task_description,
            "trajectory": [_point_dict(p) for p in self.trajectory],
            "num_candidates": self.num_candidates,
            "max_words": self.max_words,
            "manual_prompt": self.manual_prompt,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "earlier_rounds": [r.to_dict() for r in self.earlier_rounds],
            **self.evidence_dict(),
        }

    def evidence_dict(self) -> dict[str, Any]:
        """The evidence fields that are set (none: ``{}``), as :meth:`to_dict` writes them and cache keys hash them."""
        data: dict[str, Any] = {}
        if self.examples:
            data["examples"] = [e.to_dict() for e in self.examples]
        if self.errors:
            data["errors"] = [e.to_dict() for e in self.errors]
        if self.labels:
            data["labels"] = list(self.labels)
        if self.best_prompts:
            data["best_prompts"] = [_point_dict(p) for p in self.best_prompts]
        if self.proposal != "new":
            data["proposal"] = self.proposal
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MentorRequest:
        """Inverse of :meth:`to_dict`; fields missing from an older dict take their defaults."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


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
    """Cumulative accounting of a mentor: calls, failures, cache hits, tokens and wall-clock latency.

    ``calls`` counts the calls an LLM answered; a call that failed (unreachable, rejected key, time-out, unreadable
    reply) counts in ``failures`` only, so a run whose mentor never answered reports no LLM calls. ``cache_hits``
    counts replies from a cache or a replay, which are never calls. Tokens are those the calls cost.
    """

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
        """Add one answered call, one failed call with ``failed``, or one reply from a cache with ``cache_hit``
        (thread-safe)."""
        with self._lock:
            self.calls += int(not cache_hit and not failed)
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

    def joined(self, other: Completion) -> Completion:
        """This reply and a further one of the same call: texts pooled, token counts added."""
        return Completion(
            texts=[*self.texts, *other.texts],
            model=self.model,
            prompt_tokens=add_token_counts(self.prompt_tokens, other.prompt_tokens),
            completion_tokens=add_token_counts(self.completion_tokens, other.completion_tokens),
            request_id=self.request_id,
        )


def add_token_counts(a: int | None, b: int | None) -> int | None:
    """The sum of two token counts a backend may not report (None when neither was)."""
    return None if a is None and b is None else (a or 0) + (b or 0)


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
    """The mentor contract, what the trainer calls: :attr:`name`, :attr:`usage` and :meth:`propose`.

    Subclass it and implement :meth:`propose` for a mentor that does not chat (a cache, random words, a wrapper); a
    mentor that asks a chat model subclasses :class:`~peft_catalyst.mentors.chat.ChatMentor` instead and implements
    ``complete``. :meth:`check` and :meth:`close` are optional hooks, no-ops here.
    """

    #: A short name for logs, the history and the model card (never a key or a credentialed URL).
    name: str = "mentor"
    #: What kind of mentor this is (``"openai"``, ``"cache"``, ``"random"``, ...).
    backend: str = "mentor"
    #: Cumulative calls, failures, tokens and latency; ``usage.to_dict()`` goes into the history.
    usage: MentorUsage

    def __init__(self) -> None:
        self.usage = MentorUsage()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def propose(self, request: MentorRequest) -> MentorProposal:
        """Candidate prompts for ``request``; raise :class:`MentorError` or return an empty proposal with a warning."""

    @property
    def time_limit_s(self) -> float | None:
        """Seconds one call may take, for the line logged before a round asks (None: no limit, or instant)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for mentors without resources
        """Release network clients or other resources (no-op by default)."""

    def secrets(self) -> list[str]:
        """The credentials this mentor holds (API keys, tokens), for masking in anything published; none by default."""
        return []

    def check(self) -> None:  # noqa: B027 - optional hook, a no-op for mentors that are always reachable
        """Raise :class:`MentorError` when the backend cannot be reached right now; costs no tokens.

        Called once before training, so that an unreachable endpoint is reported at start, not at the first round.
        """

    def __enter__(self) -> Mentor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
