"""An RSGI front for a WSGI app: a request gets a thread only once it has fully arrived.

granian's own WSGI mode hands a request to a thread as soon as its headers are in, and
the thread then blocks reading the body: ten POSTs whose body never comes hold ten
threads. Here granian's event loop reads the body (bounded in size, with a deadline) and
only a complete request is run in the thread pool; the app's answer is collected in the
thread and written back by granian's Rust side, so a client that reads slowly holds no
thread either. Headers are read by granian under its header-read timeout.

A request the app can answer at once (``answer_now``: a cached answer whose data
versions are known without asking Redis) is answered by the event loop itself: no thread,
no hop, which under load cost as much as the answer; it cannot block the loop, as it
waits on nothing.

Refused here before any thread is used, in the API's JSON error shape: a request line or
a header over ``max_line`` bytes (414, 431), too many headers (431), a body over
``max_body`` (413), a body that does not arrive within ``body_timeout`` (408). A request
still running after ``request_timeout`` answers 503 (its thread finishes in the
background: Python threads cannot be killed).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stocks.api.errors import error_body, http_error_code

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
Answer = tuple[int, list[tuple[str, str]], bytes]
# The app's answer to a request when it has one at hand (status line, headers, body): a
# cache hit that needs no I/O, given on the event loop itself.
AnswerNow = Callable[[dict], tuple[str, list[tuple[str, str]], bytes] | None]


@dataclass(frozen=True)
class Limits:
    threads: int = 4
    body_timeout: float = 10.0
    request_timeout: float = 30.0
    max_body: int = 64 * 1024
    max_line: int = 8190  # gunicorn's limits: request line and each header
    max_headers: int = 100


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.answer = json_answer(status, code or http_error_code(status), message, close=True)


def json_answer(status: int, code: str, message: str, close: bool = False) -> Answer:
    headers = [("content-type", "application/json")]
    if close:
        headers.append(("connection", "close"))
    return status, headers, error_body(status, code, message)


class BufferedWsgi:
    """RSGI application (``__rsgi__``) serving ``app`` from a per-worker thread pool."""

    def __init__(
        self, app: WsgiApp, limits: Limits | None = None, answer_now: AnswerNow | None = None
    ):
        self.app = app
        self.limits = limits or Limits()
        self.answer_now = answer_now
        self.pool: ThreadPoolExecutor | None = None
        self.base_environ = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }

    def __rsgi_init__(self, loop) -> None:
        self.pool = ThreadPoolExecutor(self.limits.threads, thread_name_prefix="wsgi")

    def __rsgi_del__(self, loop) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    async def __rsgi__(self, scope, protocol) -> None:
        if scope.proto != "http":
            return
        try:
            headers = self.checked_headers(scope)
            body = await self.read_body(protocol, headers)
        except Refused as refused:
            protocol.response_bytes(*refused.answer)
            return
        environ = self.environ(scope, headers, body)
        if self.answer_now is not None and not body:
            ready = self.ready_answer(environ)
            if ready is not None:
                protocol.response_bytes(*ready)
                return
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                answer = await asyncio.wrap_future(self.pool.submit(self.call, environ))
        except TimeoutError:
            log.warning(
                "%s %s still running after %.0f s",
                scope.method,
                scope.path,
                self.limits.request_timeout,
            )
            message = f"the request took longer than {self.limits.request_timeout:g} s"
            answer = json_answer(503, "timeout", message)
        protocol.response_bytes(*answer)

    def ready_answer(self, environ: dict) -> Answer | None:
        """The app's answer at hand, if any: no thread, no hop (half a cached answer's cost
        under load was the hop). A failure here only sends the request the usual way."""
        try:
            ready = self.answer_now(environ)
        except Exception:
            log.exception("answering from the event loop failed: the request goes to a thread")
            return None
        if ready is None:
            return None
        status_line, headers, body = ready
        return int(status_line[:3]), headers, body

    def checked_headers(self, scope) -> list[tuple[str, str]]:
        limits = self.limits
        if len(scope.path) + len(scope.query_string) + 1 > limits.max_line:
            raise Refused(414, f"request line longer than {limits.max_line} bytes")
        headers = scope.headers.items()
        if len(headers) > limits.max_headers:
            raise Refused(431, f"more than {limits.max_headers} headers")
        for name, value in headers:
            if len(name) + len(value) + 2 > limits.max_line:
                raise Refused(431, f"header {name[:40]} longer than {limits.max_line} bytes")
        return headers

    async def read_body(self, protocol, headers: list[tuple[str, str]]) -> bytes:
        """The whole body, read on the event loop: no thread waits for a slow sender."""
        length = chunked = None
        for name, value in headers:
            if name == "content-length":
                length = int(value)  # granian has already refused a malformed length
            elif name == "transfer-encoding":
                chunked = True
        if not length and not chunked:
            return b""
        limits = self.limits
        if length and length > limits.max_body:
            raise Refused(413, f"request body larger than {limits.max_body} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(limits.body_timeout):
                async for chunk in protocol:
                    size += len(chunk)
                    if size > limits.max_body:
                        raise Refused(413, f"request body larger than {limits.max_body} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            message = f"request body not received within {limits.body_timeout:g} s"
            raise Refused(408, message, "request_timeout") from None
        return b"".join(chunks)

    def environ(self, scope, headers: list[tuple[str, str]], body: bytes) -> dict:
        server_host, _, server_port = scope.server.rpartition(":")
        client_host, _, client_port = scope.client.rpartition(":")
        environ = {
            **self.base_environ,
            "REQUEST_METHOD": scope.method,
            # WSGI wants the path's bytes as latin-1 text; granian gives it decoded as UTF-8
            "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": client_host.strip("[]"),
            "REMOTE_PORT": client_port,
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)) if body else "",
        }
        for name, value in headers:
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name in ("content-length", "transfer-encoding"):
                continue
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def call(self, environ: dict) -> Answer:
        """Run the app in a pool thread; its whole answer is collected here."""
        started: list = []

        def start_response(status: str, headers: list, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [int(status[:3]), headers]
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            log.exception("unhandled error in the WSGI app")
            return json_answer(500, "internal_error", "internal error")
        status, headers = started
        return status, headers, b"".join(chunks)
