"""Shared fixtures: a real redis-server per test session, flushed before each test."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from stocks.config import reset_clients
from stocks.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SP500_DIR = SHARED_DATA / "sp500_daily"
YAHOO_DIR = SHARED_DATA / "yahoo"

needs_shared = pytest.mark.skipif(
    not SP500_DIR.is_dir(), reason="../shared/data is absent (real S&P 500 data)"
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (AOF off: speed; tests needing AOF start their own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server, monkeypatch) -> str:
    """REDIS_URL pointing at an empty server; every stocks client follows it."""
    redis.Redis.from_url(redis_server.url).flushall()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    reset_clients()
    yield redis_server.url
    reset_clients()


@pytest.fixture
def r0(redis_url) -> redis.Redis:
    """Raw client on DB 0 (stocks)."""
    return redis.Redis.from_url(redis_url, db=0)


@pytest.fixture
def own_redis(tmp_path, monkeypatch):
    """A private redis-server with AOF, for tests that kill or restart it."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    monkeypatch.setenv("REDIS_URL", server.url)
    reset_clients()
    yield server
    server.stop(kill=True)
    reset_clients()
