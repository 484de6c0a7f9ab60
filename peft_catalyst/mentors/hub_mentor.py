"""Mentor on the Hugging Face inference API: ``huggingface_hub.InferenceClient.chat_completion``.

Works with Inference Providers (``provider=``), a dedicated Inference Endpoint, or any OpenAI-compatible server
(``base_url=``). The client reads the whole reply before returning, so each attempt runs in a daemon thread with a
hard deadline: a stalled or trickling server cannot hold training longer than ``timeout``. The token never reaches
a message, a log line or the cache. Note that ``HF_HUB_OFFLINE=1`` blocks every request of this client.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .base import Completion, MentorError, parse_retry_after, redact_url
from .base import scrub_exception as _scrub_exception
from .base import scrub_secrets as _scrub
from .remote import ChatOptions, RemoteChatMentor, http_status_error

logger = logging.getLogger(__name__)

__all__ = ["HubInferenceMentor"]


class HubInferenceMentor(RemoteChatMentor):
    """Mentor on ``InferenceClient.chat_completion`` (Hugging Face Inference Providers or endpoints).

    Args:
        model: a Hub model id (``"meta-llama/Llama-3.1-8B-Instruct"``) or, with ``base_url``, the served model name.
        token: Hugging Face token; default: the client's usual lookup (``HF_TOKEN``, the stored login).
        provider: an inference provider name or ``"auto"``; ignored with ``base_url``.
        base_url: an OpenAI-compatible server or Inference Endpoint URL instead of the provider routing.
        options: the settings server mentors share (:class:`ChatOptions`: sampling, time-out and retries, seed,
            meta-prompt, name); its fields may also be given as keywords (``temperature=0.2``), which win. Here
            ``timeout`` is a hard cap on one attempt.
    """

    backend = "hf-inference"
    name_prefix = "hf"

    def __init__(
        self,
        model: str,
        token: str | None = None,
        provider: str | None = None,
        *,
        base_url: str | None = None,
        options: ChatOptions | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model, ChatOptions.of(options, settings, type(self).__name__))
        from huggingface_hub import InferenceClient

        self.provider = provider
        self.base_url = base_url
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

    def _identity_params(self) -> dict[str, Any]:
        """The provider and the sampling parameters (no token, no URL)."""
        return {"provider": self.provider, **super()._identity_params()}

    def check(self) -> None:
        """Probe once, costing no tokens: a token must be at hand for the provider routing (the client fails only at
        the first request without one), and the token is shown to the Hub (``whoami``) or, with ``base_url``, the
        server's ``/models`` is asked. A refused connection, a time-out or a rejected token raise; a server that
        answers without a ``/models`` route counts as reachable."""
        if not self.base_url and not self._secrets:
            raise MentorError(
                f"{self.name}: no Hugging Face token: set HF_TOKEN or log in with `hf auth login`", reason="auth"
            )
        _call_with_deadline(self._probe, self.timeout, describe=self.name, classify=self._classify)

    def _probe(self) -> None:
        """The request :meth:`check` makes; raises the client's own errors (classified by the caller)."""
        from huggingface_hub import HfApi, get_session
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import hf_raise_for_status

        if not self.base_url:
            HfApi().whoami(token=self._secrets[0])
            return
        headers = {"authorization": f"Bearer {self._secrets[0]}"} if self._secrets else {}
        response = get_session().get(self.base_url.rstrip("/") + "/models", headers=headers)
        try:
            hf_raise_for_status(response)
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", 0) or 0
            if status in (401, 403) or status >= 500:
                raise

    # ------------------------------------------------------------------------------------------------------------
    def _attempt(
        self, messages: list[dict[str, str]], *, n: int = 1, extra: int = 0, timeout: float | None = None
    ) -> Completion:
        kwargs = self._sampling_kwargs(n=n, extra=extra)
        if self.base_url:
            kwargs["model"] = self.model
        output = _call_with_deadline(
            lambda: self._client.chat_completion(messages, **kwargs),
            self.timeout if timeout is None else timeout,
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
            return http_status_error(self.name, status, detail, retry_after)
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
