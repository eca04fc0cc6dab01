"""Request bodies parsed strictly: orjson, a nesting limit, and a 400 for anything else.

The standard library's parser recurses, so a body nested 1,000 deep was a 500
(``RecursionError``), and it accepts lone UTF-16 surrogates (``"\\udfff"``), which no
store or encoder downstream can take. orjson refuses surrogates, NaN and infinities and
stops at 1,024 levels; no request here needs more than a few, so deeper is refused too.
"""

from __future__ import annotations

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

MAX_DEPTH = 32


def depth_exceeds(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with strict, non-recursive parsing of request bodies."""

    def loads(self, s: str | bytes, **kwargs: object) -> object:
        try:
            value = orjson.loads(s)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        if depth_exceeds(value):
            raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
        return value
