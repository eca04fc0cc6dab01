"""Rate limits (Flask-Limiter), counted in Redis (DB 1) so every API process shares the count.

One module-level ``limiter`` so views can declare their limits where they are defined;
``init_app`` binds it to an app and its Redis (the app-factory pattern of Flask-Limiter's
docs). Its storage belongs to the limiter, not the app: in one process the last app
built decides where counts go (the server builds one app per process). If Redis fails or
is full, counting goes on in each process's memory until Redis answers again: requests are
never let through unlimited, and reads go on while a full Redis refuses the counters.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from stocks.config import Settings
from stocks.keys import QUEUE_DB, RATE_LIMIT_PREFIX

limiter = Limiter(
    get_remote_address,
    key_prefix=RATE_LIMIT_PREFIX,
    swallow_errors=False,
    in_memory_fallback_enabled=True,
    headers_enabled=True,
)


def init_app(app: Flask, settings: Settings) -> None:
    """Count in the settings' Redis; ``job_rate`` (e.g. "60/minute") limits POST /jobs per
    client address."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {
        "db": QUEUE_DB,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
    }
    app.config["JOB_RATE"] = settings.job_rate
    app.config["COMPUTE_RATE"] = settings.compute_rate
    # Flask runs after_request hooks last-registered first, so these two sandwich the
    # limiter's own: it puts its Retry-After (when the window resets, up to a minute) on
    # every answer, which tells a client polling a 202 to wait that long.
    app.after_request(_own_retry_after_only)
    limiter.init_app(app)
    limiter._storage_dead = False  # a new app starts on its Redis, not on the last one's fallback
    app.after_request(_remember_own_retry_after)


def _remember_own_retry_after(resp: Response) -> Response:
    g.own_retry_after = resp.headers.get("Retry-After")
    return resp


def _own_retry_after_only(resp: Response) -> Response:
    """Keep the limiter's Retry-After on a 429 only; elsewhere the view's own, or none."""
    if resp.status_code != 429:
        own = g.pop("own_retry_after", None)
        if own is None:
            resp.headers.pop("Retry-After", None)
        else:
            resp.headers["Retry-After"] = own
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
