"""Shared fixtures: a real redis-server per test session, flushed before each test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis

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
    """The defaults on the session's server (for module-scoped apps)."""
    return Settings(redis_url=redis_server.url)


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
def client(app):
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
