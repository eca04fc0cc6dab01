"""The Flask application factory: every part the API is made of, wired in one place.

Blueprints (one per route module), the JSON error shape, the encoded-answer cache in
front of Flask, the per-app analytics caches, ``/metrics`` and the job rate limit.
"""

from __future__ import annotations

import numpy as np
from flask import Flask
from flask_openapi3 import Info, OpenAPI

from stocks import storage
from stocks.api import (
    analytics_routes,
    answer_cache,
    auth,
    job_routes,
    limits,
    metrics_routes,
    price_routes,
    service_routes,
)
from stocks.api.docs import order_tags
from stocks.api.errors import register_error_handlers, validation_error_response
from stocks.api.models import ErrorBody
from stocks.config import env_int, env_str, redis_url

MAX_BODY_BYTES = 64 * 1024
BLUEPRINTS = (
    price_routes.bp,
    service_routes.bp,
    analytics_routes.bp,
    job_routes.bp,
    metrics_routes.bp,
)


def create_app(config: dict | None = None) -> Flask:
    app = OpenAPI(
        __name__,
        info=Info(title="Stocks API", version="0.1.0"),
        security_schemes=auth.SECURITY_SCHEME,
        validation_error_status=400,
        validation_error_model=ErrorBody,
        validation_error_callback=validation_error_response,
        doc_prefix="/docs",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.config.update(config or {})

    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_api(blueprint)
    order_tags(app)

    # Sizes and limits (the environment is read here, once per app).
    answer_cache.init_app(app, max_bytes=env_int("STOCKS_API_CACHE_MB", 128) * 1024 * 1024)
    analytics_routes.init_app(
        app,
        series_size=env_int("STOCKS_ANALYTICS_CACHE", 128),
        indicator_size=env_int("STOCKS_INDICATOR_CACHE", 32),
    )
    limits.init_app(
        app, storage_uri=redis_url(), job_rate=env_str("STOCKS_JOB_RATE", limits.DEFAULT_JOB_RATE)
    )
    storage.days_to_iso(np.zeros(1, dtype=np.int32))  # build the date table before the fork
    return app
