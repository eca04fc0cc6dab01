"""The worker's small HTTP port: ``GET /health`` for Kubernetes probes and Docker's HEALTHCHECK,
and ``GET /metrics`` for Prometheus (``metrics_route``: the job counters and histograms of
every worker process of this ``stocks worker``, summed).

Why a port and not an exec probe: an exec probe starts a Python interpreter every few seconds
in a pod whose CPU is for charts, and the same port serves ``/metrics``: ``routes`` takes
more paths.

Healthy means the process proved it is alive recently: ``last_beat()`` (a ``time.monotonic()``
value, comparable across processes on Linux) is at most ``limit`` seconds old. The worker feeds
it from heartbeats that reached Redis, held back to the start of a chart still drawing (see
``Liveness``), so a worker that lost Redis or is stuck in a render answers 503 and is restarted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, MutableSequence, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry

from stocks import metrics

log = logging.getLogger(__name__)


# path -> (status, content type, body)
Route = Callable[[], tuple[int, str, bytes]]


class Liveness:
    """When this process last proved alive: ``beat()`` on each heartbeat that reached Redis;
    ``busy()``/``idle()`` around each job, so that a job running for long holds the time back
    to its start although the heartbeat thread goes on beating.

    ``slots`` (two floats) may be a ``multiprocessing.Array``: then a supervisor reads what
    its worker processes write.
    """

    def __init__(self, slots: MutableSequence[float] | None = None) -> None:
        self.slots = slots if slots is not None else [0.0, 0.0]
        self.slots[0] = time.monotonic()  # last beat
        self.slots[1] = 0.0  # start of the job running now; 0: none

    def beat(self) -> None:
        self.slots[0] = time.monotonic()

    def busy(self) -> None:
        self.slots[1] = time.monotonic()

    def idle(self) -> None:
        self.slots[1] = 0.0

    def last(self) -> float:
        return last_beat(self.slots)


def last_beat(slots: Sequence[float]) -> float:
    """What ``Liveness.last`` says of the process writing ``slots`` (read without resetting)."""
    beat, busy_since = slots[0], slots[1]
    return min(beat, busy_since) if busy_since else beat


def health_route(last_beat: Callable[[], float], limit: float) -> Route:
    """200 while ``last_beat()`` is at most ``limit`` s old, else 503; the age in the body."""

    def route() -> tuple[int, str, bytes]:
        age = time.monotonic() - last_beat()
        healthy = age <= limit
        body = {"status": "ok" if healthy else "stale", "age": round(age, 3), "limit": limit}
        return (200 if healthy else 503), "application/json", json.dumps(body).encode()

    return route


def metrics_route(registry: CollectorRegistry) -> Route:
    """Prometheus text of ``registry`` (text format 0.0.4, one charset)."""

    def route() -> tuple[int, str, bytes]:
        body, content_type = metrics.exposition(registry, None)
        return 200, content_type, body

    return route


def _handler(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                status, ctype, body = 404, "application/json", b'{"status": "not found"}'
            else:
                status, ctype, body = route()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # a probe every few seconds is not news

    return Handler


def start_health_server(
    port: int,
    last_beat: Callable[[], float],
    limit: float,
    host: str = "0.0.0.0",
    routes: dict[str, Route] | None = None,
) -> ThreadingHTTPServer:
    """Serve ``/health`` (and ``routes``) from a daemon thread; ``.shutdown()`` stops it.

    Port 0 picks a free port (``server.server_address[1]``).
    """
    server = ThreadingHTTPServer(
        (host, port), _handler({"/health": health_route(last_beat, limit), **(routes or {})})
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health on http://%s:%s/health", host, server.server_address[1],
             extra={"paths": sorted(["/health", *(routes or {})])})  # fmt: skip
    return server
