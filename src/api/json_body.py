"""Request bodies parsed strictly, in one place for every route that takes a JSON body.

flask-openapi3 reads a declared body with ``request.get_json(silent=True)``: a body of
another media type was ``None``, then a 400 about the model ("Input should be a valid
dictionary"), and a gzipped body reached the parser as bytes that are not UTF-8. So the
request decides first: 415 unless the body is ``application/json`` with no
``Content-Encoding``. This runs where the body is read, after the route's own checks (the
API key of a write before its body).

The standard library's parser recurses, so a body nested 1,000 deep was a 500
(``RecursionError``), and it accepts lone UTF-16 surrogates (``"\\udfff"``), which no
store or encoder downstream can take. orjson refuses surrogates, NaN and infinities and
stops at 1,024 levels; no request here needs more than a few, so deeper is refused too.
orjson keeps the last of duplicate keys silently (``"kind"`` twice was the second kind),
so they are refused as well.
"""

from __future__ import annotations

import json

import orjson
from flask import Request
from flask.json.provider import DefaultJSONProvider

from stocks.api.errors import ApiError

MAX_DEPTH = 32
JSON_MIMETYPE = "application/json"


def invalid_json(message: str) -> ApiError:
    return ApiError(400, "invalid_json", message)


def unsupported(message: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", message)


def object_keys(value: object, limit: int = MAX_DEPTH) -> int | None:
    """How many keys the objects in ``value`` hold in all; None when containers nest
    deeper than ``limit`` (iterative: no recursion to blow)."""
    keys = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            keys += len(item)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return None
        stack.extend((child, depth + 1) for child in children)
    return keys


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise invalid_json(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return value


def refuse_duplicate_keys(text: str | bytes, keys: int) -> None:
    """400 naming a key an object of ``text`` repeats; ``keys``: how many orjson kept.

    Outside strings a colon ends each key, so a text with no more colons than keys kept
    has no duplicate: one C-speed count settles the usual body. Only a body with colons
    inside its strings (or a duplicate) is parsed again, by the standard library, whose
    hook sees every pair (its recursion is safe: the depth is checked by then).
    """
    colons = text.count(b":" if isinstance(text, bytes) else ":")
    if colons > keys:
        json.loads(text, object_pairs_hook=_unique_pairs)


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with strict, non-recursive parsing of request bodies."""

    def loads(self, s: str | bytes, **kwargs: object) -> object:
        try:
            value = orjson.loads(s)
        except orjson.JSONDecodeError as e:
            if isinstance(s, bytes) and not is_utf8(s):
                raise invalid_json("the body is not valid UTF-8") from None
            raise invalid_json(f"the body is not valid JSON: {e}") from None
        keys = object_keys(value)
        if keys is None:
            raise invalid_json(f"the body nests deeper than {MAX_DEPTH} levels")
        refuse_duplicate_keys(s, keys)
        return value


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class JSONBodyRequest(Request):
    """Flask's request whose JSON body is refused with 415 unless it can be read as JSON."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        encoding = self.headers.get("Content-Encoding", "").strip()
        if encoding and encoding.lower() != "identity":
            raise unsupported(
                f"Content-Encoding {encoding[:40]} is not supported: send the body uncompressed"
            )
        if self.mimetype != JSON_MIMETYPE:
            raise unsupported(f"send the body as {JSON_MIMETYPE}")
        # parse errors are ApiErrors (400), which even a silent caller gets
        return super().get_json(force=force, silent=silent, cache=cache)
