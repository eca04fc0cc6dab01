"""The encoded-answer cache: a repeated GET answered before Flask, after one version check.

Answers are kept encoded in a per-process LRU keyed by the raw request, with the data
versions they were built from. A WSGI middleware in front of Flask serves a repeat after
one Redis round trip that re-reads those versions (``storage.versions``); any write or
reload gives the symbol a new version, so a stale answer is never served, in any worker.
A miss goes through Flask, and the view calls ``remember`` with what its answer depends on.
Note: cache hits skip Flask's before/after_request hooks; add cross-cutting concerns
(metrics, rate limits) as WSGI middleware outside this one.
"""

from __future__ import annotations

import redis
from flask import Flask, Response, current_app, request

from stocks import storage
from stocks.api import context
from stocks.api.lru import LockedLRU

EXTENSION = "answer_cache"
OUTCOME_KEY = "stocks.answer_cache"  # environ: "hit" or "miss", for stocks.api.observe


class ResponseCache:
    """An LRU of encoded answers, bounded by the total size of their bodies.

    Key: the raw request (path, query string, Accept header). Value: the symbols the
    answer depends on (every stored spelling tried), their data versions when it was
    built, the body and its Content-Type. An entry is only served while a fresh read of
    those versions still matches, so writes and reloads show up at once in every process.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lru = LockedLRU(max_bytes, getsizeof=lambda item: len(item[2]))

    def get(self, key: tuple) -> tuple | None:
        return self._lru.get(key)

    def put(self, key: tuple, symbols: tuple, versions: tuple, body: bytes, ctype: str) -> None:
        if len(body) > self.max_bytes // 8:
            return
        self._lru.put(key, (symbols, versions, body, ctype))

    def clear(self) -> None:
        self._lru.clear()


def request_key(environ: dict) -> tuple:
    return (
        environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
        environ.get("HTTP_ACCEPT", ""),
    )


class CachedAnswers:
    """WSGI middleware: answer a repeated GET from ``cache`` after one version check.

    A hit costs one Redis round trip and no Flask dispatch, validation or encoding; a
    miss, a stale entry or any Redis trouble falls through to the app, which answers
    (and refills the cache) as usual. Only answers a view passed to ``remember`` are
    ever stored, so everything else always goes through Flask.
    """

    def __init__(self, wsgi_app, cache: ResponseCache, prices: redis.Redis):
        self.wsgi_app = wsgi_app
        self.cache = cache
        self.prices = prices

    def __call__(self, environ: dict, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            entry = self.cache.get(request_key(environ))
            if entry is not None:
                symbols, versions, body, ctype = entry
                try:
                    current = tuple(storage.versions(self.prices, symbols).values())
                except redis.RedisError:
                    current = None
                if current == versions:
                    environ[OUTCOME_KEY] = "hit"
                    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                    start_response("200 OK", headers)
                    return [body]
        return self.wsgi_app(environ, start_response)


def init_app(app: Flask, max_bytes: int) -> None:
    """Give ``app`` its cache (``app.extensions["answer_cache"]``) and the middleware."""
    cache = ResponseCache(max_bytes)
    app.extensions[EXTENSION] = cache
    app.wsgi_app = CachedAnswers(app.wsgi_app, cache, context.prices_db(app))


def answer_cache() -> ResponseCache:
    """The current app's cache."""
    return current_app.extensions[EXTENSION]


def remember(resp: Response, depends: dict[str, str | None]) -> Response:
    """Let the middleware serve this exact request again while ``depends`` is current.

    ``depends`` maps every stored symbol form the answer was built from (or tried) to its
    data version then; a changed version makes the entry stale, so a write is never masked.
    """
    request.environ[OUTCOME_KEY] = "miss"
    answer_cache().put(
        request_key(request.environ),
        tuple(depends),
        tuple(depends.values()),
        resp.get_data(),
        resp.headers["Content-Type"],
    )
    return resp
