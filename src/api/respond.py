"""Response helpers shared by every route module: fast JSON (orjson) and CSV for lists.

orjson writes NaN as null, so a missing cell that slipped through is still valid JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

import orjson
from flask import Response, request

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
