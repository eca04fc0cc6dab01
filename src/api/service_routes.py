"""The service routes: API index (``/``), probes (``/health``, ``/ready``) and the docs.

``/openapi.json`` serves the generated document (built once per app: routes do not
change after start) and ``/docs`` redirects to the Swagger UI; neither is documented.
"""

from __future__ import annotations

from collections import Counter

import orjson
import redis
from flask import Response, current_app, redirect
from flask_openapi3 import APIBlueprint

from stocks import storage
from stocks.api import context
from stocks.api.docs import TAG_PRICES, TAG_PROBES, plain_operation_id
from stocks.api.errors import error_response
from stocks.api.models import ErrorBody, IndexBody, Status
from stocks.api.respond import JSON_MIMETYPE, json_response

bp = APIBlueprint("service", __name__, operation_id_callback=plain_operation_id)


@bp.get("/health", tags=[TAG_PROBES], responses={200: Status})
def health():
    return json_response({"status": "ok"})


@bp.get("/ready", tags=[TAG_PROBES], responses={200: Status, 503: ErrorBody})
def ready():
    """Ready when Redis answers and every listed ticker's series is whole (a lost or evicted
    one is named: it must be loaded again)."""
    r = context.prices_db()
    try:
        count = storage.count_symbols(r)
        missing = storage.missing_series(r) if count else []
    except redis.RedisError:
        return not_ready("redis_unavailable", "Redis does not answer")
    if count == 0:
        return not_ready("no_data", "no prices loaded yet", tickers=0)
    if missing:
        message = f"{len(missing)} listed tickers have lost their data: load them again"
        return not_ready("series_missing", message, symbols=missing[:20])
    return json_response({"status": "ready", "tickers": count})


def not_ready(code: str, message: str, **details: object) -> Response:
    resp = error_response(503, code, message, **details)
    resp.headers["Retry-After"] = "5"
    return resp


@bp.get("/", tags=[TAG_PRICES], summary="API index and data sources", responses={200: IndexBody})
def index():
    r = context.prices_db()
    metas = storage.get_metas(r, storage.list_symbols(r))
    sources = Counter(m.get("source") or "unknown" for m in metas.values())
    return json_response(
        {
            "name": "Stocks API",
            "tickers": len(metas),
            "sources": dict(sorted(sources.items())),
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "tickers": "/tickers",
                "health": "/health",
                "ready": "/ready",
            },
        }
    )


@bp.route("/openapi.json", methods=["GET"])
def openapi_json():
    body = current_app.extensions.get("openapi_json")
    if body is None:
        body = current_app.extensions["openapi_json"] = orjson.dumps(current_app.api_doc)
    return Response(body, mimetype=JSON_MIMETYPE)


@bp.route("/docs", methods=["GET"])
def docs_redirect():
    """/docs opens the Swagger UI; its JS and CSS come from the app (/docs/swagger/...)."""
    return redirect("/docs/swagger", code=302)
