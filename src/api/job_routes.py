"""The job API: POST a chart request, poll its status, download the image, cancel or delete.

The body is checked in two steps: the media type and JSON syntax first (415 and 400 with
their own codes, ``stocks.api.json_body``, as for every JSON body), then the pydantic
model (``job_models``). Symbols must be loaded (404 otherwise) and are
stored in canonical form, so identical requests have identical params and share a cache
key: kind, params and the data version of every series the chart reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import orjson
from flask import Response
from flask_openapi3 import APIBlueprint

from stocks import storage
from stocks.api import auth, context
from stocks.api.docs import TAG_JOBS, plain_operation_id
from stocks.api.errors import ApiError, unknown_symbol
from stocks.api.job_models import JobCreated, JobList, JobListQuery, JobPath, JobRequest, JobView
from stocks.api.limits import job_rate, limiter
from stocks.api.models import IMAGE, ErrorBody
from stocks.api.respond import json_response
from stocks.constituents import INDEX_SYMBOL

ERRORS = {400: ErrorBody, 404: ErrorBody}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _links(job_id: str) -> dict:
    return {"self": f"/jobs/{job_id}", "image": f"/jobs/{job_id}/image"}


def job_view(rec: dict) -> dict:
    return {
        "id": rec["id"],
        "kind": rec["kind"],
        "params": rec["params"],
        "status": rec["status"],
        "created_at": _iso(rec["created_at"]),
        "started_at": _iso(rec["started_at"]),
        "finished_at": _iso(rec["finished_at"]),
        "attempts": rec["attempts"],
        "error": rec["error"],
        "links": _links(rec["id"]),
    }


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "unknown_job", f"no job {job_id[:64]!r}")


bp = APIBlueprint("jobs", __name__, operation_id_callback=plain_operation_id)


def canonical_symbols(r0, raw: list[str]) -> list[str]:
    out: list[str] = []
    for text in raw:
        sym = storage.resolve_symbol(r0, text)
        if sym is None:
            raise unknown_symbol(text)
        if sym in out:
            raise ApiError(400, "invalid_parameter", f"symbol {sym} is listed twice")
        out.append(sym)
    return out


def cache_key(r0, kind: str, params: dict) -> str:
    """Same kind, params and data versions -> same key. A benchmark also reads the index:
    ^GSPC when loaded, else every loaded symbol (the equal-weight stand-in)."""
    symbols = list(params["symbols"])
    if kind == "benchmark":
        has_index = storage.resolve_symbol(r0, INDEX_SYMBOL) is not None
        symbols += [INDEX_SYMBOL] if has_index else storage.list_symbols(r0)
    versions = storage.versions(r0, symbols)
    blob = orjson.dumps([kind, params, versions], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


# --- views -------------------------------------------------------------------------------


@bp.post(
    "/jobs",
    tags=[TAG_JOBS],
    responses={202: JobCreated, 413: ErrorBody, 415: ErrorBody, 429: ErrorBody, **ERRORS},
)
# Scoped by the endpoint name it had before blueprints ("create_job", now "jobs.create_job"),
# so the counter's Redis key in DB 1 is unchanged.
@limiter.shared_limit(job_rate, scope="create_job")
def create_job(body: JobRequest) -> Response:
    """Queue a chart; poll `links.self`, then download `links.image`."""
    r0 = context.prices_db()
    params = {
        "symbols": canonical_symbols(r0, body.symbols),
        "start": body.start.isoformat() if body.start else None,
        "end": body.end.isoformat() if body.end else None,
        "options": body.canonical_options(),
    }
    owner = auth.caller_owner()
    job_id = context.job_queue().put(
        body.kind, params, cache_key(r0, body.kind, params), owner=owner
    )
    payload = {"id": job_id, "status": "queued", "links": _links(job_id)}
    # Retry-After: when to poll (the limiter's own says when a 429 may try again)
    headers = {"Location": f"/jobs/{job_id}", "Retry-After": "1"}
    return json_response(payload, status=202, headers=headers)


@bp.get("/jobs/<job_id>", tags=[TAG_JOBS], responses={200: JobView, **ERRORS})
def get_job(path: JobPath) -> Response:
    rec = context.job_queue().get_job(path.job_id)
    if rec is None:
        raise _not_found(path.job_id)
    return json_response(job_view(rec))


@bp.get(
    "/jobs",
    tags=[TAG_JOBS],
    responses={200: JobList, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody},
    security=auth.SECURITY,
)
def list_jobs(query: JobListQuery) -> Response:
    """The caller's own jobs (those made with its API key), newest first; pass
    `next_cursor` back as `cursor` for the next page. A job is also reached by its id
    alone, which is unguessable: whoever holds it may read or delete the job."""
    owner = auth.require_caller_owner()
    recs, next_cursor = context.job_queue().list_jobs(
        query.status, query.limit, query.cursor, owner=owner
    )
    return json_response({"jobs": [job_view(rec) for rec in recs], "next_cursor": next_cursor})


@bp.delete(
    "/jobs/<job_id>",
    tags=[TAG_JOBS],
    responses={200: JobView, 204: None, 409: ErrorBody, **ERRORS},
)
def delete_job(path: JobPath) -> Response:
    """Cancel a queued job (200); remove a finished, failed or cancelled one (204)."""
    outcome = context.job_queue().cancel_or_delete(path.job_id)
    if outcome == "missing":
        raise _not_found(path.job_id)
    if outcome == "running":
        message = "a running job cannot be cancelled"
        raise ApiError(409, "job_running", message, job_status="running")
    if outcome == "deleted":
        return Response(status=204)
    rec = context.job_queue().get_job(path.job_id)
    return json_response(job_view(rec) if rec else {"id": path.job_id, "status": "cancelled"})


@bp.get(
    "/jobs/<job_id>/image",
    tags=[TAG_JOBS],
    summary="the chart (PNG or SVG) once the job has finished",
    responses={200: IMAGE, 409: ErrorBody, 410: ErrorBody, **ERRORS},
)
def get_image(path: JobPath) -> Response:
    rec = context.job_queue().get_job(path.job_id)
    if rec is None:
        raise _not_found(path.job_id)
    status = rec["status"]
    if status in ("queued", "running"):
        raise ApiError(409, "job_not_ready", f"the job is {status}", job_status=status)
    if status != "finished":
        message = rec["error"] or f"the job is {status}"
        raise ApiError(409, f"job_{status}", message, job_status=status, job_error=rec["error"])
    data = context.job_queue().get_image(path.job_id)
    if data is None:  # finished, but its image made room for newer ones (the image budget)
        message = (
            "the image was dropped to keep chart storage within its budget; "
            "post the same request again to draw it"
        )
        raise ApiError(410, "image_dropped", message, job_status=status)
    content_type = rec.get("content_type") or "application/octet-stream"
    return Response(data, mimetype=content_type, headers={"Cache-Control": "private, max-age=3600"})
