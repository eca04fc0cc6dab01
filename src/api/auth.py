"""Bearer API keys for write routes, from the settings (``STOCKS_API_KEYS``).

STOCKS_API_KEYS holds comma-separated keys (a secret: environment only, never in code).
Unset or empty means writes are switched off: 403 for everyone. Otherwise a request
needs ``Authorization: Bearer <key>`` with one of the keys, else 401 with a
``WWW-Authenticate`` challenge. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from flask import abort, request

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


def require_write_key() -> None:
    """Abort with 403 (writes disabled) or 401 (no or wrong key) unless the key is valid."""
    keys = api_keys()
    if not keys:
        abort(error_response(403, "writes_disabled", f"writes are disabled: {KEYS_ENV} is not set"))
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not key_is_valid(token, keys):
        resp = error_response(
            401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>"
        )
        resp.headers["WWW-Authenticate"] = 'Bearer realm="stocks"'
        abort(resp)
