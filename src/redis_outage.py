"""Fail at once while Redis is not answering, instead of each caller waiting out its timeout.

The API's clients wait at most ``redis_timeout`` for an answer. When Redis hangs, every
request that reaches it would still wait that long, and requests queued behind the busy
threads wait for those first: a burst of 40 requests on 12 threads took up to 7.5 s to be
told 503. So the first call that times out (or cannot connect) marks Redis as away for
the whole process; from then on a call fails before it takes a connection, while a
background thread tries Redis every ``retry_every`` seconds. The first answer Redis
gives, to any call, clears the mark.

Only connection trouble counts: an error Redis answers with (out of memory, a script
error) is an answer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from functools import cache

import redis

log = logging.getLogger(__name__)

_TROUBLE = (redis.TimeoutError, redis.ConnectionError)


class RedisAway(redis.ConnectionError):
    """Refused here without trying: Redis did not answer a call just before."""


class Outage:
    """Whether Redis has stopped answering this process, shared by its clients of one URL.

    While Redis is away, calls fail at once and a background thread tries Redis every
    ``retry_every`` s: the process finds out that Redis is back by itself, not only
    when a request comes and pays for the try.
    """

    def __init__(self, retry_every: float):
        self.retry_every = retry_every
        self.away = False
        self.try_redis: Callable[[], None] | None = None  # one PING (set by a pool)
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Let a call use Redis, or raise ``RedisAway``."""
        if self.away:
            raise RedisAway("the data store did not answer just now")

    def failed(self, error: BaseException) -> None:
        if isinstance(error, RedisAway):
            return
        with self._lock:
            if self.away:
                return
            self.away = True
        log.warning(
            "redis does not answer (%s): calls fail at once; trying it every %.1f s",
            error,
            self.retry_every,
            extra={"event": "redis_away"},
        )
        threading.Thread(target=self._try_until_back, name="redis-outage", daemon=True).start()

    def answered(self) -> None:
        if not self.away:
            return
        with self._lock:
            was_away, self.away = self.away, False
        if was_away:
            log.info("redis answers again", extra={"event": "redis_back"})

    def _try_until_back(self) -> None:
        while self.away:
            time.sleep(self.retry_every)
            if self.away and self.try_redis is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    self.try_redis()  # its connection reports the outcome


@cache
def _watched_class(base: type[redis.Connection]) -> type[redis.Connection]:
    """``base`` (plain, TLS or Unix socket: whatever the URL asked for) reporting to an
    ``Outage`` whether Redis answered."""

    class Watched(base):
        def __init__(self, *args, outage: Outage, **kwargs):
            super().__init__(*args, **kwargs)
            self.outage = outage

        def connect(self, *args, **kwargs):
            try:
                return super().connect(*args, **kwargs)
            except _TROUBLE as e:
                self.outage.failed(e)
                raise

        def read_response(self, *args, **kwargs):
            try:
                response = super().read_response(*args, **kwargs)
            except _TROUBLE as e:
                self.outage.failed(e)
                raise
            except redis.RedisError:  # an error reply (a full Redis, a script error)
                self.outage.answered()
                raise
            self.outage.answered()
            return response

    Watched.__name__ = Watched.__qualname__ = f"Watched{base.__name__}"
    return Watched


class FailFastPool(redis.ConnectionPool):
    """A connection pool that refuses calls at once while its ``outage`` says Redis is away."""

    def __init__(self, *args, outage: Outage, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = outage
        self.connection_class = _watched_class(self.connection_class)
        self.connection_kwargs["outage"] = outage
        if outage.try_redis is None:
            outage.try_redis = self.ping_once

    def ping_once(self) -> None:
        """PING on a connection of its own, outside the pool (which refuses while away)."""
        conn = self.connection_class(**self.connection_kwargs)
        try:
            conn.send_command("PING")
            conn.read_response()
        finally:
            conn.disconnect()

    def get_connection(self, *args, **kwargs):
        self.outage.admit()
        return super().get_connection(*args, **kwargs)
