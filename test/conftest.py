"""Shared fixtures (a real redis-server per session, flushed before each test) and the one
bar generator every test stores, ``random_bars``."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from stocks import storage
from stocks.api.app import create_app
from stocks.config import Settings, reset_clients
from stocks.jobs import JobQueue
from stocks.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SP500_DIR = SHARED_DATA / "sp500_daily"
YAHOO_DIR = SHARED_DATA / "yahoo"


def business_days(start: str, end: str) -> np.ndarray:
    """Weekdays from start to end, both included, as datetime64[D]."""
    days = np.arange(np.datetime64(start), np.datetime64(end) + 1)
    return days[np.is_busday(days)]


def weekdays(n: int, start: str | dt.date = "2016-01-04") -> np.ndarray:
    """The first ``n`` weekdays from ``start`` on, as datetime64[D]."""
    return np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")


PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")


def random_bars(
    days: np.ndarray | int,
    seed: int = 0,
    *,
    start: str | dt.date = "2016-01-04",
    start_price: float = 100.0,
    drift: float = 0.0,
    step: float = 0.01,
    spread: float = 0.01,
    volume: tuple[int, int] = (1_000, 1_000_000),
    adj: bool = False,
    gaps: float = 0.0,
    empty: float = 0.0,
    empty_columns: tuple[str, ...] = (*PRICE_COLUMNS, "volume"),
) -> np.ndarray:
    """The one test series: a log random walk on ``days`` (or that many weekdays from ``start``).

    Every bar has low <= open, close <= high. ``adj`` adds an adjusted close (0.97 x close),
    ``gaps`` drops that share of the days (never the first or last), ``empty`` blanks that share
    of the cells in each of ``empty_columns`` (NaN prices, MISSING_VOLUME volumes).
    """
    if isinstance(days, int):
        days = weekdays(days, start)
    rng = np.random.default_rng(seed)
    days = np.asarray(days, dtype="datetime64[D]")
    if gaps and len(days):
        keep = rng.uniform(size=len(days)) >= gaps
        keep[[0, -1]] = True
        days = days[keep]
    n = len(days)
    close = start_price * np.exp(np.cumsum(rng.normal(drift, step, n)))
    high = close * (1 + rng.uniform(0, spread, n))
    low = close * (1 - rng.uniform(0, spread, n))
    open_ = low + (high - low) * rng.uniform(0, 1, n)
    bars = storage.make_bars(
        days,
        open_,
        high,
        low,
        close,
        rng.integers(*volume, n),
        adj_close=close * 0.97 if adj else None,
    )
    for col in empty_columns if empty else ():
        blank = storage.MISSING_VOLUME if col == "volume" else np.nan
        bars[col][rng.choice(n, int(empty * n), replace=False)] = blank
    return bars


def store(r0: redis.Redis, symbol: str, bars: np.ndarray, **meta) -> np.ndarray:
    """Store ``bars`` under ``symbol`` as a load would (meta defaults: its name, source csv)."""
    storage.replace_series(r0, symbol, bars, {"name": symbol, "source": "csv", **meta})
    return bars


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (returned), or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL to its whole process group, so that no
    worker of a server outlives the test (start it with ``start_new_session=True``)."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (children, theirs, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {p for p in found if running(p)}


def running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap an orphan here: PID 1 is not init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


needs_shared = pytest.mark.skipif(
    not SP500_DIR.is_dir(), reason="../shared/data is absent (real S&P 500 data)"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (AOF off: speed; tests needing AOF start their own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_settings(redis_server) -> Settings:
    """The defaults on the session's server (for module-scoped apps), but for fair use: a
    module's quick requests share one count per second in Redis, and a test never means to
    hit it (test_hostile sets its own rate to test the 429)."""
    return Settings(redis_url=redis_server.url, compute_rate="100000/second")


@pytest.fixture
def redis_url(redis_server) -> str:
    """The URL of the session's server, emptied for this test."""
    redis.Redis.from_url(redis_server.url).flushall()
    reset_clients()
    yield redis_server.url
    reset_clients()


@pytest.fixture
def redis_env(redis_url, monkeypatch) -> str:
    """REDIS_URL in the environment, for tests of commands that read it (``stocks ...``)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


@pytest.fixture
def settings(redis_url, base_settings) -> Settings:
    """The defaults, on the emptied server; a test changes what it needs with ``replace``."""
    return base_settings


@pytest.fixture
def app(settings):
    """The API on those settings (a test that needs others builds its own)."""
    return create_app(settings, {"TESTING": True})


@pytest.fixture
def client(app, redis_url):
    """A test client of ``app`` (the module's own, if it has one) on the emptied server."""
    return app.test_client()


@pytest.fixture
def jobq(settings) -> JobQueue:
    """A queue handle for reading job records and images."""
    return JobQueue(settings, "reader")


@pytest.fixture
def r0(redis_url) -> redis.Redis:
    """Raw client on DB 0 (stocks)."""
    return redis.Redis.from_url(redis_url, db=0)


@pytest.fixture
def own_redis(tmp_path):
    """A private redis-server with AOF, for tests that kill or restart it."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    reset_clients()
    yield server
    server.stop(kill=True)
    reset_clients()
