"""The data API: probes, index, tickers, price series, single bars and bar writes.

Speed of ``GET /tickers/{symbol}/prices``: answers are kept encoded in a per-process LRU
keyed by the raw request, with the data versions they were built from. A WSGI
middleware in front of Flask serves a repeat after one Redis round trip that re-reads
those versions (``storage.versions``); any write or reload gives the symbol a new
version, so a stale answer is never served, in any worker. A miss goes through Flask:
resolve (one round trip), ``storage.read_series`` (one more), encode, remember.
Note: cache hits skip Flask's before/after_request hooks; add cross-cutting concerns
(metrics, rate limits) as WSGI middleware outside this one.

Writes (PUT/DELETE of one bar) live on a blueprint whose ``before_request`` checks the
API key, so a caller without a key gets 401/403 before its body is even validated. A
body that breaks the bar rules is a 400 (like every invalid input here, not 422).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import orjson
import redis
from flask import Response, redirect, request
from flask_openapi3 import APIBlueprint, OpenAPI, Tag

from stocks import storage
from stocks.api import auth
from stocks.api.errors import ApiError, error_response
from stocks.api.lru import LockedLRU
from stocks.api.models import (
    BarBody,
    BarPath,
    ErrorBody,
    IndexBody,
    OneBar,
    PriceSeries,
    PricesQuery,
    Status,
    SymbolPath,
    TickerDetail,
    TickerList,
    TickersQuery,
)
from stocks.api.respond import (
    CSV_MIMETYPE,
    JSON_MIMETYPE,
    csv_text,
    json_response,
    list_response,
    wants_csv,
)
from stocks.config import STOCKS_DB, env_int, redis_client
from stocks.resample import resample

TICKER_COLUMNS = ("symbol", "name", "sector", "first_date", "last_date", "rows")

tag_probe = Tag(name="probes", description="liveness and readiness")
tag_data = Tag(name="prices", description="tickers and daily prices")
tag_write = Tag(name="writes", description="add, replace or remove one bar (API key)")


def db() -> redis.Redis:
    return redis_client(STOCKS_DB)


ERRORS = {400: ErrorBody, 404: ErrorBody}
WRITE_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}


# --- encoded-answer cache --------------------------------------------------------------


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


cache = ResponseCache(env_int("STOCKS_API_CACHE_MB", 128) * 1024 * 1024)


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
    (and refills the cache) as usual. Only 200 answers of the price-series route are
    ever stored, so everything else always goes through Flask.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            entry = cache.get(request_key(environ))
            if entry is not None:
                symbols, versions, body, ctype = entry
                try:
                    current = tuple(storage.versions(db(), symbols).values())
                except redis.RedisError:
                    current = None
                if current == versions:
                    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                    start_response("200 OK", headers)
                    return [body]
        return self.wsgi_app(environ, start_response)


# --- symbols, dates and rows -----------------------------------------------------------


def resolve_versions(raw: str) -> tuple[str, dict[str, str | None]]:
    """(canonical symbol, version of every spelling tried) in one round trip, or a 404."""
    (symbol,), found = storage.resolve_symbols(db(), [raw])
    if symbol is not None:
        return symbol, found
    raise ApiError(404, "unknown_symbol", f"unknown symbol {raw!r}", symbol=raw)


def resolve(raw: str) -> str:
    """The canonical symbol for user input, or a 404 unknown_symbol."""
    return resolve_versions(raw)[0]


def read(symbol: str, start: dt.date | None, end: dt.date | None) -> tuple[dict, np.ndarray]:
    series = storage.read_series(db(), symbol, start, end)
    if series is None:  # deleted between resolve and read
        raise ApiError(404, "unknown_symbol", f"unknown symbol {symbol!r}", symbol=symbol)
    return series


def summary(symbol: str, meta: dict) -> dict:
    return {
        "symbol": symbol,
        "name": meta.get("name"),
        "sector": meta.get("sector"),
        "first_date": meta.get("first_date"),
        "last_date": meta.get("last_date"),
        "rows": meta.get("rows"),
    }


def one_bar(symbol: str, bar: np.ndarray) -> dict:
    row = storage.bar_dicts(bar)[0]
    return {"symbol": symbol, **row}


# --- routes ----------------------------------------------------------------------------


def health():
    return json_response({"status": "ok"})


def ready():
    try:
        count = storage.count_symbols(db())
    except redis.RedisError:
        return error_response(503, "redis_unavailable", "Redis does not answer")
    if count == 0:
        return error_response(503, "no_data", "no prices loaded yet", tickers=0)
    return json_response({"status": "ready", "tickers": count})


def index():
    r = db()
    metas = storage.get_metas(r, storage.list_symbols(r))
    sources = Counter(m.get("source") or "unknown" for m in metas.values())
    return json_response(
        {
            "name": "Stocks API",
            "tickers": len(metas),
            "sources": dict(sorted(sources.items())),
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "tickers": "/tickers",
                "health": "/health",
                "ready": "/ready",
            },
        }
    )


def list_tickers(query: TickersQuery):
    r = db()
    metas = storage.get_metas(r, storage.list_symbols(r))
    wanted = query.sector.strip().casefold() if query.sector is not None else None
    rows = [
        summary(sym, meta)
        for sym, meta in sorted(metas.items())
        if wanted is None or (meta.get("sector") or "").casefold() == wanted
    ]
    return list_response(
        {"count": len(rows), "tickers": rows}, "tickers", TICKER_COLUMNS, query.format
    )


def get_ticker(path: SymbolPath):
    symbol = resolve(path.symbol)
    meta = storage.get_meta(db(), symbol)
    if meta is None:
        raise ApiError(404, "unknown_symbol", f"unknown symbol {path.symbol!r}")
    last = dt.date.fromisoformat(meta["last_date"])
    _, bars = read(symbol, last, last)
    body = summary(symbol, meta)
    body["latest"] = one_bar(symbol, bars[-1:])
    del body["latest"]["symbol"]
    body["source"] = meta.get("source")
    body["loaded_at"] = meta.get("loaded_at")
    return json_response(body)


def get_prices(path: SymbolPath, query: PricesQuery):
    symbol, found = resolve_versions(path.symbol)
    fields = query.field_list()
    meta, bars = read(symbol, query.start, query.end)
    bars = resample(bars, query.interval)
    columns = storage.columns_for(bars, fields)
    rows = storage.bar_dicts(bars, columns)
    if wants_csv(query.format):
        resp = Response(csv_text(rows, ("date", *columns)), mimetype=CSV_MIMETYPE)
    else:
        payload = {"symbol": symbol, "interval": query.interval, "count": len(rows), "prices": rows}
        resp = Response(orjson.dumps(payload), mimetype=JSON_MIMETYPE)
    # The version read together with the bars, so a write in between cannot be masked.
    found[symbol] = meta.get("version")
    cache.put(
        request_key(request.environ),
        tuple(found),
        tuple(found.values()),
        resp.get_data(),
        resp.headers["Content-Type"],
    )
    return resp


def get_bar(path: BarPath):
    symbol = resolve(path.symbol)
    _, bars = read(symbol, path.date, path.date)
    if len(bars):
        return json_response(one_bar(symbol, bars))
    _, everything = read(symbol, None, None)
    day = storage.to_day(path.date)
    pos = int(np.searchsorted(everything["date"], day))
    before = storage.days_to_iso(everything["date"][pos - 1 : pos]) if pos > 0 else [None]
    after = (
        storage.days_to_iso(everything["date"][pos : pos + 1]) if pos < len(everything) else [None]
    )
    raise ApiError(
        404,
        "no_trading_day",
        f"{symbol} has no bar on {path.date.isoformat()}",
        symbol=symbol,
        date=path.date.isoformat(),
        previous=before[0],
        next=after[0],
    )


def put_bar(path: BarPath, body: BarBody):
    symbol = resolve(path.symbol)
    bar = np.array([(storage.to_day(path.date), *body.as_row())], dtype=storage.BAR_DTYPE)
    result = storage.upsert_bar(db(), symbol, bar)
    if result is None:
        raise ApiError(404, "unknown_symbol", f"unknown symbol {path.symbol!r}")
    _, created = result
    return json_response(one_bar(symbol, bar), status=201 if created else 200)


def delete_bar(path: BarPath):
    symbol = resolve(path.symbol)
    result = storage.delete_bar(db(), symbol, path.date)
    if result is None:
        raise ApiError(404, "unknown_symbol", f"unknown symbol {path.symbol!r}")
    if not result[1]:
        raise ApiError(
            404, "no_bar", f"{symbol} has no bar on {path.date.isoformat()}", symbol=symbol
        )
    return Response(status=204)


def _openapi_json(app: OpenAPI):
    """The generated OpenAPI document, built once (routes do not change after start)."""
    body: list[bytes] = []

    def view():
        if not body:
            body.append(orjson.dumps(app.api_doc))
        return Response(body[0], mimetype=JSON_MIMETYPE)

    return view


def docs_redirect():
    """/docs opens the Swagger UI; its JS and CSS come from the app (/docs/swagger/...)."""
    return redirect("/docs/swagger", code=302)


def _redis_down(e: redis.RedisError) -> Response:
    return error_response(503, "redis_unavailable", "the data store does not answer")


def _write_busy(e: storage.WriteContention) -> Response:
    resp = error_response(503, "busy", str(e))
    resp.headers["Retry-After"] = "1"
    return resp


def register(app: OpenAPI) -> None:
    app.wsgi_app = CachedAnswers(app.wsgi_app)
    storage.days_to_iso(np.zeros(1, dtype=np.int32))  # build the date table before gunicorn forks
    app.security_schemes = {**(app.security_schemes or {}), **auth.SECURITY_SCHEME}
    app.register_error_handler(redis.RedisError, _redis_down)
    app.register_error_handler(storage.WriteContention, _write_busy)
    app.add_url_rule("/openapi.json", "openapi_json", _openapi_json(app), methods=["GET"])
    app.add_url_rule("/docs", "docs_page", docs_redirect, methods=["GET"])

    # The write blueprint goes first: flask-openapi3 replaces a blueprint's whole path item
    # in the document, which would drop a GET registered earlier on the same path.
    writes = APIBlueprint("price_writes", __name__, abp_security=auth.SECURITY)
    writes.before_request(auth.require_write_key)
    writes.put(
        "/tickers/<symbol>/prices/<date>",
        tags=[tag_write],
        responses={200: OneBar, 201: OneBar, **WRITE_ERRORS},
    )(put_bar)
    writes.delete(
        "/tickers/<symbol>/prices/<date>",
        tags=[tag_write],
        responses={204: None, **WRITE_ERRORS},
    )(delete_bar)
    app.register_api(writes)

    app.get("/health", tags=[tag_probe], responses={200: Status})(health)
    app.get("/ready", tags=[tag_probe], responses={200: Status, 503: ErrorBody})(ready)
    app.get("/", tags=[tag_data], summary="API index and data sources", responses={200: IndexBody})(
        index
    )
    app.get("/tickers", tags=[tag_data], responses={200: TickerList, **ERRORS})(list_tickers)
    app.get("/tickers/<symbol>", tags=[tag_data], responses={200: TickerDetail, **ERRORS})(
        get_ticker
    )
    app.get(
        "/tickers/<symbol>/prices",
        tags=[tag_data],
        summary="daily, weekly or monthly bars, JSON or CSV",
        responses={200: PriceSeries, **ERRORS},
    )(get_prices)
    app.get("/tickers/<symbol>/prices/<date>", tags=[tag_data], responses={200: OneBar, **ERRORS})(
        get_bar
    )
