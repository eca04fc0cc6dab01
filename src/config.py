"""Settings from the environment, and Redis clients for the four logical DBs.

Every knob is an environment variable so the same image runs on a laptop and in a
cluster; secrets (API keys, Redis password inside REDIS_URL) never live in code.
"""

from __future__ import annotations

import os
from functools import cache

import redis

STOCKS_DB = 0
QUEUE_DB = 1
JOBS_DB = 2
IMAGES_DB = 3


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def redis_url() -> str:
    return env_str("REDIS_URL", "redis://127.0.0.1:6379")


@cache
def _client(url: str, db: int, decode: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        db=db,
        decode_responses=decode,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        retry_on_timeout=True,
    )


def redis_client(db: int, *, decode: bool = False) -> redis.Redis:
    """A pooled client for one logical DB; cached per (URL, db) so pools are shared."""
    return _client(redis_url(), db, decode)


def reset_clients() -> None:
    """Forget cached clients (after a fork, or when REDIS_URL changes in tests)."""
    _client.cache_clear()
