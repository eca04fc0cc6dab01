"""Property-based run over the app's own OpenAPI description (schemathesis 4).

Every documented operation gets generated requests, valid and invalid, through the WSGI
app with a few real-looking series stored, so most calls reach the data instead of a
404. Asserted for every response: no 5xx, and the status code, content type and body
are the ones documented. Bounded (a few dozen cases per operation, derandomized) so it
stays part of ``make test``.
"""

from __future__ import annotations

import pytest
import schemathesis
from conftest import random_bars
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stocks import storage
from stocks.api.app import create_app
from stocks.config import Settings

MAX_EXAMPLES = 25
API_KEY = "schemathesis-test-key"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class CurrentApp:
    """The WSGI app of the running test: schemathesis needs one at import, before the
    test's Redis exists; ``stored`` points it at an app on that Redis."""

    def __init__(self) -> None:
        self.app = create_app(Settings(redis_url="redis://127.0.0.1:1"), {"TESTING": True})

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


current = CurrentApp()
schema = schemathesis.openapi.from_wsgi("/openapi.json", current)


STORED = ("AAPL", "MSFT", "BRK.B")
# Spellings that reach stored data: case, the Yahoo alias form.
SYMBOLS = ("AAPL", "msft", "BRK-B", "brk.b")
INDICATORS = ("sma", "ema", "rsi", "macd", "bollinger")


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the generated symbols/indicator names are swapped for ones that exist."""
    params = dict(path_parameters or {})
    strategy = st.just(params)
    if isinstance(params.get("symbol"), str):
        strategy = strategy.flatmap(
            lambda p: st.sampled_from([p["symbol"], *SYMBOLS]).map(lambda s: {**p, "symbol": s})
        )
    if isinstance(params.get("name"), str):
        strategy = strategy.flatmap(
            lambda p: st.sampled_from([p["name"], *INDICATORS]).map(lambda n: {**p, "name": n})
        )
    return strategy


@schema.hook
def flatmap_query(context, query):
    """``symbols`` lists for /compare: often two or three stored ones."""
    query = dict(query or {})
    if not isinstance(query.get("symbols"), str):
        return st.just(query)
    lists = st.lists(st.sampled_from(SYMBOLS), min_size=2, max_size=3).map(",".join)
    return st.one_of(st.just(query["symbols"]), lists).map(lambda s: {**query, "symbols": s})


HOLES = ("open", "high", "low", "volume")  # MSFT's empty cells


@pytest.fixture(autouse=True)
def stored(r0, base_settings):
    """AAPL, MSFT and BRK.B (alias BRK-B), one with empty cells: calls find data.

    A write key is configured and sent, so PUT/DELETE reach their handlers too.
    """
    # a fuzzer is one client sending far more than fair use: it checks shapes, not limits
    settings = base_settings.replace(api_keys=(API_KEY,), compute_rate="100000/second")
    current.app = create_app(settings, {"TESTING": True})
    meta = {"name": "Test", "sector": "Information Technology", "source": "test"}
    for i, sym in enumerate(STORED):
        empty = 0.06 if sym == "MSFT" else 0.0
        bars = random_bars(300, i, volume=(1, 10_000), empty=empty, empty_columns=HOLES)
        storage.replace_series(r0, sym, bars, meta)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(case):
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Bearer {API_KEY}"})
