"""Pieces every benchmark section shares: a private Redis, synthetic bars, stopping servers."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stocks import storage
from stocks.config import reset_clients
from stocks.redis_server import RedisServer


@contextmanager
def private_redis(appendonly: bool = False, appendfsync: str = "everysec") -> Iterator[RedisServer]:
    """A fresh redis-server in a temporary folder (clients built on its ``url``)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=appendonly, appendfsync=appendfsync)
        server.start()
        try:
            yield server
        finally:
            server.stop()
            reset_clients()


def synthetic_bars(seed: int, n: int = 1259) -> np.ndarray:
    """Five years of plausible daily bars (a random walk), reproducible per seed."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = close * (1 + rng.normal(0, 0.006, n))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 0.01)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 0.01)
    days = np.busday_offset(np.datetime64("2013-02-08"), np.arange(n), roll="forward")
    return storage.make_bars(days, open_, high, low, close, rng.integers(1e6, 5e7, n))


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
