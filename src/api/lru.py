"""A thread-safe LRU for the API's per-process caches (gthread workers share them)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable

from cachetools import LRUCache


class LockedLRU:
    """cachetools' LRUCache behind a lock; bounded by count, or by ``getsizeof`` units."""

    def __init__(self, maxsize: int, getsizeof: Callable[[object], int] | None = None):
        self._cache = LRUCache(maxsize=maxsize, getsizeof=getsizeof)
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        with self._lock:
            return self._cache.get(key)

    def put(self, key: Hashable, value: object) -> None:
        # A value larger than the whole cache (or any value, at size 0) is simply not kept.
        with self._lock, contextlib.suppress(ValueError):
            self._cache[key] = value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
