"""The encoded-answer cache and conditional GETs: a repeat answered before Flask.

Answers are kept encoded in a per-process LRU keyed by the raw request, with the data
versions they were built from. A WSGI middleware in front of Flask serves a repeat while
those versions are still current (``stocks.version_watch``: known from Redis's change
notices, or re-read by a round trip when the watch is not trusted); any write or reload
gives the symbol a new version, so a stale answer is never served, in any worker. A miss
goes through Flask, and the view calls ``remember`` with what its answer depends on.

ETags: the tag of an answer is a digest of the request (path, query, Accept) and the
versions it depends on, so it changes the moment a write or load changes one of them,
and it is the same in every worker without being stored anywhere. Data answers carry
``Cache-Control: no-cache`` (keep it, but ask first): the data changes only on a load
or a write, and revalidating costs the client a 304 with no body. ``If-None-Match``
with the current tag answers 304, from the middleware on a cache hit or from
``remember`` otherwise.

Note: cache hits skip Flask's before/after_request hooks; add cross-cutting concerns
(metrics, rate limits) as WSGI middleware outside this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import redis
from flask import Flask, Response, current_app, request

from stocks.api import context
from stocks.api.hygiene import NOSNIFF
from stocks.api.lru import LockedLRU
from stocks.version_watch import VersionWatch

EXTENSION = "answer_cache"
CACHE_CONTROL = "no-cache"
# Headers of a data answer that matter to a client besides its type (they go with 304s).
KEPT_HEADERS = ("ETag", "Cache-Control", "Vary", "X-Limited", "X-Available")
OUTCOME_KEY = "stocks.answer_cache"  # environ: "hit" or "miss", for stocks.api.observe
Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body


class ResponseCache:
    """An LRU of encoded answers, bounded by the total size of their bodies.

    Key: the raw request (path, query string, Accept header). Value: the symbols the
    answer depends on (every stored spelling tried), their data versions when it was
    built, the body, its Content-Type and the other headers it was sent with. An entry
    is only served while a fresh read of those versions still matches, so writes and
    reloads show up at once in every process.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lru = LockedLRU(max_bytes, getsizeof=lambda item: len(item[2]))

    def get(self, key: tuple) -> tuple | None:
        return self._lru.get(key)

    def put(
        self,
        key: tuple,
        symbols: tuple,
        versions: tuple,
        body: bytes,
        ctype: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if len(body) > self.max_bytes // 8:
            return
        self._lru.put(key, (symbols, versions, body, ctype, headers))

    def clear(self) -> None:
        self._lru.clear()


def request_key(environ: dict) -> tuple:
    return (
        environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""),
        environ.get("HTTP_ACCEPT", ""),
    )


def entity_tag(key: tuple, depends: dict[str, str | None]) -> str:
    """The quoted ETag of the answer to ``key`` built from ``depends``."""
    h = hashlib.blake2b(digest_size=16)
    for part in key:
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    for name, version in depends.items():
        h.update(f"{name}={version}\0".encode())
    return f'"{h.hexdigest()}"'


def tag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` with our (strong) tag."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class CachedAnswers:
    """WSGI middleware: answer a repeated GET from ``cache`` after a version check.

    A hit costs no Flask dispatch, validation or encoding, and no Redis round trip while
    the version watch is trusted; a miss, a stale entry or any Redis trouble falls
    through to the app, which answers (and refills the cache) as usual. Only answers a
    view passed to ``remember`` are ever stored, so everything else goes through Flask.
    """

    def __init__(self, wsgi_app, cache: ResponseCache, versions: VersionWatch):
        self.wsgi_app = wsgi_app
        self.cache = cache
        self.versions = versions

    def __call__(self, environ: dict, start_response):
        try:
            hit = self.lookup(environ, self.versions.current)
        except redis.RedisError:
            hit = None
        if hit is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = hit
        start_response(status, headers)
        return [body]

    def answer_now(self, environ: dict) -> Answer | None:
        """The cached answer when it can be given without waiting on Redis (versions known
        to the watch): what an event loop may serve itself, with no thread."""
        return self.lookup(environ, self.versions.known)

    def lookup(self, environ: dict, versions: Callable[[tuple], tuple | None]) -> Answer | None:
        """The stored answer to this GET if ``versions`` of what it depends on still
        match; None for anything else."""
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        entry = self.cache.get(request_key(environ))
        if entry is None:
            return None
        symbols, built_from, body, ctype, headers = entry
        if versions(symbols) != built_from:
            return None
        environ[OUTCOME_KEY] = "hit"
        if tag_matches(environ.get("HTTP_IF_NONE_MATCH"), dict(headers).get("ETag", "")):
            return "304 Not Modified", [*headers, NOSNIFF], b""
        length = ("Content-Length", str(len(body)))
        return "200 OK", [("Content-Type", ctype), length, *headers, NOSNIFF], body


def init_app(app: Flask, max_bytes: int) -> None:
    """Give ``app`` its cache (``app.extensions["answer_cache"]``) and the middleware."""
    cache = ResponseCache(max_bytes)
    app.extensions[EXTENSION] = cache
    app.wsgi_app = CachedAnswers(app.wsgi_app, cache, VersionWatch(context.prices_db(app)))


def answer_cache() -> ResponseCache:
    """The current app's cache."""
    return current_app.extensions[EXTENSION]


def remember(resp: Response, depends: dict[str, str | None]) -> Response:
    """Tag this answer and let the middleware serve this exact request again while
    ``depends`` is current; a 304 instead when the client already has this tag.

    ``depends`` maps every stored symbol form the answer was built from (or tried) to its
    data version then (``storage.ALL_SYMBOLS``: the symbol set); a changed version makes
    the entry stale and changes the tag, so a write is never masked.
    """
    request.environ[OUTCOME_KEY] = "miss"
    key = request_key(request.environ)
    etag = entity_tag(key, depends)
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = CACHE_CONTROL
    resp.vary.add("Accept")
    headers = tuple((h, resp.headers[h]) for h in KEPT_HEADERS if h in resp.headers)
    answer_cache().put(
        key,
        tuple(depends),
        tuple(depends.values()),
        resp.get_data(),
        resp.headers["Content-Type"],
        headers,
    )
    if tag_matches(request.headers.get("If-None-Match"), etag):
        return Response(status=304, headers=list(headers))
    return resp
