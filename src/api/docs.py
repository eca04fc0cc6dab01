"""What the blueprints share in the OpenAPI document: its tags, how operations are named,
and the answers every request body may get.

The tags are listed here, in the order the Swagger UI shows them; ``TAGS`` keeps that
order whatever order the blueprints are registered in.
"""

from __future__ import annotations

from flask_openapi3 import OpenAPI, Tag
from flask_openapi3.models import Operation
from flask_openapi3.utils import get_operation_id_for_path, get_responses

from stocks.api.models import ErrorBody

TAG_WRITES = Tag(name="writes", description="add, replace or remove one bar (API key)")
TAG_PROBES = Tag(name="probes", description="liveness and readiness")
TAG_PRICES = Tag(name="prices", description="tickers, search and daily prices")
TAG_MARKET = Tag(name="market", description="every ticker on one day, and the movers")
TAG_ANALYTICS = Tag(
    name="analytics", description="statistics, period changes, indicators, comparisons"
)
TAG_JOBS = Tag(name="jobs", description="chart jobs: request, poll, download")
TAGS = (TAG_WRITES, TAG_PROBES, TAG_PRICES, TAG_MARKET, TAG_ANALYTICS, TAG_JOBS)


def plain_operation_id(*, name: str, path: str, method: str) -> str:
    """``<view>_<path>_<method>``, without the blueprint's name (flask-openapi3 adds it by
    default), so operation ids stay what clients generated from the document know."""
    return get_operation_id_for_path(name=name, path=path, method=method)


def order_tags(app: OpenAPI) -> None:
    """List the document's tags in ``TAGS`` order (flask-openapi3 keeps first-seen order)."""
    app.tags.sort(key=lambda tag: TAGS.index(tag) if tag in TAGS else len(TAGS))


def document_body_errors(app: OpenAPI) -> None:
    """Every operation that takes a body documents 413 and 415: ``MAX_CONTENT_LENGTH`` and
    ``stocks.api.json_body`` answer them for any route, whatever its own list says."""
    made = Operation()
    get_responses({"413": ErrorBody, "415": ErrorBody}, app.components_schemas, made)
    for item in app.paths.values():
        for operation in (item.post, item.put, item.patch):
            if operation is not None and operation.requestBody is not None:
                for status, response in made.responses.items():
                    operation.responses.setdefault(status, response)
