"""The web page for people: ``/`` hands a browser ``static/index.html``, everyone else JSON.

A client whose Accept header ranks ``text/html`` above ``application/json`` is a browser
(Chrome, Firefox and Safari all send ``text/html,...,*/*;q=0.8``); ``*/*`` (curl,
requests), ``application/json`` or no Accept header at all keep the JSON index, so no
script that reads ``/`` today breaks. The page is plain HTML, CSS and JavaScript served
from the package (``/ui/...``): nothing from a CDN, no build step, and it works offline.
It only calls the public JSON API, like any other client.

The page gets a strict Content-Security-Policy (scripts, styles and images from this
origin only), a second line of defence behind the page code never writing data as HTML.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, request

STATIC_DIR = Path(__file__).with_name("static")
URL_PREFIX = "/ui"
HTML = "text/html"
JSON = "application/json"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

assets = Blueprint("page", __name__, static_folder=STATIC_DIR, static_url_path=URL_PREFIX)


def wants_page() -> bool:
    """True for a browser's navigation: text/html strictly preferred to JSON."""
    accept = request.accept_mimetypes
    return accept[HTML] > accept[JSON]


def page_response() -> Response:
    body = (STATIC_DIR / "index.html").read_bytes()
    resp = Response(body, mimetype=HTML)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _page_for_browsers() -> Response | None:
    """Before any view: a browser asking for ``/`` gets the page, not the JSON index."""
    if request.path == "/" and request.method in ("GET", "HEAD") and wants_page():
        return page_response()
    return None


def _vary_on_accept(resp: Response) -> Response:
    """``/`` answers by Accept header, so caches must keep one copy per header."""
    if request.path == "/":
        resp.vary.add("Accept")
    return resp


def register(app: Flask) -> None:
    app.register_blueprint(assets)
    app.before_request(_page_for_browsers)
    app.after_request(_vary_on_accept)
