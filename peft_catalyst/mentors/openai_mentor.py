"""Mentor on the official ``openai`` client's chat completions: OpenAI, or any compatible server by ``base_url``
(vLLM, Ollama, llama.cpp server, LM Studio...).

Faults end in bounded time: the client's own retries are off and ours honour ``Retry-After`` up to a cap; each
attempt has a short time-out (not the client's 10 minutes), also while the body is read, and a size cap, so a
server that trickles bytes or sends megabytes cannot hold training. The key never reaches a message, a log line
or the cache: errors are scrubbed of it before they are chained.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from .base import Completion, MentorError, parse_retry_after, redact_url
from .base import scrub_exception as _scrub_exception
from .base import scrub_secrets as _scrub
from .remote import ChatOptions, RemoteChatMentor, http_status_error

logger = logging.getLogger(__name__)

__all__ = ["OpenAIMentor"]

_NO_KEY_PLACEHOLDER = "EMPTY"  # what vLLM and friends expect when they need no key


class OpenAIMentor(RemoteChatMentor):
    """Mentor on an OpenAI(-compatible) chat-completions endpoint.

    Args:
        model: the model name, e.g. ``"gpt-4o-mini"`` or whatever the compatible server serves.
        base_url: server URL ending in ``/v1``; default ``$OPENAI_BASE_URL``, else OpenAI.
        api_key: default ``$OPENAI_API_KEY``; may be omitted for a custom ``base_url`` that needs none.
        options: the settings server mentors share (:class:`ChatOptions`: sampling, time-out and retries, seed,
            meta-prompt, name); its fields may also be given as keywords (``temperature=0.2``), which win.
        max_response_bytes: a larger body is a ``MentorError`` (``response_too_large``).
        token_limit_param: ``"max_tokens"``, or ``"max_completion_tokens"`` for OpenAI reasoning models.
        extra_body: extra JSON fields for the request (server-specific options).
    """

    backend = "openai"
    name_prefix = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        options: ChatOptions | None = None,
        max_response_bytes: int = 2_000_000,
        token_limit_param: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model, ChatOptions.of(options, settings, type(self).__name__))
        import openai

        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None:
            if base_url is None:
                raise MentorError(
                    "No API key: pass api_key=... or set OPENAI_API_KEY (or give base_url= for a server without keys)",
                    reason="config",
                )
            key = _NO_KEY_PLACEHOLDER
        self._secrets = [key] if key != _NO_KEY_PLACEHOLDER else []
        self.base_url = base_url
        self.max_response_bytes = int(max_response_bytes)
        self.token_limit_param = token_limit_param
        self.extra_body = dict(extra_body or {})
        try:
            self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=self.timeout, max_retries=0)
        except Exception as exc:
            _scrub_exception(exc, self._secrets)
            raise MentorError(
                f"cannot create the OpenAI client: {_scrub(str(exc), self._secrets)}", reason="config"
            ) from exc

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIMentor(model={self.model!r}, base_url={redact_url(self.base_url)!r})"

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _identity_params(self) -> dict[str, Any]:
        """The sampling parameters and any ``extra_body`` (no key, no URL)."""
        params = super()._identity_params()
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    def check(self) -> None:
        """List the server's models (free, no tokens): a refused connection, a time-out or a rejected key raise.

        A server that answers but has no ``/models`` route (some compatible servers) counts as reachable.
        """
        import openai

        try:
            self._client.models.list()
        except openai.NotFoundError:
            return
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403) or exc.status_code >= 500:
                raise self._status_error(exc) from _scrubbed(exc, self._secrets)
        except openai.APITimeoutError as exc:
            raise MentorError(f"{self.name}: no answer within {self.timeout:.0f} s", reason="timeout") from exc
        except openai.APIConnectionError as exc:
            raise MentorError(
                f"{self.name}: cannot reach {redact_url(str(self._client.base_url))}", reason="connection"
            ) from _scrubbed(exc, self._secrets)

    # ------------------------------------------------------------------------------------------------------------
    def _request_params(self, messages: list[dict[str, str]], *, n: int = 1, extra: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            **self._sampling_kwargs(self.token_limit_param, n=n, extra=extra),
        }
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    def _attempt(
        self, messages: list[dict[str, str]], *, n: int = 1, extra: int = 0, timeout: float | None = None
    ) -> Completion:
        import openai

        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        client = self._client if timeout == self.timeout else self._client.with_options(timeout=timeout)
        try:
            with client.chat.completions.with_streaming_response.create(
                **self._request_params(messages, n=n, extra=extra)
            ) as response:
                request_id = response.request_id
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise MentorError(
                        f"{self.name}: reply of {int(declared)} bytes exceeds max_response_bytes="
                        f"{self.max_response_bytes}",
                        reason="response_too_large",
                    )
                body = self._read_body(response, deadline)
        except MentorError:
            raise
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from _scrubbed(exc, self._secrets)
        except openai.APITimeoutError as exc:
            raise MentorError(f"{self.name}: no reply within {timeout:.0f} s", reason="timeout") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise MentorError(
                f"{self.name}: cannot reach {redact_url(str(self._client.base_url))}: "
                f"{_scrub(type(cause).__name__ + ': ' + str(cause), self._secrets)}",
                reason="connection",
            ) from _scrubbed(exc, self._secrets)
        except openai.OpenAIError as exc:
            raise MentorError(f"{self.name}: {_scrub(str(exc), self._secrets)}", reason="error") from _scrubbed(
                exc, self._secrets
            )
        except Exception as exc:  # transport errors raised while the body streams in
            reason = "timeout" if "timeout" in type(exc).__name__.lower() else "connection"
            raise MentorError(
                f"{self.name}: {type(exc).__name__} while reading the reply", reason=reason
            ) from _scrubbed(exc, self._secrets)
        return self._parse_body(body, request_id)

    def _read_body(self, response: Any, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise MentorError(
                    f"{self.name}: reply exceeds max_response_bytes={self.max_response_bytes}",
                    reason="response_too_large",
                )
            if time.monotonic() > deadline:
                raise MentorError(f"{self.name}: reply not complete within {self.timeout:.0f} s", reason="timeout")
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(self, exc: Any) -> MentorError:
        status = getattr(exc, "status_code", None) or 0
        headers = getattr(getattr(exc, "response", None), "headers", {}) or {}
        retry_after = parse_retry_after(headers.get("retry-after"))
        ms = headers.get("retry-after-ms")
        if ms is not None:
            try:
                retry_after = float(ms) / 1000
            except ValueError:
                pass
        return http_status_error(self.name, status, _scrub(_error_detail(exc), self._secrets), retry_after)

    def _parse_body(self, body: bytes, request_id: str | None) -> Completion:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            start = _scrub(repr(body[:60]), self._secrets)
            raise MentorError(
                f"{self.name}: reply is not JSON ({len(body)} bytes starting {start})", reason="bad_response"
            ) from exc
        if not isinstance(data, dict):
            raise MentorError(
                f"{self.name}: reply JSON is a {type(data).__name__}, not an object", reason="bad_response"
            )
        if "error" in data and not data.get("choices"):
            detail = _scrub(json.dumps(data["error"])[:300], self._secrets)
            raise MentorError(f"{self.name}: server returned an error: {detail}", reason="bad_response")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MentorError(f"{self.name}: reply has no choices", reason="bad_response")
        texts = [_choice_text(c) for c in choices]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Completion(
            texts=texts,
            model=str(data.get("model") or self.model),
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
            request_id=request_id or (str(data["id"]) if data.get("id") else None),
        )


def _choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    message = choice.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        content = choice.get("text")  # legacy completions shape, some servers
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(exc, "message", "") or exc)[:300]


def _scrubbed(exc: BaseException, secrets: list[str]) -> BaseException:
    _scrub_exception(exc, secrets)
    return exc
