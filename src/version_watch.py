"""The data versions this process has read, kept current by Redis itself (CLIENT TRACKING).

The answer cache may serve a stored answer only while the versions it was built from are
still current, in every process. Re-reading them costs a round trip per cached answer,
and under load that round trip (a blocking socket wait and a fight for the GIL on
return) was half of what a cached answer cost (bench section api). Instead, one RESP3
connection per process asks Redis to push an invalidation whenever a key under the
version keys' prefixes changes (``CLIENT TRACKING ON BCAST``), and before a hit trusts
what it knows it takes in whatever has arrived (a non-blocking read, no round trip).

Why that is as strict as the round trip: Redis queues the invalidation while it runs the
write, and sends it in the same pass as the writer's reply; by the time any client has
heard "written" and sent us a request, the invalidation is in our socket, and read
before the answer is chosen. (redis-py's own client-side cache rests on the same order.)

What is known is trusted only while the connection is known to be alive: it is pinged
every ``PING_EVERY`` s of use, and a process that has heard nothing from it for
``TRUST_FOR`` s (a paused or unreachable Redis) goes back to a round trip per check.
A lost connection forgets everything and is tried again every ``RETRY_EVERY`` s; a
Redis that refuses tracking (older than 6, or an ACL without ``CLIENT``) leaves this
process on round trips, said once in the log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stocks import storage

log = logging.getLogger(__name__)

PING_EVERY = 0.25
TRUST_FOR = 1.0
RETRY_EVERY = 1.0
MAX_KNOWN = 100_000  # names remembered at most (each answer's few; a flood of names clears)
_FAILED = (redis.RedisError, OSError)


class VersionWatch:
    """``current(names)``: ``storage.dependency_versions`` of ``names`` as a tuple, from
    memory while Redis keeps this process told of every change, else by a round trip."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._lock = threading.Lock()
        self._known: dict[str, str | None] = {}
        self._generation = 0  # bumped by every invalidation and every (re)connection
        self._conn: redis.Connection | None = None
        self._pid = 0
        self._tracking = False
        self._refused = False
        self._retry_at = 0.0
        self._heard_at = float("-inf")
        self._pinged_at = float("-inf")

    def current(self, names: Sequence[str]) -> tuple[str | None, ...]:
        """The versions of ``names`` now; raises ``redis.RedisError`` when Redis is away."""
        with self._lock:
            if self._catch_up() and (known := self._lookup(names)) is not None:
                return known
            generation = self._generation
        fresh = storage.dependency_versions(self.client, names)
        with self._lock:
            # kept only if no change was announced since the read began: an older
            # version stored after its invalidation went by would never be dropped
            if self._catch_up() is not None and generation == self._generation:
                if len(self._known) > MAX_KNOWN:
                    self._known.clear()
                self._known.update(fresh)
        return tuple(fresh[name] for name in names)

    def known(self, names: Sequence[str]) -> tuple[str | None, ...] | None:
        """The versions of ``names`` if they can be told without waiting on anything (no
        round trip, no connecting, no lock another thread holds); else None."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._lookup(names) if self._catch_up(connect=False) else None
        finally:
            self._lock.release()

    def _lookup(self, names: Sequence[str]) -> tuple[str | None, ...] | None:
        known = self._known
        if not all(name in known for name in names):
            return None
        return tuple(known[name] for name in names)

    @property
    def watching(self) -> bool:
        """Whether Redis is telling this process of changes and is trusted (for tests)."""
        with self._lock:
            return bool(self._catch_up())

    def _catch_up(self, connect: bool = True) -> bool | None:
        """Take in what Redis has pushed. True: what is known can be trusted now; False:
        tracking but not heard from lately; None: not tracking (``connect``: try to)."""
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            self._conn, self._tracking, self._pid = None, False, os.getpid()
        now = time.monotonic()
        if not self._tracking and not (connect and self._connect(now)):
            return None
        try:
            while self._conn.can_read(timeout=0):
                self._conn.read_response(push_request=True)  # pongs; invalidations below
                self._heard_at = now
            if now - self._pinged_at >= PING_EVERY:
                self._conn.send_command("PING")
                self._pinged_at = now
        except _FAILED as e:
            self._lose(now, e)
            return None
        return now - self._heard_at <= TRUST_FOR

    def _connect(self, now: float) -> bool:
        if self._refused or now < self._retry_at:
            return False
        self._retry_at = now + RETRY_EVERY
        pool = self.client.connection_pool
        if getattr(getattr(pool, "outage", None), "away", False):
            # Redis did not answer a call just now: a connect would hold the lock up to
            # the timeout; the pool's own tries find out when it is back
            return False
        options = {
            **pool.connection_kwargs,
            "protocol": 3,  # invalidations arrive as pushes on this same connection
            "health_check_interval": 0,  # pinged here
            "retry": Retry(NoBackoff(), 0),  # one attempt: the next is RETRY_EVERY s away
        }
        conn = pool.connection_class(**options)
        conn.register_connect_callback(self._track)
        try:
            conn.connect()
        except redis.ResponseError as e:
            self._refused = True
            log.warning("Redis refuses change tracking (%s): every cached answer costs a check", e)
            conn.disconnect()
            return False
        except _FAILED:
            conn.disconnect()
            return False
        self._conn = conn
        log.info("watching data versions: cached answers are checked without a round trip")
        return True

    def _track(self, conn: redis.Connection) -> None:
        """On every connection made (redis-py reconnects by itself too): ask for pushes."""
        prefixes = [arg for prefix in storage.VERSION_KEY_PREFIXES for arg in ("PREFIX", prefix)]
        conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
        conn.read_response()
        conn._parser.set_invalidation_push_handler(self._invalidated)  # as redis-py's own cache
        self._known.clear()
        self._generation += 1
        self._tracking = True
        self._heard_at = time.monotonic()

    def _invalidated(self, push: list) -> None:
        keys = push[1]
        if keys is None:  # FLUSHDB / FLUSHALL
            self._known.clear()
        else:
            for key in keys:
                self._known.pop(storage.dependency_name(key.decode()), None)
        self._generation += 1

    def _lose(self, now: float, error: Exception) -> None:
        log.warning("lost the data-version watch (%s): checking by round trip", error)
        self._tracking = False
        self._known.clear()
        self._generation += 1
        self._retry_at = now + RETRY_EVERY
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
