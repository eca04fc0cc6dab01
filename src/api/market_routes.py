"""The market routes: every ticker's bar on one day, and the day's top movers.

Both read the whole market in two round trips (``storage.read_market``: the symbol set,
then one MULTI/EXEC pipeline of per-ticker HMGETs that fetch only the year chunks the
question needs), never one round trip per ticker. Answers depend on the symbol set and
every ticker's version, so they carry an ETag and are served again by the answer cache
until a load or write changes any of them.

Movers use ``stocks.analytics.change`` per ticker, the very function behind
``/tickers/{symbol}/change``, so a mover's figures equal that route's for the same
symbol, period and date.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from flask import Response
from flask_openapi3 import APIBlueprint

from stocks import analytics as calc
from stocks import storage
from stocks.api import context
from stocks.api.answer_cache import remember
from stocks.api.docs import TAG_MARKET, plain_operation_id
from stocks.api.errors import ApiError
from stocks.api.models import (
    NOT_MODIFIED,
    ErrorBody,
    FieldsQuery,
    MarketDay,
    MarketDayPath,
    MarketDayQuery,
    Movers,
    MoversParams,
)
from stocks.api.respond import json_and_csv_routes, json_response, list_response

ERRORS = {**NOT_MODIFIED, 400: ErrorBody, 404: ErrorBody}

bp = APIBlueprint("market", __name__, operation_id_callback=plain_operation_id)


# --- one day ---------------------------------------------------------------------------


def no_trading_day(day: dt.date) -> ApiError:
    """The 404 for a day no ticker traded, naming the market's nearest trading days.

    Looks one year either side (the error path may read more than the answer does), and
    past that uses the stored first and last days.
    """
    r = context.prices_db()
    market = storage.read_market(r, day.year - 1, day.year + 1, ("first_date", "last_date"))
    dates = np.unique(market.bars["date"])
    target = storage.to_day(day)
    pos = int(np.searchsorted(dates, target))
    before = storage.from_day(dates[pos - 1]).isoformat() if pos > 0 else None
    after = storage.from_day(dates[pos]).isoformat() if pos < len(dates) else None
    iso = day.isoformat()
    if before is None:
        before = max((m["last_date"] for m in market.meta if m["last_date"] < iso), default=None)
    if after is None:
        after = min((m["first_date"] for m in market.meta if m["first_date"] > iso), default=None)
    return ApiError(
        404,
        "no_trading_day",
        f"no stored ticker has a bar on {iso}",
        date=iso,
        previous=before,
        next=after,
    )


def market_day_answer(path: MarketDayPath, query: FieldsQuery, csv: bool) -> Response:
    day = path.date
    market = storage.read_market(context.prices_db(), day.year, day.year)
    owners, bars = storage.bars_on(market, day)
    if len(bars) == 0:
        raise no_trading_day(day)
    columns = storage.columns_for(bars, query.field_list())
    rows = storage.bar_dicts(bars, columns)
    for owner, row in zip(owners.tolist(), rows, strict=True):
        row["symbol"] = market.symbols[owner]
    payload = {"date": day.isoformat(), "count": len(rows), "bars": rows}
    csv_columns = ("symbol", "date", *columns)
    return remember(
        list_response(payload, "bars", csv_columns, "csv" if csv else None), market.depends
    )


MARKET_DAY_DOC = (
    "Every stored ticker's bar on that day, by symbol (Polygon's grouped daily). fields= "
    "picks columns. A day without trading: 404 no_trading_day naming the previous and next "
    "trading days."
)


json_and_csv_routes(
    bp,
    "/market/<date>",
    "market_day",
    market_day_answer,
    path=MarketDayPath,
    query=MarketDayQuery,
    csv_query=FieldsQuery,
    model=MarketDay,
    errors=ERRORS,
    tags=[TAG_MARKET],
    summary="every ticker's bar on one day",
    description=MARKET_DAY_DOC,
)


# --- movers ----------------------------------------------------------------------------


def needed_years(end: dt.date, period: str) -> tuple[int, int]:
    """The years holding the closes ``calc.change`` can pick: the last trading day on or
    before ``end − period`` may be late in the year before it."""
    return calc.period_start(end, period).year - 1, end.year


def ticker_change(market: storage.MarketSlice, i: int, period: str, end: dt.date) -> dict | None:
    """``calc.change`` for ticker ``i`` over the years read, or over its whole series when
    its data starts before them and those years did not reach a period back."""
    bars = market.rows_of(i)
    try:
        return calc.change(bars, period, end)
    except calc.AnalyticsError:
        pass
    first = market.meta[i]["first_date"]
    if (
        first is None
        or len(bars) == 0
        or storage.to_day(dt.date.fromisoformat(first)) >= bars["date"][0]
    ):
        return None  # nothing older is stored: /change would say the same
    whole = storage.read_bars(context.prices_db(), market.symbols[i])
    try:
        return calc.change(whole, period, end) if whole is not None else None
    except calc.AnalyticsError:
        return None


MOVERS_DOC = (
    "Top gainers and losers by change_pct over the period ending at date, each computed "
    "exactly as /tickers/{symbol}/change computes one ticker (last close on or before date "
    "against the last close on or before date − period). Only tickers that have a bar on "
    "the market's last trading day on or before date are ranked (a delisted ticker is not "
    "a mover); the others are counted in excluded. Ties by symbol."
)


@bp.get(
    "/market/movers",
    tags=[TAG_MARKET],
    summary="top gainers and losers over a period",
    description=MOVERS_DOC,
    responses={200: Movers, **ERRORS},
)
def movers(query: MoversParams) -> Response:
    r = context.prices_db()
    end = query.date or storage.latest_stored_day(r)
    if end is None:
        raise ApiError(404, "no_data", "no ticker is stored")
    first_year, last_year = needed_years(end, query.period)
    market = storage.read_market(r, first_year, last_year, ("name", "sector", "first_date"))
    wanted = query.sector.strip().casefold() if query.sector is not None else None
    changes, excluded = [], 0
    for i, sym in enumerate(market.symbols):
        meta = market.meta[i]
        if wanted is not None and (meta["sector"] or "").casefold() != wanted:
            continue
        got = ticker_change(market, i, query.period, end)
        if got is None:
            excluded += 1
            continue
        del got["period"]
        changes.append(
            {"symbol": sym, "name": meta["name"] or None, "sector": meta["sector"] or None, **got}
        )
    market_day = max((c["to_date"] for c in changes), default=None)
    if market_day is None:
        raise ApiError(
            404, "no_data", f"no ticker matches with a close on or before {end.isoformat()}"
        )
    ranked = [c for c in changes if c["to_date"] == market_day]
    excluded += len(changes) - len(ranked)
    ranked.sort(key=lambda c: c["symbol"])
    ranked.sort(key=lambda c: c["change_pct"], reverse=True)
    limit = query.limit
    gainers = ranked[:limit]
    losers = sorted(ranked, key=lambda c: c["change_pct"])[:limit]
    body = {
        "date": market_day,
        "period": query.period,
        "count": len(ranked),
        "excluded": excluded,
        "gainers": gainers,
        "losers": losers,
    }
    return remember(json_response(body), market.depends)
