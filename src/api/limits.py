"""Rate limits (Flask-Limiter), counted in Redis (DB 1) so every API process shares the count.

One module-level ``limiter`` so views can declare their limits where they are defined;
``init_app`` binds it to an app and its Redis (the app-factory pattern of Flask-Limiter's
docs). Its storage belongs to the limiter, not the app: in one process the last app
built decides where counts go (the server builds one app per process). If Redis fails or
is full, counting goes on in each process's memory until Redis answers again: requests are
never let through unlimited, and reads go on while a full Redis refuses the counters.
"""

from __future__ import annotations

import math
import time

import redis
from flask import Flask, Response, current_app
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.errors import StorageError

from stocks.api.errors import error_response
from stocks.config import Settings
from stocks.keys import QUEUE_DB, RATE_LIMIT_PREFIX

limiter = Limiter(
    get_remote_address,
    key_prefix=RATE_LIMIT_PREFIX,
    swallow_errors=False,
    in_memory_fallback_enabled=True,
    # its headers would go on every answer (a Retry-After of up to a minute on a 202 that
    # should be polled in a second, and a window read per request): a 429 gets its own
    headers_enabled=False,
)


def init_app(app: Flask, settings: Settings) -> None:
    """Count in the settings' Redis; ``job_rate`` (e.g. "60/minute") limits POST /jobs per
    client address."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url
    # the API's own pool for DB 1: its timeouts, and it fails at once while Redis is away
    queue_db = settings.redis(QUEUE_DB, timeout=settings.redis_timeout)
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": queue_db.connection_pool}
    app.config["JOB_RATE"] = settings.job_rate
    app.config["COMPUTE_RATE"] = settings.compute_rate
    limiter.init_app(app)
    limiter._storage_dead = False  # a new app starts on its Redis, not on the last one's fallback
    app.register_error_handler(RateLimitExceeded, _too_many_requests)


def _too_many_requests(e: RateLimitExceeded) -> Response:
    """429 in the API's error shape, with Retry-After: when the breached window resets."""
    message = f"too many requests from this client ({e.description}): see Retry-After"
    resp = error_response(429, "rate_limited", message)
    breached = limiter.current_limit
    try:
        wait = math.ceil(breached.window.reset_time - time.time()) if breached else 1
    except (redis.RedisError, StorageError):  # the counters' store failed just now
        wait = 1
    resp.headers["Retry-After"] = str(max(1, wait))
    return resp


def compute_rate() -> str:
    """GETs that reach the app (an answer-cache hit does not) per client address."""
    return current_app.config["COMPUTE_RATE"]


def limit_computing(blueprint):
    """Fair use: one client's flood of uncached work (compare, indicators, long ranges)
    cannot starve the others; every route of ``blueprint`` shares one budget per client."""
    return limiter.shared_limit(compute_rate, scope="compute", methods=["GET"])(blueprint)


def job_rate() -> str:
    """POST /jobs per client address, as configured for the current app."""
    return current_app.config["JOB_RATE"]
