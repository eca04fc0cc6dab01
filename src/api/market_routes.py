"""The market routes: every ticker's bar on one day, and the day's top movers.

Both read the whole market in two round trips (``storage.read_market_window``: the
symbol set, then one script that picks inside Redis, from each ticker's year chunks, only
the bars the question needs), never one round trip per ticker. Answers depend on the symbol set and
every ticker's version, so they carry an ETag and are served again by the answer cache
until a load or write changes any of them.

Movers use ``analytics.change_indices`` and ``analytics.change_columns``, the rule and
the formulas behind ``/tickers/{symbol}/change`` (``analytics.change`` is built on them),
applied to every ticker at once, so a mover's figures equal that route's for the same
symbol, period and date, at numpy speed rather than 505 Python calls.
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

ERRORS = {**NOT_MODIFIED, 400: ErrorBody, 404: ErrorBody, 429: ErrorBody}  # 429: fair use
MOVERS_ERRORS = {**ERRORS, 422: ErrorBody}  # 422: no close a period back

bp = APIBlueprint("market", __name__, operation_id_callback=plain_operation_id)


# --- one day ---------------------------------------------------------------------------


def no_trading_day(day: dt.date, market: storage.MarketSlice) -> ApiError:
    """The 404 for a day no ticker traded, naming the market's nearest trading days.

    ``market`` is the window read for ``day``: it already holds every ticker's last bar
    before it; the next one takes one more round trip (the error path only).
    """
    before = storage.from_day(market.bars["date"].max()) if len(market.bars) else None
    after = storage.next_market_day(context.prices_db(), market.symbols, day)
    iso = day.isoformat()
    return ApiError(
        404,
        "no_trading_day",
        f"no stored ticker has a bar on {iso}",
        date=iso,
        previous=before.isoformat() if before else None,
        next=after.isoformat() if after else None,
    )


def market_day_answer(path: MarketDayPath, query: FieldsQuery, csv: bool) -> Response:
    day = path.date
    market = storage.read_market_window(context.prices_db(), day, day)
    owners, bars = storage.bars_on(market, day)
    if len(bars) == 0:
        raise no_trading_day(day, market)
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


MOVERS_DOC = (
    "Top gainers and losers by change_pct over the period ending at date, each computed "
    "exactly as /tickers/{symbol}/change computes one ticker (last close on or before date "
    "against the last close on or before date − period; a date after the data counts as "
    "the last stored day). Only tickers that have a bar on the market's last trading day "
    "on or before date are ranked (a delisted ticker is not a mover); the others are "
    "counted in excluded. Ties by symbol. A sector without tickers has no movers (count "
    "0); no ticker with a close a period before date: 422 no_data_before, as /change."
)


def change_window(r, end: dt.date, query: MoversParams):
    """The rule of /change for every ticker at once, as of ``end``: (market slice, its bars
    with a close, from and to indices, which tickers are in the asked sector, where each
    ticker's bars start)."""
    market = storage.read_market_window(
        r, calc.period_start(end, query.period), end, ("name", "sector", "last_date")
    )
    keep = np.isfinite(market.bars["close"])
    owner = np.searchsorted(market.bounds, np.arange(len(keep)), side="right") - 1
    bounds = np.concatenate(
        ([0], np.cumsum(np.bincount(owner[keep], minlength=len(market.symbols))))
    )
    bars = market.bars[keep]
    from_idx, to_idx = calc.change_indices(bars["date"], bounds, end, query.period)
    in_scope = np.ones(len(market.symbols), dtype=bool)
    if query.sector is not None:
        wanted = query.sector.strip().casefold()
        sectors = market.meta["sector"]
        in_scope = np.array([(s or "").casefold() == wanted for s in sectors], dtype=bool)
    return market, bars, from_idx, to_idx, in_scope, bounds[:-1]


NO_DAY = np.iinfo(np.int32).min  # a ticker without the close asked for


def days_at(dates: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``dates[rows]``, NO_DAY where a row is -1 (none)."""
    out = np.full(len(rows), NO_DAY, dtype=np.int64)
    found = rows >= 0
    out[found] = dates[rows[found]]
    return out


def no_data_before(first_days: np.ndarray, end: dt.date, period: str) -> ApiError:
    """The 422 of /change (``analytics.change``) when tickers have closes up to ``end`` but
    none a period before it: the day needed, and the earliest of their first closes (the
    window holds all their closes then, none being on or before its first day)."""
    target = calc.period_start(end, period)
    first = storage.from_day(first_days.min()).isoformat()
    return ApiError(
        422,
        "no_data_before",
        f"no ticker has a close on or before {target.isoformat()} ({end.isoformat()} − "
        f"{period}); data starts {first}",
    )


@bp.get(
    "/market/movers",
    tags=[TAG_MARKET],
    summary="top gainers and losers over a period",
    description=MOVERS_DOC,
    responses={200: Movers, **MOVERS_ERRORS},
)
def movers(query: MoversParams) -> Response:
    r = context.prices_db()
    end = query.date or storage.latest_stored_day(r)
    if end is None:
        raise ApiError(404, "no_data", "no ticker is stored")
    market, bars, from_idx, to_idx, in_scope, starts = change_window(r, end, query)
    # a date after the data: as of the last stored day (see analytics.within_data)
    latest = max((d for d in market.meta["last_date"] if d), default=None)
    if latest is not None and end > (latest := dt.date.fromisoformat(latest)):
        end = latest
        market, bars, from_idx, to_idx, in_scope, starts = change_window(r, end, query)
    to_days = days_at(bars["date"], to_idx)
    if not in_scope.any():  # a sector without tickers: no movers, as /tickers lists none
        day = storage.from_day(to_days.max()) if to_days.max() != NO_DAY else end
        body = {"date": day.isoformat(), "period": query.period, "count": 0, "excluded": 0}
        return remember(json_response({**body, "gainers": [], "losers": []}), market.depends)
    live = in_scope & (to_idx >= 0)
    if not live.any():
        raise ApiError(
            404, "no_data", f"no ticker matches with a close on or before {end.isoformat()}"
        )
    chosen = live & (from_idx >= 0)
    if not chosen.any():
        raise no_data_before(bars["date"][starts[live]], end, query.period)
    # Only tickers with a bar on the market's last trading day are movers.
    to_days = np.where(chosen, to_days, NO_DAY)
    market_day = to_days.max()
    ranked = np.flatnonzero(to_days == market_day)  # in symbol order
    figures = calc.change_columns(bars["close"], from_idx[ranked], to_idx[ranked])
    pct = figures["change_pct"]
    names, sectors = market.meta["name"], market.meta["sector"]

    def mover(k: int) -> dict:
        i = ranked[k]
        return {
            "symbol": market.symbols[i],
            "name": names[i] or None,
            "sector": sectors[i] or None,
            "from_date": storage.from_day(bars["date"][from_idx[i]]).isoformat(),
            "from_close": float(figures["from_close"][k]),
            "to_date": storage.from_day(bars["date"][to_idx[i]]).isoformat(),
            "to_close": float(figures["to_close"][k]),
            "change": float(figures["change"][k]),
            "change_pct": float(pct[k]),
        }

    limit = query.limit
    body = {
        "date": storage.from_day(market_day).isoformat(),
        "period": query.period,
        "count": len(ranked),
        "excluded": int(in_scope.sum()) - len(ranked),
        # Stable sorts keep symbol order among equal changes.
        "gainers": [mover(k) for k in np.argsort(-pct, kind="stable")[:limit]],
        "losers": [mover(k) for k in np.argsort(pct, kind="stable")[:limit]],
    }
    return remember(json_response(body), market.depends)
