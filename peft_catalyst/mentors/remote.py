"""What the network mentors share: sampling settings, their validation, bounded retries, the cache identity and the
HTTP status -> ``MentorError`` reason mapping. Each backend (``openai_mentor``, ``hub_mentor``) adds its client.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import Any

from .base import Completion, MentorError, MentorRequest, RetryPolicy
from .chat import ChatMentor
from .metaprompt import MetaPrompt
from .progress import elapsed_bar

__all__ = ["RemoteChatMentor", "http_status_error"]


class RemoteChatMentor(ChatMentor):
    """Base of mentors that send chat-completion requests to a server, one bounded attempt at a time.

    Subclasses create their client, implement :meth:`_attempt` (one request, any fault raised as a scrubbed
    :class:`MentorError`) and may extend :meth:`_identity_params`; retries follow :attr:`retry`.
    """

    #: Prefix of the default :attr:`name` (``"<prefix>:<model>"``).
    name_prefix: str = "remote"

    def __init__(
        self,
        model: str,
        *,
        temperature: float,
        top_p: float | None,
        max_tokens: int,
        num_samples: int,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        seed: int | None,
        meta_prompt: MetaPrompt | str | os.PathLike[str] | None,
        strict_retry: bool,
        few_shot: bool,
        min_task_overlap: bool,
        name: str | None,
    ) -> None:
        super().__init__(
            meta_prompt=meta_prompt, strict_retry=strict_retry, few_shot=few_shot, min_task_overlap=min_task_overlap
        )
        if not model:
            raise MentorError(f"{type(self).__name__} needs a model name", reason="config")
        if timeout <= 0 or max_retries < 0 or num_samples < 1:
            raise MentorError("timeout must be > 0, max_retries >= 0 and num_samples >= 1", reason="config")
        self.model = model
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.num_samples = num_samples
        self.timeout = float(timeout)
        self.seed = seed
        self.retry = RetryPolicy(max_retries=max_retries, max_wait_s=max_retry_wait)
        self.name = name or f"{self.name_prefix}:{model}"

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

    def _sampling_kwargs(self, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
        """The request's sampling fields; optional ones only when set, so servers that lack them are not bothered."""
        kwargs: dict[str, Any] = {"temperature": self.temperature, max_tokens_key: self.max_tokens}
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if self.num_samples > 1:
            kwargs["n"] = self.num_samples
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return kwargs

    def complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        """Send ``messages`` with bounded retries of transient faults (see :attr:`retry`), showing the time waited."""
        with elapsed_bar(f"{self.name}: waiting for the reply", self.progress):
            completion, _attempts = self.retry.run(lambda: self._attempt(messages), describe=self.name)
        return completion

    @property
    def time_limit_s(self) -> float:
        """Seconds one request may take (retries of transient faults may add more)."""
        return self.timeout

    @abstractmethod
    def _attempt(self, messages: list[dict[str, str]]) -> Completion:
        """One request within :attr:`timeout`; any fault raised as a scrubbed :class:`MentorError`."""


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
