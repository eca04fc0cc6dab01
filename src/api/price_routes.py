"""The price routes: tickers (with search), price series, single bars and bar writes.

Every read answer goes through ``remember``: it carries an ETag and ``Cache-Control:
no-cache``, and a repeat is served by the encoded-answer cache. The CSV forms also have
their own ``.csv`` routes (``/tickers.csv``, ``/tickers/{symbol}/prices.csv``) whose only
documented content type is text/csv, so a client generated from the OpenAPI document can
call them; ``format=csv`` and ``Accept: text/csv`` keep working on the JSON routes.

Speed of ``GET /tickers/{symbol}/prices``: a miss costs a resolve (one round trip),
``storage.read_series`` (one more) and the encoding; the answer then goes to the
encoded-answer cache (``stocks.api.answer_cache``), which serves a repeat before Flask
after re-reading the data versions it was built from.

Writes (PUT/DELETE of one bar) live on a nested blueprint whose ``before_request`` checks
the API key, so a caller without a key gets 401/403 before its body is even validated. A
body that breaks the bar rules is a 400 (like every invalid input here, not 422).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson
import redis
from flask import Response
from flask_openapi3 import APIBlueprint

from stocks import search, storage
from stocks.api import auth, context
from stocks.api.answer_cache import remember
from stocks.api.docs import TAG_PRICES, TAG_WRITES, plain_operation_id
from stocks.api.errors import ApiError, unknown_symbol
from stocks.api.models import (
    NOT_MODIFIED,
    BarBody,
    BarPath,
    ErrorBody,
    NewBarPath,
    OneBar,
    PriceSeries,
    PricesParams,
    PricesQuery,
    SymbolPath,
    TickerDetail,
    TickerList,
    TickersParams,
    TickersQuery,
)
from stocks.api.respond import (
    CSV_MIMETYPE,
    JSON_MIMETYPE,
    csv_text,
    json_and_csv_routes,
    json_response,
    list_response,
)
from stocks.constituents import describe
from stocks.resample import resample

TICKER_COLUMNS = ("symbol", "name", "sector", "first_date", "last_date", "rows")


def db() -> redis.Redis:
    return context.prices_db()


ERRORS = {400: ErrorBody, 404: ErrorBody, 429: ErrorBody}  # 429: fair use (limits.py)
READ_ERRORS = {**NOT_MODIFIED, **ERRORS}
WRITE_ERRORS = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}


# --- symbols, dates and rows -----------------------------------------------------------


def resolve_versions(raw: str) -> tuple[str, dict[str, str | None]]:
    """(canonical symbol, version of every spelling tried) in one round trip, or a 404."""
    (symbol,), found = storage.resolve_symbols(db(), [raw])
    if symbol is not None:
        return symbol, found
    raise unknown_symbol(raw)


def resolve(raw: str) -> str:
    """The canonical symbol for user input, or a 404 unknown_symbol."""
    return resolve_versions(raw)[0]


def read(symbol: str, start: dt.date | None, end: dt.date | None) -> tuple[dict, np.ndarray]:
    series = storage.read_series(db(), symbol, start, end)
    if series is None:  # deleted between resolve and read
        raise unknown_symbol(symbol)
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


# --- writes: one bar, behind the API key -----------------------------------------------

writes = APIBlueprint("price_writes", __name__, abp_security=auth.SECURITY)
writes.before_request(auth.require_write_key)


@writes.put(
    "/tickers/<symbol>/prices/<date>",
    tags=[TAG_WRITES],
    responses={200: OneBar, 201: OneBar, **WRITE_ERRORS},
)
def put_bar(path: NewBarPath, body: BarBody):
    symbol = resolve(path.symbol)
    bar = np.array([(storage.to_day(path.date), *body.as_row())], dtype=storage.BAR_DTYPE)
    result = storage.upsert_bar(db(), symbol, bar)
    if result is None:
        raise unknown_symbol(path.symbol)
    _, created = result
    return json_response(one_bar(symbol, bar), status=201 if created else 200)


@writes.delete(
    "/tickers/<symbol>/prices/<date>", tags=[TAG_WRITES], responses={204: None, **WRITE_ERRORS}
)
def delete_bar(path: BarPath):
    symbol = resolve(path.symbol)
    result = storage.delete_bar(db(), symbol, path.date)
    if result is None:
        raise unknown_symbol(path.symbol)
    if not result[1]:
        raise ApiError(
            404, "no_bar", f"{symbol} has no bar on {path.date.isoformat()}", symbol=symbol
        )
    return Response(status=204)


# --- reads -----------------------------------------------------------------------------

bp = APIBlueprint("prices", __name__, operation_id_callback=plain_operation_id)
# Nested before any read is declared: flask-openapi3 replaces a nested blueprint's whole
# path item in the document, which would drop the GET declared below on the same path.
bp.register_api(writes)


def tickers_answer(_path: None, query: TickersParams, csv: bool) -> Response:
    """Every stored ticker (by symbol), or the search matches best first; ``sector`` filters."""
    r = db()
    symbols = storage.list_symbols(r)
    metas = storage.get_metas(r, symbols)
    depends: dict[str, str | None] = {storage.ALL_SYMBOLS: storage.members_digest(symbols)}
    depends.update((sym, metas.get(sym, {}).get("version")) for sym in symbols)
    wanted = query.sector.strip().casefold() if query.sector is not None else None
    chosen = [
        sym
        for sym in sorted(metas)
        if wanted is None or (metas[sym].get("sector") or "").casefold() == wanted
    ]
    if query.q is not None:
        # A ticker stored without a name is still found by the published one.
        names = ((sym, metas[sym].get("name") or describe(sym)[0]) for sym in chosen)
        chosen = search.rank(query.q, names)
    rows = [summary(sym, metas[sym]) for sym in chosen]
    payload = {"count": len(rows), "tickers": rows}
    return remember(
        list_response(payload, "tickers", TICKER_COLUMNS, "csv" if csv else None), depends
    )


json_and_csv_routes(
    bp,
    "/tickers",
    "list_tickers",
    tickers_answer,
    query=TickersQuery,
    csv_query=TickersParams,
    model=TickerList,
    errors=READ_ERRORS,
    tags=[TAG_PRICES],
    summary="stored tickers, or a search by symbol and name",
)


@bp.get("/tickers/<symbol>", tags=[TAG_PRICES], responses={200: TickerDetail, **READ_ERRORS})
def get_ticker(path: SymbolPath):
    symbol, found = resolve_versions(path.symbol)
    meta = storage.get_meta(db(), symbol)
    if meta is None:
        raise unknown_symbol(path.symbol)
    last = dt.date.fromisoformat(meta["last_date"])
    _, bars = read(symbol, last, last)
    body = summary(symbol, meta)
    body["latest"] = one_bar(symbol, bars[-1:])
    del body["latest"]["symbol"]
    body["source"] = meta.get("source")
    body["loaded_at"] = meta.get("loaded_at")
    found[symbol] = meta.get("version")  # read first: a later write makes this stale
    return remember(json_response(body), found)


def prices_answer(path: SymbolPath, query: PricesParams, csv: bool) -> Response:
    symbol, found = resolve_versions(path.symbol)
    fields = query.field_list()
    meta, bars = read(symbol, query.start, query.end)
    bars = resample(bars, query.interval)
    available = len(bars)
    if query.limit is not None:
        bars = bars[-query.limit :]  # the latest bars of the range
    if query.order == "desc":
        bars = bars[::-1]
    limited = len(bars) < available
    columns = storage.columns_for(bars, fields)
    rows = storage.bar_dicts(bars, columns)
    headers = {"X-Limited": "true" if limited else "false", "X-Available": str(available)}
    if csv:
        resp = Response(csv_text(rows, ("date", *columns)), mimetype=CSV_MIMETYPE, headers=headers)
    else:
        payload = {
            "symbol": symbol,
            "interval": query.interval,
            "order": query.order,
            "count": len(rows),
            "available": available,
            "limited": limited,
            "prices": rows,
        }
        resp = Response(orjson.dumps(payload), mimetype=JSON_MIMETYPE, headers=headers)
    # The version read together with the bars, so a write in between cannot be masked.
    found[symbol] = meta.get("version")
    return remember(resp, found)


PRICES_DOC = (
    "Bars in [start, end] (both optional), grouped by interval. limit keeps the latest "
    "bars of that range (after grouping) and order lists them oldest (asc) or newest "
    "(desc) first: limit=5&order=desc is the last five bars, newest first. The answer "
    "says whether it was limited (limited, available; headers X-Limited, X-Available)."
)


json_and_csv_routes(
    bp,
    "/tickers/<symbol>/prices",
    "get_prices",
    prices_answer,
    path=SymbolPath,
    query=PricesQuery,
    csv_query=PricesParams,
    model=PriceSeries,
    errors=READ_ERRORS,
    tags=[TAG_PRICES],
    summary="daily, weekly, monthly, quarterly or yearly bars, JSON or CSV",
    description=PRICES_DOC,
)


@bp.get(
    "/tickers/<symbol>/prices/<date>", tags=[TAG_PRICES], responses={200: OneBar, **READ_ERRORS}
)
def get_bar(path: BarPath):
    symbol, found = resolve_versions(path.symbol)
    meta, bars = read(symbol, path.date, path.date)
    if len(bars):
        found[symbol] = meta.get("version")
        return remember(json_response(one_bar(symbol, bars)), found)
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
