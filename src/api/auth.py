"""Bearer API keys for write routes, from the settings (``STOCKS_API_KEYS``).

STOCKS_API_KEYS holds comma-separated keys (a secret: environment only, never in code).
Unset or empty means writes are switched off: 403 for everyone. Otherwise a request
needs ``Authorization: Bearer <key>`` with one of the keys, else 401 with a
``WWW-Authenticate`` challenge. Keys are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Response, abort, request

from stocks.api import context
from stocks.api.errors import error_response

KEYS_ENV = "STOCKS_API_KEYS"
SCHEME_NAME = "bearerAuth"
SECURITY_SCHEME = {SCHEME_NAME: {"type": "http", "scheme": "bearer"}}
SECURITY = [{SCHEME_NAME: []}]


def api_keys() -> list[bytes]:
    """The current app's keys."""
    return [key.encode() for key in context.settings().api_keys]


def key_is_valid(token: str, keys: list[bytes]) -> bool:
    given = token.encode("utf-8", "surrogateescape")
    # No early exit: every key is compared, each in constant time.
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def owner_of(key: bytes) -> str:
    """The name jobs made with ``key`` are listed under: a hash, never the key itself."""
    return hashlib.sha256(b"stocks-owner:" + key).hexdigest()[:24]


def _unauthorized() -> Response:
    resp = error_response(
        401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>"
    )
    resp.headers["WWW-Authenticate"] = 'Bearer realm="stocks"'
    return resp


def _presented_key(keys: list[bytes]) -> bytes | None:
    """The valid key the request presents; None when it presents none; 401 when a wrong one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not key_is_valid(token, keys):
        abort(_unauthorized())
    return token.encode("utf-8", "surrogateescape")


def caller_owner() -> str:
    """Whose jobs a request makes: its API key's owner name, or "" without a key (such jobs
    are reached by id alone). A wrong key is a 401, never an anonymous request."""
    key = _presented_key(api_keys())
    return "" if key is None else owner_of(key)


def require_caller_owner() -> str:
    """The owner name of a request that must present a valid key (403 when there are none)."""
    keys = api_keys()
    if not keys:
        abort(error_response(403, "listing_disabled", f"listing jobs needs {KEYS_ENV} set"))
    key = _presented_key(keys)
    if key is None:
        abort(_unauthorized())
    return owner_of(key)


def require_write_key() -> None:
    """Abort with 403 (writes disabled) or 401 (no or wrong key) unless the key is valid."""
    keys = api_keys()
    if not keys:
        abort(error_response(403, "writes_disabled", f"writes are disabled: {KEYS_ENV} is not set"))
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not key_is_valid(token, keys):
        abort(_unauthorized())
