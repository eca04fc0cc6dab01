"""The API's per-process caches: bounded by bytes or count, least recently used out first."""

from __future__ import annotations

from stocks.api.answer_cache import ResponseCache
from stocks.api.lru import LockedLRU


def test_response_cache_is_bounded_by_body_bytes_and_evicts_least_recent():
    cache = ResponseCache(max_bytes=800)
    for name in "abcd":
        cache.put((name,), ("X",), ("v1",), b"x" * 100, "application/json")
    assert cache.get(("a",)) is not None  # a is now the most recently used
    for name in "efgh":
        cache.put((name,), ("X",), ("v1",), b"x" * 100, "application/json")
    cache.put(("i",), ("X",), ("v1",), b"x" * 100, "application/json")  # 900 bytes > 800
    assert cache.get(("b",)) is None
    assert cache.get(("a",)) is not None and cache.get(("i",)) is not None
    cache.put(("big",), ("X",), ("v1",), b"x" * 101, "application/json")  # over max/8
    assert cache.get(("big",)) is None


def test_locked_lru_by_count_and_size_zero_keeps_nothing():
    lru = LockedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.get("a")
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    off = LockedLRU(0)
    off.put("a", 1)
    assert off.get("a") is None
