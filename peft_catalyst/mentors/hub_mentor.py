"""Mentor on the Hugging Face inference API: ``huggingface_hub.InferenceClient.chat_completion``.

Works with Inference Providers (``provider=``), a dedicated Inference Endpoint, or any OpenAI-compatible server
(``base_url=``). The client reads the whole reply before returning, so each attempt runs in a daemon thread with a
hard deadline: a stalled or trickling server cannot hold training longer than ``timeout``. The token never reaches
a message, a log line or the cache. Note that ``HF_HUB_OFFLINE=1`` blocks every request of this client.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .base import Completion, Mentor, MentorError, MentorRequest, RetryPolicy, parse_retry_after, redact_url
from .base import scrub_exception as _scrub_exception
from .base import scrub_secrets as _scrub
from .metaprompt import MetaPrompt

logger = logging.getLogger(__name__)

__all__ = ["HubInferenceMentor"]


class HubInferenceMentor(Mentor):
    """Mentor on ``InferenceClient.chat_completion`` (Hugging Face Inference Providers or endpoints).

    Args:
        model: a Hub model id (``"meta-llama/Llama-3.1-8B-Instruct"``) or, with ``base_url``, the served model name.
        token: Hugging Face token; default: the client's usual lookup (``HF_TOKEN``, the stored login).
        provider: an inference provider name or ``"auto"``; ignored with ``base_url``.
        base_url: an OpenAI-compatible server or Inference Endpoint URL instead of the provider routing.
        temperature, top_p, max_tokens, num_samples, seed: sampling parameters (``num_samples`` is ``n``).
        timeout: hard cap in seconds on one attempt. max_retries / max_retry_wait: as for ``OpenAIMentor``.
    """

    backend = "hf-inference"

    def __init__(
        self,
        model: str,
        token: str | None = None,
        provider: str | None = None,
        *,
        base_url: str | None = None,
        temperature: float = 0.7,
        top_p: float | None = None,
        max_tokens: int = 256,
        num_samples: int = 1,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_retry_wait: float = 20.0,
        seed: int | None = None,
        meta_prompt: MetaPrompt | str | os.PathLike[str] | None = None,
        strict_retry: bool = True,
        few_shot: bool = False,
        min_task_overlap: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(
            meta_prompt=meta_prompt, strict_retry=strict_retry, few_shot=few_shot, min_task_overlap=min_task_overlap
        )
        from huggingface_hub import InferenceClient

        if not model:
            raise MentorError("HubInferenceMentor needs a model", reason="config")
        if timeout <= 0 or max_retries < 0 or num_samples < 1:
            raise MentorError("timeout must be > 0, max_retries >= 0 and num_samples >= 1", reason="config")
        self.model = model
        self.provider = provider
        self.base_url = base_url
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.num_samples = num_samples
        self.timeout = float(timeout)
        self.seed = seed
        self.retry = RetryPolicy(max_retries=max_retries, max_wait_s=max_retry_wait)
        self.name = name or f"hf:{model}"
        self._secrets = [token] if token else _implicit_token()
        try:
            if base_url:
                self._client = InferenceClient(base_url=base_url, api_key=token, timeout=self.timeout)
            else:
                self._client = InferenceClient(model=model, token=token, provider=provider, timeout=self.timeout)
        except Exception as exc:
            _scrub_exception(exc, self._secrets)
            raise MentorError(
                f"cannot create the InferenceClient: {_scrub(str(exc), self._secrets)}", reason="config"
            ) from exc

    def __repr__(self) -> str:  # never show the token
        url = redact_url(self.base_url)
        return f"HubInferenceMentor(model={self.model!r}, provider={self.provider!r}, base_url={url!r})"

    def cache_identity(self) -> dict[str, Any]:
        """Backend, model, provider, sampling parameters and seed (no token, no URL)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "params": {
                "provider": self.provider,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_tokens": self.max_tokens,
                "n": self.num_samples,
            },
            "seed": self.seed,
        }

    # ------------------------------------------------------------------------------------------------------------
    def _complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        completion, _attempts = self.retry.run(lambda: self._attempt(messages), describe=self.name)
        return completion

    def _attempt(self, messages: list[dict[str, str]]) -> Completion:
        kwargs: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.base_url:
            kwargs["model"] = self.model
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if self.num_samples > 1:
            kwargs["n"] = self.num_samples
        if self.seed is not None:
            kwargs["seed"] = self.seed
        output = _call_with_deadline(
            lambda: self._client.chat_completion(messages, **kwargs),
            self.timeout,
            describe=self.name,
            classify=self._classify,
        )
        choices = getattr(output, "choices", None)
        if not choices:
            raise MentorError(f"{self.name}: reply has no choices", reason="bad_response")
        texts = []
        for choice in choices:
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None) if message is not None else None
            texts.append(content if isinstance(content, str) else "")
        usage = getattr(output, "usage", None)
        return Completion(
            texts=texts,
            model=str(getattr(output, "model", None) or self.model),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            request_id=getattr(output, "id", None) or None,
        )

    def _classify(self, exc: BaseException) -> MentorError:
        """Map a client exception to a scrubbed ``MentorError`` (the caller chains it)."""
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

        _scrub_exception(exc, self._secrets)
        where = redact_url(self.base_url) or self.model
        if isinstance(exc, OfflineModeIsEnabled):
            return MentorError(
                f"{self.name}: HF_HUB_OFFLINE is set, the inference API is unreachable by choice", reason="connection"
            )
        if isinstance(exc, (InferenceTimeoutError, TimeoutError)):
            return MentorError(f"{self.name}: no reply within {self.timeout:.0f} s", reason="timeout")
        if isinstance(exc, HfHubHTTPError):
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", 0) or 0
            headers = getattr(response, "headers", {}) or {}
            retry_after = parse_retry_after(headers.get("retry-after"))
            detail = _scrub(str(getattr(exc, "server_message", None) or exc).splitlines()[0][:300], self._secrets)
            if status == 429:
                reason = "rate_limited"
            elif status == 408:
                reason = "timeout"
            elif status >= 500 or status == 409:
                reason = "server_error"
            elif status in (401, 403):
                reason = "auth"
            else:
                reason = "client_error"
            return MentorError(f"{self.name}: HTTP {status}: {detail}", reason=reason, retry_after=retry_after)
        name = type(exc).__name__
        if "Timeout" in name:
            return MentorError(f"{self.name}: no reply within {self.timeout:.0f} s", reason="timeout")
        if any(s in name for s in ("Connect", "Network", "Protocol", "Transport", "ReadError", "Closed")):
            return MentorError(f"{self.name}: cannot reach {where}: {name}", reason="connection")
        if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):  # JSON that is not a completion
            return MentorError(
                f"{self.name}: unreadable reply ({name}: {_scrub(str(exc), self._secrets)[:200]})",
                reason="bad_response",
            )
        return MentorError(f"{self.name}: {name}: {_scrub(str(exc), self._secrets)[:300]}", reason="error")


def _implicit_token() -> list[str]:
    """The token the client would pick up by itself, so that it can be scrubbed from errors too."""
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # pragma: no cover - no stored login
        token = None
    return [token] if token else []


def _call_with_deadline(fn: Any, timeout: float, *, describe: str, classify: Any) -> Any:
    """Run ``fn`` in a daemon thread; give up after ``timeout`` s (the thread is abandoned, never joined)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"mentor-call:{describe}", daemon=True)
    thread.start()
    if not done.wait(timeout):
        raise MentorError(f"{describe}: no complete reply within {timeout:.0f} s", reason="timeout")
    if "error" in box:
        exc = box["error"]
        raise classify(exc) from exc
    return box["value"]
