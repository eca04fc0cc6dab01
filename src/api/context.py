"""What views need from the app they serve: its settings, Redis clients, the job queue.

``create_app`` puts them on the app once; views reach them through these accessors, so
no module holds a client or a setting of its own. The API's Redis clients wait at most
``redis_timeout`` s for an answer (then the view answers 503), unlike a worker's.
"""

from __future__ import annotations

import redis
from flask import Flask, current_app

from stocks.config import Settings
from stocks.jobs import JobQueue
from stocks.keys import STOCKS_DB

EXTENSION = "stocks"


def init_app(app: Flask, settings: Settings) -> None:
    app.config["SETTINGS"] = settings
    app.extensions[EXTENSION] = JobQueue(settings, "api", timeout=settings.redis_timeout)


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def job_queue() -> JobQueue:
    return current_app.extensions[EXTENSION]


def prices_db(app: Flask | None = None) -> redis.Redis:
    """The client for DB 0 (prices), with the API's timeout."""
    s: Settings = (app or current_app).config["SETTINGS"]
    return s.redis(STOCKS_DB, timeout=s.redis_timeout)
