"""What every answer does alike, whatever the route: OPTIONS, and content sniffing off.

Flask answers ``OPTIONS`` by itself with an empty ``200 text/html``; a client asking what
a route allows gets ``204`` with ``Allow`` instead (an unknown route stays a JSON 404).
``X-Content-Type-Options: nosniff`` keeps a browser from running an image or a CSV as
something else. (Answers of the answer cache add it themselves: they skip these hooks.)
"""

from __future__ import annotations

from flask import Flask, Response, request

NOSNIFF = ("X-Content-Type-Options", "nosniff")


def _options_no_content(resp: Response) -> Response:
    if request.method == "OPTIONS" and resp.status_code == 200 and "Allow" in resp.headers:
        answer = Response(status=204)
        del answer.headers["Content-Type"]  # no body, no type
        answer.headers["Allow"] = resp.headers["Allow"]
        return answer
    return resp


def _nosniff(resp: Response) -> Response:
    resp.headers.setdefault(*NOSNIFF)
    return resp


def init_app(app: Flask) -> None:
    app.after_request(_nosniff)  # registered first: Flask runs it last
    app.after_request(_options_no_content)
