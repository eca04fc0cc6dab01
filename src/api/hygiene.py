"""What every answer does alike, whatever the route: no redirects, OPTIONS, no sniffing.

Werkzeug answers a path it could rewrite (``//`` merged, a trailing slash added) with a
``308`` whose HTML body and ``Location`` are built from the client's ``Host`` header, and
Flask sends it past the error handlers. Here slashes are never merged, and any routing
redirect left is the JSON 404 of an unknown path.

A query parameter given twice (``limit=5&limit=7``) is a 400 naming it: flask-openapi3
would take the first silently. No route takes a list as repeated parameters (lists are
comma-separated: ``symbols=AAPL,MSFT``), so this holds for every route.

Flask answers ``OPTIONS`` by itself with an empty ``200 text/html``; a client asking what
a route allows gets ``204`` with ``Allow`` instead (an unknown route stays a JSON 404).
A ``204`` or ``304`` has no body, so no ``Content-Type`` (Flask gives every response
one, ``text/html`` by default). ``X-Content-Type-Options: nosniff`` keeps a browser from
running an image or a CSV as something else. (Answers of the answer cache add it
themselves: they skip these hooks.)
"""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from stocks.api.errors import ApiError

NOSNIFF = ("X-Content-Type-Options", "nosniff")


def _no_redirects() -> None:
    if isinstance(request.routing_exception, RequestRedirect):
        raise NotFound()


def _no_repeated_parameters() -> None:
    if not request.query_string or request.routing_exception is not None:
        return
    for name, values in request.args.lists():
        if len(values) > 1:
            reason = f"given {len(values)} times: give it once"
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name[:64]}: {reason}",
                errors=[{"field": name[:64], "reason": reason}],
            )


def _options_no_content(resp: Response) -> Response:
    if request.method == "OPTIONS" and resp.status_code == 200 and "Allow" in resp.headers:
        answer = Response(status=204)
        answer.headers["Allow"] = resp.headers["Allow"]
        return answer
    return resp


def _no_body_no_type(resp: Response) -> Response:
    if resp.status_code in (204, 304):
        resp.headers.pop("Content-Type", None)
    return resp


def _nosniff(resp: Response) -> Response:
    resp.headers.setdefault(*NOSNIFF)
    return resp


def init_app(app: Flask) -> None:
    app.url_map.merge_slashes = False
    app.before_request(_no_redirects)  # before the app's other hooks (call this first)
    app.before_request(_no_repeated_parameters)
    app.after_request(_nosniff)  # registered first: Flask runs it last
    app.after_request(_no_body_no_type)  # runs after the later hooks (they may make a 204)
    app.after_request(_options_no_content)
