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
    context,
    hygiene,
    job_routes,
    limits,
    market_routes,
    metrics_routes,
    observe,
    page,
    price_routes,
    service_routes,
)
from stocks.api.docs import document_body_errors, order_tags
from stocks.api.errors import register_error_handlers, validation_error_response
from stocks.api.json_body import JSONBodyRequest, StrictJSONProvider
from stocks.api.models import ErrorBody
from stocks.config import Settings

MAX_BODY_BYTES = 64 * 1024
BLUEPRINTS = (
    price_routes.bp,
    market_routes.bp,
    service_routes.bp,
    analytics_routes.bp,
    job_routes.bp,
    metrics_routes.bp,
)
COMPUTING = (price_routes.bp, market_routes.bp, analytics_routes.bp)  # not probes, metrics, jobs
for _blueprint in COMPUTING:
    limits.limit_computing(_blueprint)


def create_app(settings: Settings, config: dict | None = None) -> Flask:
    """The app for ``settings`` (read once by whoever starts it); ``config``: Flask's own."""
    app = OpenAPI(
        __name__,
        static_folder=None,  # the page's assets are served under /ui only (api/page.py)
        info=Info(title="Stocks API", version="0.1.0"),
        security_schemes=auth.SECURITY_SCHEME,
        validation_error_status=400,
        validation_error_model=ErrorBody,
        validation_error_callback=validation_error_response,
        doc_prefix="/docs",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.request_class = JSONBodyRequest  # a body that is not JSON: 415 on every route
    app.json = StrictJSONProvider(app)
    app.json.sort_keys = False
    app.config.update(config or {})
    context.init_app(app, settings)

    register_error_handlers(app)
    hygiene.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_api(blueprint)
    order_tags(app)
    document_body_errors(app)
    page.register(app)

    answer_cache.init_app(app, max_bytes=settings.api_cache_mb * 1024 * 1024)
    analytics_routes.init_app(
        app, series_size=settings.analytics_cache, indicator_size=settings.indicator_cache
    )
    metrics_routes.init_app(app)
    limits.init_app(app, settings)
    # outermost: cache hits are counted and logged too
    app.wsgi_app = observe.RequestObserver(app.wsgi_app, app.url_map)
    app.answer_now = app.wsgi_app.answer_now  # what stocks.api.server's event loop asks first
    storage.days_to_iso(np.zeros(1, dtype=np.int32))  # build the date table before the fork
    return app
