"""One JSON error shape for every failure: {"error": {"status", "code", "message", ...}}.

Routes raise ``ApiError``; Werkzeug's HTTP errors (404 route, 405, 413, 415), pydantic
validation failures and an unreachable or contended Redis (503) are mapped to the same
shape, and anything unexpected becomes a logged 500 with no traceback in the body.
"""

from __future__ import annotations

import logging
import re

import orjson
import redis
from flask import Flask, Response
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from stocks import storage

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: object):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def unknown_symbol(raw: str) -> ApiError:
    """The 404 for a symbol that is not stored, naming it as the caller typed it."""
    return ApiError(404, "unknown_symbol", f"unknown symbol {raw!r}", symbol=raw)


def error_body(status: int, code: str, message: str, **details: object) -> bytes:
    return orjson.dumps({"error": {"status": status, "code": code, "message": message, **details}})


def error_response(status: int, code: str, message: str, **details: object) -> Response:
    body = error_body(status, code, message, **details)
    return Response(body, status=status, mimetype="application/json")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    507: "storage_full",
    501: "not_implemented",
}


def http_error_code(status: int) -> str:
    """The error body's ``code`` for a plain HTTP status."""
    return _HTTP_CODES.get(status, "http_error")


# pydantic names an allowed enum member by its repr: <Status.QUEUED: 'queued'>
_ENUM_REPR = re.compile(r"<[A-Za-z_][\w.]*: ('[^']*'|-?[\d.]+)>")


def plain_reason(msg: str) -> str:
    """A validation message with enum members as the values a client sends ('queued')."""
    return _ENUM_REPR.sub(r"\1", msg)


def validation_error_response(e: ValidationError) -> Response:
    """pydantic failures → 400 naming each bad field and why."""
    problems = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or None,
            "reason": plain_reason(err["msg"]),
        }
        for err in e.errors(include_url=False, include_input=False)
    ]
    first = problems[0] if problems else {"field": None, "reason": "invalid input"}
    message = f"{first['field']}: {first['reason']}" if first["field"] else first["reason"]
    return error_response(400, "invalid_parameter", message, errors=problems)


def is_out_of_memory(e: redis.RedisError) -> bool:
    """Redis over ``maxmemory`` refused a write (inside a script it comes as a script error)."""
    return isinstance(e, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(e)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Response:
        return error_response(e.status, e.code, e.message, **e.details)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        code = http_error_code(status)
        message = e.description or e.name
        if status == 404:
            message = "no such route"
        resp = error_response(status, code, message)
        allowed = getattr(e, "valid_methods", None)
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(redis.RedisError)
    def _redis_down(e: redis.RedisError) -> Response:
        if is_out_of_memory(e):
            # noeviction: Redis refuses new writes rather than drop stored prices, and a
            # script refused at its first write has changed nothing
            message = "storage is full: nothing was stored; try again later"
            resp = error_response(507, "storage_full", message)
            resp.headers["Retry-After"] = "60"
            return resp
        resp = error_response(503, "redis_unavailable", "the data store does not answer")
        resp.headers["Retry-After"] = "2"
        return resp

    @app.errorhandler(storage.SeriesMissing)
    def _series_missing(e: storage.SeriesMissing) -> Response:
        resp = error_response(503, "series_missing", str(e), symbol=e.symbol)
        resp.headers["Retry-After"] = "60"
        return resp

    @app.errorhandler(storage.WriteContention)
    def _write_busy(e: storage.WriteContention) -> Response:
        resp = error_response(503, "busy", str(e))
        resp.headers["Retry-After"] = "1"
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
