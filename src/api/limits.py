"""Rate limits (Flask-Limiter), counted in Redis (DB 1) so every API process shares the count.

One module-level ``limiter`` so views can declare their limits where they are defined;
``init_app`` binds it to an app and its Redis (the app-factory pattern of Flask-Limiter's
docs). Its storage belongs to the limiter, not the app: in one process the last app
built decides where counts go (the server builds one app per process). If Redis
fails, requests pass (a job's enqueue itself then answers 503).
"""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from stocks.config import QUEUE_DB

DEFAULT_JOB_RATE = "120/minute"

limiter = Limiter(
    get_remote_address,
    storage_options={"db": QUEUE_DB},
    key_prefix="ratelimit",
    swallow_errors=True,
    headers_enabled=True,
)


def init_app(app: Flask, storage_uri: str, job_rate: str) -> None:
    """Count in ``storage_uri``; ``job_rate`` (e.g. "60/minute") limits POST /jobs per client."""
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri
    app.config["JOB_RATE"] = job_rate
    limiter.init_app(app)


def job_rate() -> str:
    """POST /jobs per client address, as configured for the current app."""
    return current_app.config["JOB_RATE"]
