"""Daily prices from Yahoo Finance through yfinance, with retries and a request bound.

Why the details: Yahoo spells share classes with a dash (BRK-B) while the rest of the
system uses the dot (BRK.B); raw and adjusted close are both kept (``auto_adjust=False``);
429s, 5xx pages and timeouts are retried with exponential backoff (tenacity), but an
unknown symbol or an empty answer is a named failure at once, never an empty series.
(yfinance hides the HTTP status, so a 5xx is recognised by its body, Yahoo's non-JSON
"Will be right back" page; a 5xx carrying a JSON chart error reports Yahoo's reason.)
At most ``yahoo_max_requests`` requests of one load run at a time (``slots``), whatever
the thread count, so a large ``--workers`` cannot get the client banned. A test hands in
a replay session.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yfinance as yf
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from yfinance.data import YfData
from yfinance.exceptions import (
    YFDataException,
    YFException,
    YFPricesMissingError,
    YFRateLimitError,
    YFTzMissingError,
)

from stocks.storage import make_bars

# yfinance's own pandas deprecation noise and log lines are not ours to act on: every
# failure comes back as a named reason in the load summary instead.
warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
logging.getLogger("yfinance").setLevel(logging.CRITICAL)


class YahooFailure(Exception):
    """Yahoo answered, but not with prices for this symbol: not worth retrying."""


class YahooTransient(Exception):
    """Rate limit, server error or timeout: worth another try after a pause."""


@dataclass(frozen=True)
class HistorySpan:
    """What to ask for: [start, end] both inclusive, or a Yahoo period such as '5y'."""

    start: dt.date | None = None
    end: dt.date | None = None
    period: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How one load asks Yahoo: tries per symbol, pauses, and requests at a time."""

    attempts: int = 5
    wait: float = 1.0  # first pause, doubling after
    max_wait: float = 30.0
    slots: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(4))


def to_yahoo(symbol: str) -> str:
    return symbol.replace(".", "-")


def fetch(symbol: str, span: HistorySpan, session=None, policy: RetryPolicy | None = None):
    """Bars (BAR_DTYPE, adj_close filled) for one canonical symbol; raises YahooFailure.

    ``session`` is handed to yfinance (None: its own curl_cffi session).
    """
    policy = policy or RetryPolicy()
    retrying = Retrying(
        retry=retry_if_exception_type(YahooTransient),
        wait=wait_exponential_jitter(
            multiplier=policy.wait, max=policy.max_wait, jitter=policy.wait
        ),
        stop=stop_after_attempt(policy.attempts),
        before_sleep=_forget_cached_answers,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return _fetch_once(symbol, span, session, policy)
    except YahooTransient as exc:
        raise YahooFailure(f"{exc} (gave up after {policy.attempts} attempts)") from exc
    raise AssertionError("unreachable")


def _forget_cached_answers(_state) -> None:
    """yfinance memoizes past-range answers, failed ones included; a retry must ask again."""
    YfData.cache_get.cache_clear()


def _fetch_once(symbol: str, span: HistorySpan, session, policy: RetryPolicy) -> np.ndarray:
    yahoo_symbol = to_yahoo(symbol)
    kwargs: dict = {"interval": "1d", "auto_adjust": False, "actions": False, "timeout": 20}
    if span.period:
        kwargs["period"] = span.period
    else:
        kwargs["start"] = span.start.isoformat() if span.start else None
        # yfinance's end is exclusive, ours inclusive.
        kwargs["end"] = (span.end + dt.timedelta(days=1)).isoformat() if span.end else None
    yf.config.debug.hide_exceptions = False  # raise errors instead of an empty frame
    with policy.slots:
        try:
            ticker = yf.Ticker(yahoo_symbol, session=session)
            frame = ticker.history(**kwargs)
        except YFRateLimitError as exc:
            raise YahooTransient(f"{symbol}: rate limited by Yahoo (HTTP 429)") from exc
        except (YFPricesMissingError, YFTzMissingError) as exc:
            raise YahooFailure(f"{symbol}: {_reason(exc)}") from exc
        except YFDataException as exc:
            if "DOWN" in str(exc):
                raise YahooTransient(f"{symbol}: Yahoo is down ({exc})") from exc
            raise YahooFailure(f"{symbol}: {exc}") from exc
        except (json.JSONDecodeError, TimeoutError, ConnectionError, OSError) as exc:
            if type(exc).__name__ == "DNSError":  # offline: no point in waiting and retrying
                raise YahooFailure(f"{symbol}: cannot resolve Yahoo's host ({exc})") from exc
            raise YahooTransient(f"{symbol}: {type(exc).__name__}: {exc}") from exc
        except YFException as exc:
            raise YahooFailure(f"{symbol}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - HTTP client errors vary by backend
            if _is_transient_http(exc):
                raise YahooTransient(f"{symbol}: {type(exc).__name__}: {exc}") from exc
            raise YahooFailure(f"{symbol}: {type(exc).__name__}: {exc}") from exc
    return frame_to_bars(symbol, frame)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _is_transient_http(exc: Exception) -> bool:
    """Timeouts, dropped connections and 5xx from curl_cffi or requests."""
    name = type(exc).__name__
    if name in {"Timeout", "ConnectTimeout", "ReadTimeout", "ConnectionError", "CurlError"}:
        return True
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def frame_to_bars(symbol: str, frame: pd.DataFrame | None) -> np.ndarray:
    """yfinance's history frame -> bars; an empty frame is a failure, not a series."""
    if frame is None or frame.empty:
        raise YahooFailure(f"{symbol}: Yahoo returned no prices")
    missing = {"Open", "High", "Low", "Close", "Volume"} - set(frame.columns)
    if missing:
        raise YahooFailure(f"{symbol}: Yahoo's answer lacks {', '.join(sorted(missing))}")
    frame = frame.dropna(subset=["Close"])
    if frame.empty:
        raise YahooFailure(f"{symbol}: Yahoo returned no closing prices")
    index = frame.index
    if getattr(index, "tz", None) is not None:
        index = index.tz_localize(None)  # the exchange's local trading day
    days = np.asarray(index.values).astype("datetime64[D]")
    order = np.argsort(days, kind="stable")
    days = days[order]
    keep = np.concatenate((days[1:] != days[:-1], [True]))  # a repeated day: keep the last
    picked = order[keep]

    def col(name: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)[picked]

    adj = col("Adj Close") if "Adj Close" in frame.columns else None
    return make_bars(
        days[keep], col("Open"), col("High"), col("Low"), col("Close"), col("Volume"), adj
    )
