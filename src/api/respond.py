"""Response helpers shared by every route module: fast JSON (orjson), CSV for lists, and
the pair of routes (JSON/negotiated and ``.csv``) a CSV-capable answer is declared on.

orjson writes NaN as null, so a missing cell that slipped through is still valid JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence

import orjson
from flask import Response, request
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel

from stocks.api.models import CSV_ONLY

JSON_MIMETYPE = "application/json"
CSV_MIMETYPE = "text/csv"


def json_response(payload: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON_MIMETYPE, headers=headers)


def wants_csv(fmt: str | None = None) -> bool:
    """``format=csv`` wins; otherwise an Accept header preferring text/csv over JSON."""
    if fmt is not None:
        return fmt == "csv"
    best = request.accept_mimetypes.best_match([JSON_MIMETYPE, CSV_MIMETYPE])
    return (
        best == CSV_MIMETYPE
        and request.accept_mimetypes[CSV_MIMETYPE] > request.accept_mimetypes[JSON_MIMETYPE]
    )


def csv_text(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """A header row, then one line per row; None is an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


def list_response(
    payload: dict, rows_key: str, columns: Sequence[str], fmt: str | None = None
) -> Response:
    """JSON ``payload`` by default; CSV of ``payload[rows_key]`` when the client asks for it."""
    if wants_csv(fmt):
        return Response(csv_text(payload[rows_key], columns), mimetype=CSV_MIMETYPE)
    return json_response(payload)


def json_and_csv_routes(
    bp: APIBlueprint,
    rule: str,
    name: str,
    answer: Callable[[BaseModel | None, BaseModel, bool], Response],
    *,
    query: type[BaseModel],
    csv_query: type[BaseModel],
    model: type[BaseModel],
    errors: dict,
    path: type[BaseModel] | None = None,
    **doc: object,
) -> None:
    """Declare ``rule`` (JSON; CSV on ``format=csv`` or ``Accept: text/csv``) and its
    twin ``rule.csv`` (CSV only), both answered by ``answer(path, query, csv)``.

    Why the twin: a client generated from the OpenAPI document parses the first content
    type a response declares, so a route that answers JSON or CSV cannot be called for
    CSV through it; the ``.csv`` route declares text/csv alone and can.
    """

    def as_json(**kwargs: BaseModel) -> Response:
        given = kwargs["query"]
        return answer(kwargs.get("path"), given, wants_csv(given.format))

    def as_csv(**kwargs: BaseModel) -> Response:
        return answer(kwargs.get("path"), kwargs["query"], True)

    for view, view_name, view_rule, query_model, body in (
        (as_json, name, rule, query, model),
        (as_csv, f"{name}_csv", f"{rule}.csv", csv_query, CSV_ONLY),
    ):
        view.__name__ = view.__qualname__ = view_name
        view.__annotations__ = {"query": query_model, "return": Response}
        if path is not None:
            view.__annotations__["path"] = path
        bp.get(view_rule, responses={200: body, **errors}, **doc)(view)
