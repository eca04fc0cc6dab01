"""Request ids, request log lines and request metrics: WSGI middleware around everything.

It wraps the answer cache's middleware too (``create_app`` adds it last), so a request the
cache answers before Flask is counted and logged like any other. Per request:
- a request id: the client's ``X-Request-ID`` when it is sane (1-64 of ``[A-Za-z0-9._:-]``),
  else a new one; echoed in the response and set in ``stocks.logs.REQUEST_ID`` while the
  request runs (``JobQueue.put`` stores it in the job record);
- one log line (logger ``stocks.request``): method, route template, status, duration in
  ms, request id, client address; probes (``/health``, ``/ready``, ``/metrics``) at debug;
- ``stocks_http_requests_total`` and ``stocks_http_request_duration_seconds`` by route
  template (bounded: unknown paths are ``<unmatched>``), answer-cache hits and misses.
Nothing from the request's headers but the id goes into a line (no Authorization).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from stocks import metrics
from stocks.api.answer_cache import OUTCOME_KEY as CACHE_OUTCOME
from stocks.api.answer_cache import Answer
from stocks.logs import REQUEST_ID

log = logging.getLogger("stocks.request")

HEADER = "X-Request-ID"
ENVIRON_KEY = "stocks.request_id"
PROBES = frozenset({"/health", "/ready", "/metrics"})
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
OTHER_METHOD = "OTHER"  # so that made-up methods cannot grow the label set
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(sent: str | None) -> str:
    """The client's id when it is safe to log and echo, else a new random one."""
    if sent and _SANE_ID.fullmatch(sent):
        return sent
    # a correlation id, not a secret: the random module's generator (reseeded in every
    # forked worker) instead of the OS's, which costs a system call per request
    return f"{random.getrandbits(128):032x}"


class RequestObserver:
    """WSGI middleware: id, log line and metrics for every request (see the module)."""

    def __init__(self, wsgi_app, url_map: Map, routes_kept: int = 4096):
        self.wsgi_app = wsgi_app
        self.url_map = url_map
        # a match costs ~10 us, a repeat a dict look-up (the routes don't depend on the host)
        self._route = functools.lru_cache(maxsize=routes_kept)(self._match)

    def _match(self, method: str, path: str) -> str:
        try:
            rule, _ = self.url_map.bind("localhost").match(path, method, return_rule=True)
        except HTTPException:
            return UNMATCHED
        return rule.rule

    def route(self, environ: dict) -> str:
        """The route template (``/tickers/<symbol>/prices``): a bounded label."""
        return self._route(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))

    def __call__(self, environ: dict, start_response):
        rid = self.start(environ)
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = [500]

        def respond(status_line: str, headers: list, exc_info=None):
            status[0] = int(status_line[:3])
            headers.append((HEADER, rid))
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, respond)
        finally:
            REQUEST_ID.reset(token)
            self.observe(environ, rid, status[0], time.perf_counter() - started)

    def answer_now(self, environ: dict) -> Answer | None:
        """``CachedAnswers.answer_now`` with this request's id, line and metrics."""
        started = time.perf_counter()
        hit = self.wsgi_app.answer_now(environ)
        if hit is None:
            return None
        rid = self.start(environ)
        status_line, headers, body = hit
        headers.append((HEADER, rid))
        self.observe(environ, rid, int(status_line[:3]), time.perf_counter() - started)
        return status_line, headers, body

    @staticmethod
    def start(environ: dict) -> str:
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = rid
        return rid

    def observe(self, environ: dict, rid: str, status: int, seconds: float) -> None:
        route = self.route(environ)
        method = environ.get("REQUEST_METHOD", "")
        fam = metrics.families()
        label = method if method in METHODS else OTHER_METHOD  # a client picks the method
        count, duration = fam.request(label, route, status)
        count.inc()
        duration.observe(seconds)
        outcome = environ.get(CACHE_OUTCOME)
        if outcome == "hit":
            fam.cache_hits.inc()
        elif outcome == "miss":
            fam.cache_misses.inc()
        path = environ.get("PATH_INFO", "")
        level = logging.DEBUG if path in PROBES else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "path": path[:200],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "request_id": rid,
                    "client": environ.get("REMOTE_ADDR", ""),
                    "cache": outcome or "",
                },
            )
