"""Declared request models (pydantic v2) shared by the route modules.

flask-openapi3 validates path, query and body against these and builds the OpenAPI
document from them, so a rule written here is both enforced and documented. A failure
becomes a 400 naming the field and the reason (``stocks.api.errors``).

Reusable pieces for other route modules:
    SymbolPath      path ``{symbol}`` (resolve it with ``storage.resolve_symbol``)
    DateRange       query ``start``/``end`` (ISO dates, both optional, start <= end)
    FormatQuery     query ``format=json|csv`` (None: decided by the Accept header)
    FieldsQuery     query ``fields=`` (a subset of the bar columns)
    CSV_ONLY        the 200 response of a ``.csv`` route (text/csv only)
    IsoDate         an annotated ``datetime.date`` that only accepts ``YYYY-MM-DD``
    check_text      the "no control characters" rule, for any free-text field
    ErrorBody       the documented error shape, for ``responses={404: ErrorBody}``
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stocks import storage

# --- field types -----------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

PRICE_FIELDS = ("open", "high", "low", "close", "volume", "adj_close")
# Documented in the schema as well as enforced by the validators (the validators speak
# plainer English when they refuse).
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
_FIELD_ALT = "(" + "|".join(PRICE_FIELDS) + ")"
FIELDS_PATTERN = rf"^\s*{_FIELD_ALT}\s*(,\s*{_FIELD_ALT}\s*)*$"
Interval = Literal["1d", "1wk", "1mo", "3mo", "1y"]  # stocks.resample.INTERVALS
INTERVAL_DOC = (
    "1d daily, 1wk ISO weeks, 1mo calendar months, 3mo calendar quarters, 1y calendar "
    "years; a longer bar is labelled with its first trading day"
)
MAX_LIMIT = 10_000


def invalid(reason: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``reason`` (no "Value error, " prefix)."""
    return PydanticCustomError("invalid", reason)


def check_text(value: Any) -> Any:
    """Refuse control characters (newlines, NUL, escapes) in any text parameter."""
    if isinstance(value, str) and _CONTROL_RE.search(value):
        raise invalid("must not contain control characters")
    return value


def _parse_iso_date(value: Any) -> Any:
    """Only ``YYYY-MM-DD``: pydantic's lax mode would also read numbers as timestamps."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise invalid("must be a date as YYYY-MM-DD")
    check_text(value)
    if not _ISO_DATE_RE.match(value):
        raise invalid("must be a date as YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise invalid("not a calendar date") from None


IsoDate = Annotated[
    dt.date,
    BeforeValidator(_parse_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "example": "2017-06-30"}),
]
# pydantic leaves ``pattern`` out of the schema once a before-validator is attached, so
# the documented pattern goes in as schema text; the validators do the enforcing.
NO_CONTROL = {"pattern": NO_CONTROL_PATTERN}
Text = Annotated[str, BeforeValidator(check_text), Field(json_schema_extra=NO_CONTROL)]


def bounded_text(max_length: int, min_length: int | None = None) -> Any:
    """``Text`` of at most ``max_length`` characters.

    The bounds sit on the ``str`` itself, inside the control-character check: set from
    outside a validator (``Text | None = Field(max_length=...)``), pydantic no longer sees
    a string there and counts "items" instead of characters.
    """
    return Annotated[
        str,
        Field(min_length=min_length, max_length=max_length),
        BeforeValidator(check_text),
        Field(json_schema_extra=NO_CONTROL),
    ]


# A stock symbol as typed by a user: resolved later, so only shape limits here.
SymbolText = Annotated[
    bounded_text(20, min_length=1), Field(description="case-insensitive, e.g. AAPL or brk-b")
]
SectorText = bounded_text(100)


class ApiModel(BaseModel):
    """Base for request models: caches the plain JSON schema.

    flask-openapi3 calls ``model_json_schema()`` on the query model on every request;
    building it each time costs more than the rest of a cached price answer.
    """

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        cached = _SCHEMAS.get(cls)
        if cached is None:
            cached = _SCHEMAS[cls] = super().model_json_schema()
        return cached


_SCHEMAS: dict[type, dict[str, Any]] = {}


# --- path models -----------------------------------------------------------------------


class SymbolPath(ApiModel):
    symbol: SymbolText


class BarPath(ApiModel):
    symbol: SymbolText
    date: IsoDate


class NewBarPath(BarPath):
    """Where a bar is written: on a trading day (a stored bar of any day can be deleted)."""

    @field_validator("date")
    @classmethod
    def _trading_day(cls, day: dt.date) -> dt.date:
        """A weekday of the trading era: not before 1900, not after tomorrow (UTC)."""
        if day < storage.FIRST_TRADING_DAY:
            raise invalid(f"no trading before {storage.FIRST_TRADING_DAY.isoformat()}")
        if day > dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1):
            raise invalid("that day is in the future")
        if day.weekday() >= 5:
            raise invalid(f"{day.isoformat()} is a {day.strftime('%A')}: no trading")
        return day


# --- query models ----------------------------------------------------------------------


class DateRange(ApiModel):
    """``start``/``end`` (inclusive, both optional); start after end is a 400."""

    start: IsoDate | None = Field(default=None, description="first day, inclusive")
    end: IsoDate | None = Field(default=None, description="last day, inclusive")

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: dt.date | None, info: ValidationInfo) -> dt.date | None:
        start = info.data.get("start")
        if end is not None and start is not None and start > end:
            raise invalid("end must not be before start")
        return end


class FormatQuery(ApiModel):
    format: Literal["json", "csv"] | None = Field(
        default=None, description="json (default) or csv; Accept: text/csv also works"
    )


SEARCH_DOC = (
    "search symbols and company names, case-insensitive; best match first: exact symbol, "
    "then symbol prefix, then a name word starting with q, then q anywhere in the name "
    "(ties by symbol)"
)


class TickersParams(ApiModel):
    sector: SectorText | None = Field(default=None, description="GICS sector, case-insensitive")
    q: bounded_text(100, min_length=1) | None = Field(default=None, description=SEARCH_DOC)


class TickersQuery(TickersParams, FormatQuery):
    pass


class FieldsQuery(ApiModel):
    """``fields=``: a comma-separated subset of the bar columns (unknown one: 400)."""

    fields: bounded_text(100) | None = Field(
        default=None,
        json_schema_extra={"pattern": FIELDS_PATTERN},
        description="comma-separated columns among " + ",".join(PRICE_FIELDS),
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _known_fields(cls, fields: Any) -> Any:
        # Before the pattern check, so the refusal names the unknown field.
        if isinstance(fields, str):
            check_text(fields)
            bad = [f for f in (n.strip() for n in fields.split(",")) if f not in PRICE_FIELDS]
            if bad:
                known = ",".join(PRICE_FIELDS)
                raise invalid(f"unknown field {bad[0][:20]!r}; known: {known}")
        return fields

    def field_list(self) -> tuple[str, ...] | None:
        """Requested columns in request order without repeats, or None for the default set."""
        if self.fields is None:
            return None
        return tuple(dict.fromkeys(f.strip() for f in self.fields.split(",")))


class PricesParams(DateRange, FieldsQuery):
    interval: Interval = Field(default="1d", description=INTERVAL_DOC)
    limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LIMIT,
        description=f"at most this many bars (1..{MAX_LIMIT}): the latest ones of the range "
        "(after interval grouping); the answer says whether it was limited",
    )
    order: Literal["asc", "desc"] = Field(
        default="asc", description="asc: oldest first (default); desc: newest first"
    )


class PricesQuery(PricesParams, FormatQuery):
    pass


# --- bodies ----------------------------------------------------------------------------

Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# a price in a write: a JSON number (an integer is fine), never a string or a boolean, and
# at most PRICE_MAX, so that nothing derived from it (returns, sums, charts) overflows
StrictPrice = Annotated[float, Strict(), Field(gt=0, le=storage.PRICE_MAX, allow_inf_nan=False)]


class BarBody(ApiModel):
    """One daily bar for PUT: strict JSON numbers (no strings, no booleans), no other keys,
    finite prices > 0 with low <= open, close <= high, and a volume no sum can overflow."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"description": "prices > 0 and low <= open, close <= high"},
    )

    open: StrictPrice
    high: StrictPrice
    low: StrictPrice
    close: StrictPrice
    volume: int = Field(ge=0, le=storage.VOLUME_MAX)
    adj_close: StrictPrice | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BarBody:
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise invalid("prices must satisfy low <= open, close <= high")
        return self

    def as_row(self) -> tuple[float, float, float, float, float, int]:
        adj = math.nan if self.adj_close is None else self.adj_close
        return (self.open, self.high, self.low, self.close, adj, self.volume)


# --- responses (for the OpenAPI document; not validated at run time) -----------------


class ErrorDetail(BaseModel):
    """The error shape of every failure; routes add detail fields (errors, previous, ...)."""

    model_config = ConfigDict(extra="allow")
    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class TickerSummary(BaseModel):
    symbol: str
    name: str | None
    sector: str | None
    first_date: str
    last_date: str
    rows: int


# List answers are also served as CSV (format=csv or Accept: text/csv).
CSV_TOO = ConfigDict(openapi_extra={"content": {"text/csv": {"schema": {"type": "string"}}}})


class TickerList(BaseModel):
    model_config = CSV_TOO

    count: int
    tickers: list[TickerSummary]


class Bar(BaseModel):
    date: str
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: int | None = None
    adj_close: float | None = None


class TickerDetail(TickerSummary):
    latest: Bar
    source: str | None
    loaded_at: str | None


class PriceSeries(BaseModel):
    model_config = CSV_TOO

    symbol: str
    interval: str
    order: str = Field(description="asc: oldest first; desc: newest first")
    count: int = Field(description="bars in this answer")
    available: int = Field(description="bars in the range before limit")
    limited: bool = Field(description="true when limit left bars out (count < available)")
    prices: list[Bar]


class OneBar(Bar):
    symbol: str


class IndexBody(BaseModel):
    name: str
    tickers: int
    sources: dict[str, int]
    links: dict[str, str]


class Status(BaseModel):
    status: str
    tickers: int | None = None


# The answers of the ``.csv`` routes and of the image route: one content type each, so a
# generated client reads them as text or bytes instead of parsing JSON.
CSV_ONLY = {
    "description": "CSV with a header row; a missing cell is empty",
    "content": {"text/csv": {"schema": {"type": "string"}}},
}
IMAGE = {
    "description": "the chart, PNG or SVG as the job asked (Content-Type says which)",
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/svg+xml": {"schema": {"type": "string", "format": "binary"}},
    },
}
NOT_MODIFIED = {304: None}  # If-None-Match with the current ETag


# --- the market ------------------------------------------------------------------------


class MarketDayPath(ApiModel):
    date: IsoDate


class MarketDayQuery(FieldsQuery, FormatQuery):
    pass


class MarketBar(Bar):
    symbol: str


class MarketDay(BaseModel):
    model_config = CSV_TOO

    date: str
    count: int
    bars: list[MarketBar]


MAX_MOVERS = 100


class MoversParams(ApiModel):
    date: IsoDate | None = Field(
        default=None, description="the period's last day (default: the last stored day)"
    )
    period: Literal["1d", "5d", "1wk", "1mo", "3mo", "6mo", "1y", "5y"] = Field(
        default="1d", description="calendar period back from date, as in /tickers/{symbol}/change"
    )
    limit: int = Field(default=10, ge=1, le=MAX_MOVERS, description="gainers and losers each")
    sector: SectorText | None = Field(default=None, description="GICS sector, case-insensitive")


class Mover(BaseModel):
    symbol: str
    name: str | None
    sector: str | None
    from_date: str
    from_close: float
    to_date: str
    to_close: float
    change: float = Field(description="to_close − from_close")
    change_pct: float = Field(description="(to_close / from_close − 1) × 100")


class Movers(BaseModel):
    date: str = Field(description="the market's last trading day on or before the date asked")
    period: str
    count: int = Field(description="tickers ranked")
    excluded: int = Field(
        description="tickers left out: no bar on that day (e.g. delisted) or no bar a period back"
    )
    gainers: list[Mover]
    losers: list[Mover]
