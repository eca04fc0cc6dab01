"""The Flask application factory: settings, error shape, docs and the route modules."""

from __future__ import annotations

from flask import Flask
from flask_openapi3 import Info, OpenAPI

from stocks.api import analytics, job_routes, metrics, page, prices
from stocks.api.errors import register_error_handlers, validation_error_response
from stocks.api.models import ErrorBody

MAX_BODY_BYTES = 64 * 1024


def create_app(config: dict | None = None) -> Flask:
    app = OpenAPI(
        __name__,
        info=Info(title="Stocks API", version="0.1.0"),
        validation_error_status=400,
        validation_error_model=ErrorBody,
        validation_error_callback=validation_error_response,
        doc_prefix="/docs",
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    if config:
        app.config.update(config)
    register_error_handlers(app)
    prices.register(app)
    analytics.register(app)
    job_routes.register(app)
    metrics.register(app)
    page.register(app)
    return app
