"""The analytics routes: stats, change, indicators and compare over stored price series.

The formulas live in ``stocks.analytics``; this module validates input (declared models,
so OpenAPI documents them), fetches series through ``stocks.storage`` and shapes answers.

Speed: each app keeps two LRUs keyed by data version (built by ``init_app``): whole series
by (symbol, version) and indicator rows by (symbol, version, indicator, params). A request costs one
small round trip (the version of every symbol asked for, which also resolves case and
BRK-B/BRK.B aliases); bars are read and indicators computed only when a version
changed. Successful answers also go to the API's encoded-answer cache
(``stocks.api.answer_cache``), which serves an identical repeated GET before Flask
dispatch once it has checked those versions. Either way a write is visible on the very
next request and nothing stale is ever served.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from flask import Flask, Response, current_app
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stocks import analytics as calc
from stocks import storage
from stocks.api import context
from stocks.api.answer_cache import remember
from stocks.api.docs import TAG_ANALYTICS, plain_operation_id
from stocks.api.errors import ApiError, unknown_symbol
from stocks.api.lru import LockedLRU
from stocks.api.models import (
    CSV_TOO,
    ApiModel,
    DateRange,
    ErrorBody,
    FormatQuery,
    IsoDate,
    SymbolPath,
    Text,
    invalid,
)
from stocks.api.respond import json_and_csv_routes, json_response, list_response

MAX_COMPARE = 20
MAX_WINDOW = 500

StatsPeriod = Literal["1mo", "3mo", "6mo", "1y", "5y"]
ChangePeriod = Literal["1d", "5d", "1wk", "1mo", "3mo", "6mo", "1y", "5y"]  # = movers


# --- request models --------------------------------------------------------------------


class StatsQuery(DateRange):
    period: StatsPeriod | None = Field(
        default=None,
        description="instead of start: from the last trading day on or before end − period",
    )

    @model_validator(mode="after")
    def _period_or_start(self) -> StatsQuery:
        if self.period is not None and self.start is not None:
            raise invalid("give either start or period, not both")
        return self


class ChangeQuery(ApiModel):
    period: ChangePeriod = Field(default="1d", description="calendar period back from end")
    end: IsoDate | None = Field(default=None, description="default: the last stored day")


class IndicatorPath(SymbolPath):
    name: Text = Field(max_length=40, description="sma, ema, rsi, macd or bollinger")


OptionalWindow = int | None


class IndicatorParams(DateRange):
    window: OptionalWindow = Field(
        default=None, ge=2, le=MAX_WINDOW, description="sma/ema 20, rsi 14, bollinger 20"
    )
    k: float | None = Field(
        default=None, gt=0, le=10, allow_inf_nan=False, description="bollinger width (2)"
    )
    fast: OptionalWindow = Field(
        default=None, ge=2, le=MAX_WINDOW, description="macd fast EMA (12)"
    )
    slow: OptionalWindow = Field(
        default=None, ge=2, le=MAX_WINDOW, description="macd slow EMA (26)"
    )
    signal: OptionalWindow = Field(
        default=None, ge=2, le=MAX_WINDOW, description="macd signal EMA (9)"
    )


class IndicatorQuery(IndicatorParams, FormatQuery):
    pass


class CompareQuery(DateRange):
    symbols: Text = Field(
        max_length=600,
        description=f"2 to {MAX_COMPARE} comma-separated symbols, case-insensitive "
        "(e.g. AAPL,MSFT,GOOGL)",
    )

    @field_validator("symbols")
    @classmethod
    def _split(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",")]
        if any(not p for p in parts):
            raise invalid("empty symbol in the list")
        if len(parts) > MAX_COMPARE:
            raise invalid(f"at most {MAX_COMPARE} symbols")
        return value

    def symbol_list(self) -> list[str]:
        return [p.strip() for p in self.symbols.split(",")]


# --- response models (documentation) ---------------------------------------------------


class StatsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    symbol: str
    start: dt.date = Field(description="first trading day used")
    end: dt.date = Field(description="last trading day used")
    first_close: float
    last_close: float
    return_: float = Field(alias="return", description="last_close / first_close − 1")
    annualized_return: float | None = Field(
        description="(1 + return) ** (365.25 / calendar days from start to end) − 1; "
        "null for a single day"
    )
    annualized_volatility: float | None = Field(
        description="sample std (ddof 1) of daily close-to-close returns × √252; null below 3 days"
    )
    max_drawdown: float = Field(description="min over t of close_t / max(close ≤ t) − 1")
    high: float | None = Field(description="highest high (missing cells ignored)")
    low: float | None = Field(description="lowest low (missing cells ignored)")
    average_volume: float | None = Field(description="mean volume (missing cells ignored)")
    trading_days: int


class ChangeOut(BaseModel):
    symbol: str
    period: str
    from_date: dt.date
    from_close: float
    to_date: dt.date
    to_close: float
    change: float = Field(description="to_close − from_close")
    change_pct: float = Field(description="(to_close / from_close − 1) × 100")


class IndicatorPoint(BaseModel):
    date: dt.date
    value: float | None = None
    macd: float | None = None
    signal: float | None = None
    histogram: float | None = None
    upper: float | None = None
    middle: float | None = None
    lower: float | None = None


class IndicatorOut(BaseModel):
    model_config = CSV_TOO
    symbol: str
    indicator: str
    params: dict[str, float]
    values: list[IndicatorPoint]


class CompareOut(BaseModel):
    symbols: list[str]
    start: dt.date = Field(description="first common trading day")
    end: dt.date = Field(description="last common trading day")
    trading_days: int = Field(description="number of common trading days")
    returns: dict[str, float]
    volatility: dict[str, float | None]
    correlation: dict[str, dict[str, float | None]]


ERRORS = {400: ErrorBody, 404: ErrorBody, 422: ErrorBody, 429: ErrorBody}


# --- series cache ----------------------------------------------------------------------


@dataclass
class Series:
    """One symbol's whole history (bars with a close) at one data version."""

    symbol: str
    version: str
    bars: np.ndarray

    @cached_property
    def iso_dates(self) -> list[str]:
        return storage.days_to_iso(self.bars["date"])


@dataclass(frozen=True)
class SeriesCaches:
    """One app's caches, keyed by data version so a write never leaves one stale."""

    # (symbol, version) -> Series: ~150 kB per 5-year series.
    series: LockedLRU
    # (symbol, version, indicator, params) -> JSON-ready rows: ~0.4 MB per 5-year answer.
    indicators: LockedLRU


def init_app(app: Flask, series_size: int, indicator_size: int) -> None:
    """Give ``app`` its series and indicator caches (entries, not bytes; 0 turns one off)."""
    app.extensions["analytics_caches"] = SeriesCaches(
        LockedLRU(series_size), LockedLRU(indicator_size)
    )


def caches() -> SeriesCaches:
    return current_app.extensions["analytics_caches"]


def load_series(raws: list[str]) -> tuple[list[Series], dict[str, str | None]]:
    """The series for user-typed symbols, in order; 404 naming the first unknown one.

    One pipelined round trip fetches the version of every stored form of every symbol
    (a missing one means "not stored"), then only changed series are read. Also returns
    {stored form: version} for every form tried: what the answer depends on.
    """
    r = context.prices_db()
    stored, found = storage.resolve_symbols(r, raws)
    out = []
    for raw, symbol in zip(raws, stored, strict=True):
        if symbol is None:
            raise unknown_symbol(raw)
        series = caches().series.get((symbol, found[symbol])) or fetch_series(r, symbol)
        if series is None:
            raise unknown_symbol(raw)
        found[series.symbol] = series.version  # the version the bars really have
        out.append(series)
    return out, found


def fetch_series(r, symbol: str) -> Series | None:
    """Read a whole series (one round trip) and cache it under the version it came with."""
    got = storage.read_series(r, symbol)
    if got is None:
        return None
    meta, bars = got
    bars = calc.with_close(bars).copy()
    series = Series(symbol, meta["version"], bars)
    caches().series.put((symbol, series.version), series)
    return series


def bad_param(field_name: str, reason: str) -> ApiError:
    return ApiError(
        400,
        "invalid_parameter",
        f"{field_name}: {reason}",
        errors=[{"field": field_name, "reason": reason}],
    )


def range_slice(series: Series, start: dt.date | None, end: dt.date | None) -> slice:
    return storage.date_slice(series.bars["date"], start, end)


# --- indicators ------------------------------------------------------------------------


def indicator_params(name: str, query: IndicatorQuery, rows: int) -> dict[str, float]:
    """Defaults filled in; parameters of other indicators and impossible windows are 400s."""
    spec = calc.INDICATORS[name]
    given = {k: getattr(query, k) for k in ("window", "k", "fast", "slow", "signal")}
    for key, value in given.items():
        if value is not None and key not in spec.defaults:
            known = ", ".join(spec.defaults)
            raise bad_param(key, f"not a parameter of {name} (its parameters: {known})")
    params = calc.indicator_params(name, given)
    if name == "macd" and params["fast"] >= params["slow"]:
        raise bad_param("fast", "must be smaller than slow")
    need = spec.lookback(params)
    if need > rows:
        key = "slow" if name == "macd" else "window"
        raise bad_param(key, f"{need} is more than the {rows} stored trading days")
    return params


def indicator_rows(series: Series, name: str, params: dict[str, float]) -> list[dict]:
    """Rows {date, column…} over the whole history, cached per data version."""
    key = (series.symbol, series.version, name, tuple(sorted(params.items())))
    rows = caches().indicators.get(key)
    if rows is not None:
        return rows
    columns = calc.compute_indicator(name, series.bars["close"], params)
    names = list(columns)
    lists = []
    for col in columns.values():
        values = col.tolist()
        lists.append([None if v != v else v for v in values])
    rows = [
        dict(zip(["date", *names], row, strict=True))
        for row in zip(series.iso_dates, *lists, strict=True)
    ]
    caches().indicators.put(key, rows)
    return rows


STATS_DOC = (
    "Statistics of the closes in [start, end] (or the period back from end). "
    "return = last_close / first_close − 1; annualized_return = (1 + return) ** "
    "(365.25 / calendar days between the first and last trading day) − 1 (null for one "
    "day); annualized_volatility = sample std (ddof 1) of daily close-to-close returns × "
    "√252; max_drawdown = min over t of close_t / max(close ≤ t) − 1; high/low/"
    "average_volume ignore missing cells. With period, start is the last trading day on or "
    "before end − period (so return equals /change for that period). start/end in the "
    "answer are the trading days actually used. No trading day in range: 422."
)
CHANGE_DOC = (
    "Close on the last trading day on or before end (default: last stored day) against "
    "the close on the last trading day on or before end − period, in calendar arithmetic "
    "(1d = one calendar day; months clamp the day: Mar 31 − 1mo = Feb 28). Weekends and "
    "holidays are never an error; an end after the data counts as its last trading day "
    "(never a close compared with itself); 422 when no trading day is that old."
)
INDICATOR_DOC = (
    "Computed over the whole stored history, then cut to [start, end], so a value never "
    "depends on the range asked for; null while the window is not full. sma(window=20); "
    "ema(window=20): alpha 2/(n+1), seeded with the SMA of the first n closes (TA-Lib); "
    "rsi(window=14): Wilder smoothing; macd(fast=12, slow=26, signal=9): EMA(fast) − "
    "EMA(slow) with SMA-seeded EMAs, signal the SMA-seeded EMA of MACD, histogram = macd − "
    "signal; bollinger(window=20, k=2): SMA ± k × population std. Unknown name: 404; "
    "window ≤ 1, > 500 or longer than the history, or a parameter of another indicator: "
    "400. format=csv (or Accept: text/csv) for CSV."
)
COMPARE_DOC = (
    "Measured on the trading days all symbols share in [start, end]: returns = last/first "
    "− 1, volatility = annualized sample std of daily returns (as in /stats), correlation "
    "= Pearson correlation of daily simple returns between consecutive common days. "
    "2–20 distinct symbols (case-insensitive, BRK-B = BRK.B); unknown symbol: 404; fewer "
    "than 3 common days: 422."
)


# --- routes ----------------------------------------------------------------------------

bp = APIBlueprint("analytics", __name__, operation_id_callback=plain_operation_id)


def computed(compute) -> dict:
    """``compute()``, with "the data cannot answer" turned into a 422."""
    try:
        return compute()
    except calc.AnalyticsError as e:
        raise ApiError(422, e.code, e.message) from None


def period_stats(series: Series, query: StatsQuery) -> dict:
    start, end = query.start, query.end
    if query.period is not None and len(series.bars):
        end = end or storage.from_day(series.bars["date"][-1])
        start, end = calc.stats_range_for_period(series.bars, query.period, end)
    return {"symbol": series.symbol, **calc.stats(series.bars[range_slice(series, start, end)])}


@bp.get(
    "/tickers/<symbol>/stats",
    tags=[TAG_ANALYTICS],
    summary="Return, volatility and drawdown statistics",
    description=STATS_DOC,
    responses={200: StatsOut, **ERRORS},
)
def stats_route(path: SymbolPath, query: StatsQuery) -> Response:
    (series,), depends = load_series([path.symbol])
    body = computed(lambda: period_stats(series, query))
    return remember(json_response(body), depends)


@bp.get(
    "/tickers/<symbol>/change",
    tags=[TAG_ANALYTICS],
    summary="Change of the close over a calendar period",
    description=CHANGE_DOC,
    responses={200: ChangeOut, **ERRORS},
)
def change_route(path: SymbolPath, query: ChangeQuery) -> Response:
    (series,), depends = load_series([path.symbol])
    body = computed(lambda: calc.change(series.bars, query.period, query.end))
    return remember(json_response({"symbol": series.symbol, **body}), depends)


def indicator_answer(path: IndicatorPath, query: IndicatorParams, csv: bool) -> Response:
    name = path.name.lower()
    if name not in calc.INDICATORS:
        known = sorted(calc.INDICATORS)
        raise ApiError(
            404,
            "unknown_indicator",
            f"unknown indicator {path.name!r}; known: {', '.join(known)}",
            known=known,
        )
    (series,), depends = load_series([path.symbol])
    params = indicator_params(name, query, len(series.bars))
    rows = indicator_rows(series, name, params)[range_slice(series, query.start, query.end)]
    payload = {"symbol": series.symbol, "indicator": name, "params": params, "values": rows}
    columns = ["date", *calc.INDICATORS[name].columns]
    return remember(list_response(payload, "values", columns, "csv" if csv else "json"), depends)


json_and_csv_routes(
    bp,
    "/tickers/<symbol>/indicators/<name>",
    "indicator_route",
    indicator_answer,
    path=IndicatorPath,
    query=IndicatorQuery,
    csv_query=IndicatorParams,
    model=IndicatorOut,
    errors=ERRORS,
    tags=[TAG_ANALYTICS],
    summary="Technical indicator series (sma, ema, rsi, macd, bollinger)",
    description=INDICATOR_DOC,
)


@bp.get(
    "/compare",
    tags=[TAG_ANALYTICS],
    summary="Returns, volatility and correlation of several symbols",
    description=COMPARE_DOC,
    responses={200: CompareOut, **ERRORS},
)
def compare_route(query: CompareQuery) -> Response:
    loaded, depends = load_series(query.symbol_list())
    unique = list({s.symbol: s for s in loaded}.values())
    if len(unique) < 2:
        raise bad_param("symbols", "needs at least 2 distinct symbols")
    series = {s.symbol: s.bars[range_slice(s, query.start, query.end)] for s in unique}
    body = computed(lambda: calc.compare(series, list(series)))
    return remember(json_response({"symbols": list(series), **body}), depends)
