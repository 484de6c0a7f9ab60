"""What the network mentors share: their settings (:class:`ChatOptions`), the settings' validation, bounded retries,
the cache identity and the HTTP status -> ``MentorError`` reason mapping. Each backend (``openai_mentor``,
``hub_mentor``) adds its client.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import Completion, MentorError, MentorRequest, RetryPolicy
from .chat import ChatMentor
from .metaprompt import MetaPrompt
from .progress import elapsed_bar

__all__ = ["ChatOptions", "RemoteChatMentor", "http_status_error"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatOptions:
    """The settings every server mentor shares (:class:`OpenAIMentor`, :class:`HubInferenceMentor`).

    Give them to a mentor as ``options=ChatOptions(...)``, or as keywords of its constructor
    (``OpenAIMentor("gpt-4o-mini", temperature=0.2, timeout=60)``); keywords override ``options``.

    Attributes:
        temperature, top_p, max_tokens: sampling parameters (``max_tokens`` per sample).
        num_samples: choices per request (``n``); candidates from all are pooled.
        timeout: seconds per attempt (connect, wait for the reply, and read the body).
        max_retries: extra attempts after a time-out, connection error, 429 or 5xx.
        max_retry_wait: longest wait between attempts; a longer ``Retry-After`` ends the call at once.
            A call therefore lasts at most about ``(max_retries + 1) * 2 * timeout + max_retries * max_retry_wait``.
        seed: sent to the server (best-effort determinism) and part of the cache key.
        meta_prompt: the request template: a :class:`MetaPrompt`, its text, or a file (default: the built-in one).
        strict_retry: ask once more, with the rules restated, when a reply holds no usable prompt.
        few_shot: show a worked example turn before the request.
        min_task_overlap: keep only prompts that share a word with the task description.
        name: the name in logs and the history (default ``"<backend>:<model>"``).
    """

    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 256
    num_samples: int = 1
    timeout: float = 30.0
    max_retries: int = 2
    max_retry_wait: float = 20.0
    seed: int | None = None
    meta_prompt: MetaPrompt | str | os.PathLike[str] | None = None
    strict_retry: bool = True
    few_shot: bool = False
    min_task_overlap: bool = False
    name: str | None = None

    @classmethod
    def of(cls, options: ChatOptions | None, settings: Mapping[str, Any], owner: str) -> ChatOptions:
        """``options`` (default: the defaults) with the fields named in ``settings`` replaced; a key that is no field
        is a ``TypeError`` naming ``owner``, as an unknown keyword of its constructor would be."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(
                f"{owner}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; its settings are "
                f"the ChatOptions fields: {', '.join(names)}"
            )
        return dataclasses.replace(options if options is not None else cls(), **settings)


class RemoteChatMentor(ChatMentor):
    """Base of mentors that send chat-completion requests to a server, one bounded attempt at a time.

    Subclasses create their client, implement :meth:`_attempt` (one request, any fault raised as a scrubbed
    :class:`MentorError`) and may extend :meth:`_identity_params`; retries follow :attr:`retry`.

    A call wants :meth:`samples_for` replies and asks for them with ``n``. A server that returns fewer choices
    (it ignores ``n``) or refuses ``n`` (HTTP 400/422, remembered) gets further requests while the call's
    :attr:`timeout` lasts; the replies that came back stand.
    """

    #: Set once the server refused ``n``: from then on each request asks for one reply.
    _n_refused: bool = False

    #: Prefix of the default :attr:`name` (``"<prefix>:<model>"``).
    name_prefix: str = "remote"

    def __init__(self, model: str, options: ChatOptions) -> None:
        super().__init__(
            meta_prompt=options.meta_prompt,
            strict_retry=options.strict_retry,
            few_shot=options.few_shot,
            min_task_overlap=options.min_task_overlap,
        )
        if not model:
            raise MentorError(f"{type(self).__name__} needs a model name", reason="config")
        if options.timeout <= 0 or options.max_retries < 0 or options.num_samples < 1:
            raise MentorError("timeout must be > 0, max_retries >= 0 and num_samples >= 1", reason="config")
        self.options = options
        self.model = model
        self.temperature = options.temperature
        self.top_p = options.top_p
        self.max_tokens = options.max_tokens
        self.num_samples = options.num_samples
        self.timeout = float(options.timeout)
        self.seed = options.seed
        self.retry = RetryPolicy(max_retries=options.max_retries, max_wait_s=options.max_retry_wait)
        self.name = options.name or f"{self.name_prefix}:{model}"

    def _identity_params(self) -> dict[str, Any]:
        """Sampling parameters that decide the reply (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "n": self.num_samples,
        }

    def cache_identity(self) -> dict[str, Any]:
        """Backend, model, sampling parameters and seed (no key, no URL)."""
        return {"backend": self.backend, "model": self.model, "params": self._identity_params(), "seed": self.seed}

    def _sampling_kwargs(self, max_tokens_key: str = "max_tokens", *, n: int = 1, extra: int = 0) -> dict[str, Any]:
        """The request's sampling fields; optional ones only when set, so servers that lack them are not bothered.

        ``extra`` numbers the further requests of one call: each gets its own seed, or a seeded server would repeat
        the first reply.
        """
        kwargs: dict[str, Any] = {"temperature": self.temperature, max_tokens_key: self.max_tokens}
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if n > 1:
            kwargs["n"] = n
        if self.seed is not None:
            kwargs["seed"] = self.seed + extra
        return kwargs

    def complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        """Send ``messages`` with bounded retries of transient faults (see :attr:`retry`), showing the time waited;
        then, while fewer than :meth:`samples_for` replies came back and time is left, ask again."""
        wanted = self.samples_for(request)
        started = time.monotonic()
        with elapsed_bar(f"{self.name}: waiting for the reply", self.progress):
            completion = self._first_request(messages, wanted)
            extra = 0
            while len(completion.texts) < wanted:
                remaining = self.timeout - (time.monotonic() - started)
                if remaining <= 0:
                    logger.info("%s: %d of %d replies within %.0f s", self.name, len(completion.texts), wanted,
                                self.timeout)  # fmt: skip
                    break
                extra += 1
                n = 1 if self._n_refused else wanted - len(completion.texts)
                try:
                    more = self._attempt(messages, n=n, extra=extra, timeout=remaining)
                except MentorError as exc:  # the replies in hand stand; the round goes on with them
                    logger.info("%s: %d of %d replies (%s)", self.name, len(completion.texts), wanted, exc)
                    break
                completion = completion.joined(more)
        return completion

    def _first_request(self, messages: list[dict[str, str]], wanted: int) -> Completion:
        """The call's first request, retried; a refused ``n`` is remembered and the request sent without it."""
        n = 1 if self._n_refused else wanted
        try:
            completion, _attempts = self.retry.run(lambda: self._attempt(messages, n=n), describe=self.name)
        except MentorError as exc:
            if n == 1 or exc.reason != "client_error":
                raise
            # Without n: if this fails too, n was not the cause, and nothing is remembered.
            completion, _attempts = self.retry.run(lambda: self._attempt(messages, n=1), describe=self.name)
            self._n_refused = True
            logger.warning("%s: the server refused n=%d (%s); asking one reply per request from now on", self.name,
                           n, exc)  # fmt: skip
        return completion

    @property
    def time_limit_s(self) -> float:
        """Seconds one request may take (retries of transient faults may add more)."""
        return self.timeout

    @abstractmethod
    def _attempt(
        self, messages: list[dict[str, str]], *, n: int = 1, extra: int = 0, timeout: float | None = None
    ) -> Completion:
        """One request for ``n`` replies (the ``extra``-th further one of its call) within ``timeout`` (default
        :attr:`timeout`); any fault raised as a scrubbed :class:`MentorError`."""


def http_status_error(name: str, status: int, detail: str, retry_after: float | None) -> MentorError:
    """A ``MentorError`` for an HTTP error status, with the reason that decides whether it is retried."""
    if status == 429:
        reason = "rate_limited"
    elif status == 408:
        reason = "timeout"
    elif status == 409 or status >= 500:
        reason = "server_error"
    elif status in (401, 403):
        reason = "auth"
    else:
        reason = "client_error"
    return MentorError(f"{name}: HTTP {status}: {detail}", reason=reason, retry_after=retry_after)
