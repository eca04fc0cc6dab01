"""A curl_cffi Session that answers yfinance from recorded or hand-built Yahoo responses.

yfinance accepts any curl_cffi (or requests) Session; this one overrides ``request`` so
nothing ever reaches the network: the cookie (fc.yahoo.com), crumb, consent and chart
calls are answered from memory and every URL asked for is kept in ``seen``. Chart
answers are queued per Yahoo symbol: each request takes the next queued reply and the
last one repeats, so "429, 429, then the capture" is three ``add_*`` calls.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

from curl_cffi import requests as curl_requests
from curl_cffi.requests.models import Response

CRUMB = "replay-crumb"
NOT_FOUND_BODY = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}


def chart_body(
    symbol: str,
    days: list[str],
    rows: list[tuple[float, float, float, float, int]],
    adjclose: list[float] | None = None,
) -> dict:
    """A v8 chart answer like Yahoo's for a US stock: days at 14:30 UTC (09:30 New York)."""
    import datetime as dt  # noqa: PLC0415

    stamps = [int(dt.datetime.fromisoformat(f"{d}T14:30:00+00:00").timestamp()) for d in days]
    quote = {
        "open": [r[0] for r in rows],
        "high": [r[1] for r in rows],
        "low": [r[2] for r in rows],
        "close": [r[3] for r in rows],
        "volume": [r[4] for r in rows],
    }
    return {
        "chart": {
            "result": [
                {
                    "meta": {
                        "currency": "USD",
                        "symbol": symbol,
                        "exchangeName": "NMS",
                        "instrumentType": "EQUITY",
                        "firstTradeDate": 345479400,
                        "regularMarketTime": stamps[-1] if stamps else 0,
                        "gmtoffset": -18000,
                        "timezone": "EST",
                        "exchangeTimezoneName": "America/New_York",
                        "priceHint": 2,
                        "dataGranularity": "1d",
                        "range": "",
                        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "max"],
                    },
                    "timestamp": stamps,
                    "indicators": {
                        "quote": [quote],
                        "adjclose": [{"adjclose": adjclose or [r[3] for r in rows]}],
                    },
                }
            ],
            "error": None,
        }
    }


class ReplaySession(curl_requests.Session):
    """Answers Yahoo's endpoints from memory; refuses to talk to anything else."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[tuple[int, bytes | Exception]]] = {}
        self.seen: list[str] = []
        self._lock = threading.Lock()

    # --- what to answer -----------------------------------------------------------------

    def add_chart(self, symbol: str, body: dict | bytes | str, status: int = 200) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        self.charts.setdefault(symbol, []).append((status, raw))

    def add_capture(self, symbol: str, path: Path) -> None:
        """A real recorded body from ../shared/data/yahoo/."""
        self.add_chart(symbol, path.read_bytes())

    def add_unknown(self, symbol: str) -> None:
        self.add_chart(symbol, NOT_FOUND_BODY, status=404)

    def add_error(self, symbol: str, error: Exception) -> None:
        """The request raises, as a timeout or a dropped connection does."""
        self.charts.setdefault(symbol, []).append((0, error))

    # --- what was asked -----------------------------------------------------------------

    def chart_requests(self, symbol: str) -> list[str]:
        return [u for u in self.seen if urlsplit(u).path == f"/v8/finance/chart/{symbol}"]

    def hosts(self) -> set[str]:
        return {urlsplit(u).hostname or "" for u in self.seen}

    # --- the one method every yfinance call goes through --------------------------------

    def request(self, method, url, params=None, **kwargs):  # noqa: D401 - curl_cffi signature
        full = f"{url}?{urlencode(params, doseq=True)}" if params else url
        parts = urlsplit(url)
        with self._lock:
            self.seen.append(full)
            host, path = parts.hostname or "", parts.path
            if not host.endswith("yahoo.com"):
                raise AssertionError(f"replay session asked for a non-Yahoo URL: {full}")
            if host == "fc.yahoo.com":
                return self._reply(full, 404, b"")  # like Yahoo; the cookie is optional
            if path.endswith("/v1/test/getcrumb"):
                return self._reply(full, 200, CRUMB.encode(), "text/plain")
            if path.startswith("/v8/finance/chart/"):
                symbol = unquote(path.rsplit("/", 1)[1])
                queue = self.charts.get(symbol)
                if not queue:
                    return self._reply(full, 404, json.dumps(NOT_FOUND_BODY).encode())
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                if isinstance(body, Exception):
                    raise body
                return self._reply(full, status, body)
            return self._reply(full, 404, b'{"finance":{"result":null,"error":"replay"}}')

    @staticmethod
    def _reply(url: str, status: int, body: bytes, ctype: str = "application/json") -> Response:
        response = Response()
        response.url = url
        response.status_code = status
        response.ok = status < 400
        response.reason = "OK" if status < 400 else "Error"
        response.content = body
        response.headers["content-type"] = ctype
        return response
