"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted replies, injectable faults, recorded requests.

Importable without pytest (the trainer, CLI and multi-process tests use it too). Stdlib only. ``tests`` is a package,
so with the repository root on ``sys.path`` (pytest's default here; ``sys.path.insert(0, repo_root)`` in a spawned
process) it is ``from tests.loopback_openai import ...``.

Usage::

    from tests.loopback_openai import LoopbackOpenAIServer, chat_reply, error_reply, delay_reply

    with LoopbackOpenAIServer() as server:              # starts on an ephemeral port, stops on exit
        server.base_url                                  # "http://127.0.0.1:<port>/v1"
        server.enqueue(error_reply(429, retry_after=0.1), chat_reply("1. Classify the review"))
        ...  # point OpenAIMentor(base_url=server.base_url, api_key="x") or any OpenAI client at it
        server.requests                                  # list[RecordedRequest], in arrival order (a copy)
        server.request_count                             # number of chat-completion requests received

Replies (``ScriptedReply``) are consumed from the queue in order; when it is empty the *reply function* answers
(``server.set_reply(fn)`` with ``fn(request: RecordedRequest) -> ScriptedReply | str | list[str]``; a str or a
list of str becomes a chat completion with one choice per string). The default reply function returns
``DEFAULT_REPLY_TEXT`` for every request.

Reply builders (all return ``ScriptedReply``):
    chat_reply(text | [texts], model=..., prompt_tokens=..., completion_tokens=..., request_id=...)
    error_reply(status, message="...", retry_after=None, headers=None)   # 429, 500, 503, 401...
    delay_reply(seconds, then=None)          # sleep before answering (a time-out for a client with a short timeout)
    non_json_reply(body="<html>...")          # 200 with a body that is not JSON
    json_reply(obj, status=200)               # any JSON, e.g. json_reply({"id": "x"}) has no choices
    empty_message_reply()                     # a choice whose message content is ""
    huge_reply(megabytes=5)                   # a valid completion whose content is several megabytes
    trickle_reply(seconds_per_chunk, chunks)  # headers at once, then the body a few bytes at a time
    disconnect_reply()                        # close the socket without any response

``n`` (choices per request): with ``LoopbackOpenAIServer(n="honour")`` (the default) a request for ``n`` choices
calls the reply function ``n`` times, one choice each (a function returning a list answers once, with its list);
``n="ignore"`` answers one choice whatever ``n`` is, as servers without ``n`` do; ``n="refuse"`` answers HTTP 400 to
any ``n`` above 1. Queued replies are sent as they are.

``LoopbackOpenAIServer(api_key="k")`` answers HTTP 401 to any request (``/models`` included) that does not carry
``Authorization: Bearer k``. ``GET /api/whoami-v2`` answers as the Hub does for a valid token, so
``huggingface_hub`` with ``constants.ENDPOINT`` pointed at the server can check a token.

``unused_port()`` / ``refused_base_url()`` give an address where nothing listens (connection refused).
A pytest fixture is in ``tests/test_mentors_openai.py`` (``loopback``); copy its three lines to reuse it elsewhere::

    @pytest.fixture
    def loopback():
        with LoopbackOpenAIServer() as server:
            yield server
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "DEFAULT_REPLY_TEXT",
    "LoopbackOpenAIServer",
    "RecordedRequest",
    "ScriptedReply",
    "chat_completion_body",
    "chat_reply",
    "delay_reply",
    "disconnect_reply",
    "empty_message_reply",
    "error_reply",
    "huge_reply",
    "json_reply",
    "non_json_reply",
    "refused_base_url",
    "trickle_reply",
    "unused_port",
]

DEFAULT_REPLY_TEXT = (
    "1. Classify the sentiment of this review\n"
    "2. Is this movie review positive or negative?\n"
    "3. Label the review as positive or negative\n"
    "4. Decide the sentiment of the review"
)


@dataclass
class RecordedRequest:
    """One request the server received: method, path, headers (lower-case names), raw body and parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat-completion request ([] otherwise)."""
        return list((self.json or {}).get("messages") or []) if isinstance(self.json, dict) else []


@dataclass
class ScriptedReply:
    """What the server does for one request: optionally wait, then send status/headers/body (or drop the socket)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_size: int = 0
    disconnect: bool = False


def chat_completion_body(
    texts: str | Iterable[str],
    *,
    model: str = "loopback-model",
    prompt_tokens: int = 42,
    completion_tokens: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A chat.completion JSON object with one choice per text."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if completion_tokens is None:
        completion_tokens = sum(len(t.split()) for t in texts)
    return {
        "id": request_id or f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop", "logprobs": None}
            for i, t in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_reply(texts: str | Iterable[str] = DEFAULT_REPLY_TEXT, **kwargs: Any) -> ScriptedReply:
    """A successful chat completion (see :func:`chat_completion_body` for keyword arguments)."""
    body = chat_completion_body(texts, **kwargs)
    return ScriptedReply(body=json.dumps(body).encode(), headers={"x-request-id": f"req_{body['id']}"})


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> ScriptedReply:
    """Any JSON body, e.g. ``json_reply({"id": "x", "object": "chat.completion"})`` (no choices)."""
    return ScriptedReply(status=status, body=json.dumps(obj).encode(), headers=dict(headers or {}))


def error_reply(
    status: int,
    message: str = "injected fault",
    *,
    retry_after: float | str | None = None,
    headers: dict[str, str] | None = None,
) -> ScriptedReply:
    """An OpenAI-style error response; ``retry_after`` sets the ``Retry-After`` header (seconds or HTTP date)."""
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = str(retry_after)
    body = {"error": {"message": message, "type": "injected", "code": status}}
    return ScriptedReply(status=status, body=json.dumps(body).encode(), headers=hdrs)


def delay_reply(seconds: float, then: ScriptedReply | None = None) -> ScriptedReply:
    """Wait ``seconds`` before answering with ``then`` (default: a normal chat reply)."""
    reply = then if then is not None else chat_reply()
    return ScriptedReply(**{**reply.__dict__, "delay_s": seconds})


def non_json_reply(body: str = "<html><body>502 Bad Gateway</body></html>", status: int = 200) -> ScriptedReply:
    """A response whose body is not JSON (a proxy's HTML page, say)."""
    return ScriptedReply(status=status, body=body.encode(), content_type="text/html")


def empty_message_reply() -> ScriptedReply:
    """A completion whose only choice has empty content."""
    return chat_reply("")


def huge_reply(megabytes: float = 5.0) -> ScriptedReply:
    """A valid completion whose content is ``megabytes`` MB of text (one very long rambling reply)."""
    line = "1. Classify the sentiment of this review and then keep talking forever " * 10 + "\n"
    count = int(megabytes * 1_000_000 / len(line)) + 1
    return chat_reply(line * count)


def trickle_reply(
    seconds_per_chunk: float = 0.5, chunks: int = 1000, then: ScriptedReply | None = None
) -> ScriptedReply:
    """Headers at once, then the body a few bytes per ``seconds_per_chunk`` (defeats a per-read time-out)."""
    reply = then if then is not None else chat_reply()
    size = max(1, len(reply.body) // max(1, chunks))
    return ScriptedReply(**{**reply.__dict__, "chunk_delay_s": seconds_per_chunk, "chunk_size": size})


def disconnect_reply() -> ScriptedReply:
    """Close the connection without sending anything."""
    return ScriptedReply(disconnect=True)


def unused_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (bound then released; fine for a refused-connection test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_base_url() -> str:
    """An OpenAI-style base URL where the connection is refused."""
    return f"http://127.0.0.1:{unused_port()}/v1"


ReplyFunction = Callable[[RecordedRequest], "ScriptedReply | str | list[str]"]


class LoopbackOpenAIServer:
    """OpenAI chat-completions server on 127.0.0.1 in a background thread; a context manager (see module doc)."""

    def __init__(
        self,
        reply: ReplyFunction | str | list[str] | None = None,
        *,
        host: str = "127.0.0.1",
        n: str = "honour",
        api_key: str | None = None,
    ) -> None:
        if n not in ("honour", "ignore", "refuse"):
            raise ValueError(f"n must be 'honour', 'ignore' or 'refuse', not {n!r}")
        self._n_mode = n
        self.api_key = api_key  # set: any request without "Authorization: Bearer <api_key>" is answered HTTP 401
        self._host = host
        self._lock = threading.Lock()
        self._queue: deque[ScriptedReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._reply_fn: ReplyFunction = lambda request: DEFAULT_REPLY_TEXT
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if reply is not None:
            self.set_reply(reply)

    # -- scripting ------------------------------------------------------------------------------------------------
    def set_reply(self, reply: ReplyFunction | ScriptedReply | str | list[str]) -> None:
        """Answer every request (once the queue is empty) with ``reply``: a function, a ScriptedReply or text(s)."""
        if callable(reply):
            self._reply_fn = reply
        else:
            self._reply_fn = lambda request, _r=reply: _r  # type: ignore[misc]

    def enqueue(self, *replies: ScriptedReply | str | list[str]) -> None:
        """Queue replies (or faults) for the next requests, in order."""
        with self._lock:
            self._queue.extend(_as_reply(r) for r in replies)

    def clear(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many chat-completion requests were received."""
        with self._lock:
            return sum(1 for r in self._requests if r.path.rstrip("/").endswith("/chat/completions"))

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> LoopbackOpenAIServer:
        """Bind an ephemeral port and serve in a daemon thread."""
        server = self

        class Handler(_Handler):
            owner = server

        self._stopping.clear()
        self._httpd = _Server((self._host, 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes handlers that are sleeping in an injected delay."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LoopbackOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------------------------
    def _record_and_choose(self, request: RecordedRequest) -> ScriptedReply:
        with self._lock:
            self._requests.append(request)
            queued = self._queue.popleft() if self._queue else None
        if queued is not None:
            return queued
        asked = request.json.get("n", 1) if isinstance(request.json, dict) else 1
        asked = asked if isinstance(asked, int) and asked > 0 else 1
        if asked > 1 and self._n_mode == "refuse":
            return error_reply(400, "n: only 1 choice is supported by this server")
        try:
            first = self._reply_fn(request)
            if asked == 1 or self._n_mode == "ignore" or not isinstance(first, str):
                return _as_reply(first)
            return chat_reply([first, *(self._reply_fn(request) for _ in range(asked - 1))])
        except Exception as exc:  # a broken reply function shows up as a 500, not a hung client
            return error_reply(500, f"reply function raised {type(exc).__name__}: {exc}")


def _as_reply(reply: ScriptedReply | str | list[str]) -> ScriptedReply:
    if isinstance(reply, ScriptedReply):
        return reply
    return chat_reply(reply)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackOpenAIServer
    protocol_version = "HTTP/1.0"
    server_version = "LoopbackOpenAI/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access logs
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=parsed,
            received_at=time.time(),
        )
        key = self.owner.api_key
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            with self.owner._lock:
                self.owner._requests.append(request)
            self._send(error_reply(401, "Invalid API key"))
            return
        if self.command == "GET" and self.path.rstrip("/").endswith("/api/whoami-v2"):  # HF_ENDPOINT pointed here
            self._send(json_reply({"type": "user", "name": "loopback"}))
            return
        if self.command == "GET" and self.path.rstrip("/").endswith("/models"):
            self._send(json_reply({"object": "list", "data": [{"id": "loopback-model", "object": "model"}]}))
            return
        if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
            self._send(error_reply(404, f"no route {self.path}"))
            return
        reply = self.owner._record_and_choose(request)
        if reply.delay_s and self.owner._stopping.wait(reply.delay_s):
            return
        if reply.disconnect:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(reply)

    def _send(self, reply: ScriptedReply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if reply.chunk_delay_s and reply.chunk_size:
                for i in range(0, len(reply.body), reply.chunk_size):
                    self.wfile.write(reply.body[i : i + reply.chunk_size])
                    self.wfile.flush()
                    if self.owner._stopping.wait(reply.chunk_delay_s):
                        return
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (time-out): expected in fault tests

    do_POST = _handle
    do_GET = _handle


if __name__ == "__main__":  # manual smoke test: python tests/loopback_openai.py
    with LoopbackOpenAIServer() as srv:
        print("serving on", srv.base_url, "- Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
