"""The price routes: tickers, price series, single bars and bar writes.

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

from stocks import storage
from stocks.api import auth, context
from stocks.api.answer_cache import remember
from stocks.api.docs import TAG_PRICES, TAG_WRITES, plain_operation_id
from stocks.api.errors import ApiError, unknown_symbol
from stocks.api.models import (
    BarBody,
    BarPath,
    ErrorBody,
    NewBarPath,
    OneBar,
    PriceSeries,
    PricesQuery,
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
from stocks.resample import resample

TICKER_COLUMNS = ("symbol", "name", "sector", "first_date", "last_date", "rows")


def db() -> redis.Redis:
    return context.prices_db()


ERRORS = {400: ErrorBody, 404: ErrorBody, 429: ErrorBody}  # 429: fair use (limits.py)
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


@bp.get("/tickers", tags=[TAG_PRICES], responses={200: TickerList, **ERRORS})
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


@bp.get("/tickers/<symbol>", tags=[TAG_PRICES], responses={200: TickerDetail, **ERRORS})
def get_ticker(path: SymbolPath):
    symbol = resolve(path.symbol)
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
    return json_response(body)


@bp.get(
    "/tickers/<symbol>/prices",
    tags=[TAG_PRICES],
    summary="daily, weekly or monthly bars, JSON or CSV",
    responses={200: PriceSeries, **ERRORS},
)
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
    return remember(resp, found)


@bp.get("/tickers/<symbol>/prices/<date>", tags=[TAG_PRICES], responses={200: OneBar, **ERRORS})
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
