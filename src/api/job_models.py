"""Request and response models of the job API (pydantic v2, documented by flask-openapi3).

The POST body is checked here completely (kind, symbol counts per kind, dates, options
with their bounds and defaults), so the chart code can trust the params it is given.
Unknown fields are refused: a typo in an option is a 400, not a silently default chart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stocks.api.models import ApiModel, DateRange, SymbolText, bounded_text, invalid
from stocks.chart_spec import (
    CANDLESTICK_ONLY,
    DEFAULT_OPTIONS,
    MAX_MOVING_AVERAGES,
    PIXELS,
    SYMBOL_COUNTS,
)
from stocks.jobs import ID_LENGTH, STATUSES

Pixels = Annotated[int, Field(strict=True, ge=PIXELS[0], le=PIXELS[1])]
MovingAverageWindow = Annotated[int, Field(strict=True, ge=2, le=500)]


class ChartOptions(ApiModel):
    """Common options; ``volume`` and ``moving_averages`` are for candlesticks only."""

    model_config = ConfigDict(extra="forbid")

    width: Pixels = Field(default=DEFAULT_OPTIONS["width"], description="pixels (200-4000)")
    height: Pixels = Field(default=DEFAULT_OPTIONS["height"], description="pixels (200-4000)")
    format: Literal["png", "svg"] = DEFAULT_OPTIONS["format"]
    title: bounded_text(200) | None = None
    volume: bool = Field(
        default=DEFAULT_OPTIONS["volume"], strict=True, description="candlestick: volume panel"
    )
    moving_averages: list[MovingAverageWindow] = Field(
        default_factory=list,
        max_length=MAX_MOVING_AVERAGES,
        json_schema_extra={"uniqueItems": True},
        description="candlestick: up to 3 windows (days), each once",
    )

    @field_validator("moving_averages")
    @classmethod
    def _each_once(cls, windows: list[int]) -> list[int]:
        """A window listed twice would draw the same line twice (as symbols, a 400)."""
        for i, window in enumerate(windows):
            if window in windows[:i]:
                raise invalid(f"window {window} is listed twice")
        return windows


class JobRequest(DateRange):
    """``POST /jobs`` body."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["line", "candlestick", "compare", "benchmark"]
    symbols: list[SymbolText] = Field(min_length=1, max_length=10, examples=[["AAPL"]])
    options: ChartOptions = Field(default_factory=ChartOptions)

    @model_validator(mode="after")
    def _fits_kind(self) -> JobRequest:
        low, high = SYMBOL_COUNTS[self.kind]
        if not low <= len(self.symbols) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise invalid(f"{self.kind} takes {wanted} symbol(s), got {len(self.symbols)}")
        if self.kind != "candlestick":
            extra = [name for name in CANDLESTICK_ONLY if name in self.options.model_fields_set]
            if extra:
                raise invalid(f"options.{extra[0]} applies to candlestick charts only")
        return self

    def canonical_options(self) -> dict[str, Any]:
        """Every option that applies to the kind, defaults filled in, and no other: the
        stored params are then a request that posts again as it is shown, and one request
        always has the same params, hence the same cache key."""
        unused = () if self.kind == "candlestick" else CANDLESTICK_ONLY
        return self.options.model_dump(exclude=set(unused))


class JobPath(BaseModel):
    job_id: str  # any text: an id that is not well formed is simply unknown (404)


class JobListQuery(ApiModel):
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(
        default=None,
        pattern=rf"^[0-9a-f]{{{ID_LENGTH}}}$",
        description="next_cursor of the previous page",
    )


# --- responses (documentation) ---------------------------------------------------------


class JobLinks(BaseModel):
    self: str
    image: str


class JobCreated(BaseModel):
    id: str
    status: str
    links: JobLinks


class JobView(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    status: Literal[STATUSES]  # type: ignore[valid-type]
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    error: str | None
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None
