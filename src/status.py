"""``stocks status``: what an operator checks first, read from Redis in a few round trips.

Redis (version, memory against ``maxmemory``, chart images against their budget), the
data (tickers, sources, date range, last load), the queue (waiting, held), jobs by
status over the last hour, live workers with the job each runs and for how long, and
stale workers (silent for ``worker_timeout``: the reaper clears them and puts their jobs
back). A plain table for a terminal, ``--json`` for scripts; exit 0 when healthy, 1 when
something needs attention (each such thing named under "attention"). The Redis URL is
shown masked: no password is ever printed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import orjson
import redis

from stocks import storage
from stocks.config import Settings, mask_url
from stocks.jobs import STATUSES, JobQueue, new_job_id
from stocks.keys import (
    ALL_JOBS_KEY,
    IMAGE_BYTES_KEY,
    IMAGES_DB,
    JOBS_DB,
    STOCKS_DB,
    job_key,
)

RECENT_SECONDS = 3600
RECENT_SCAN_LIMIT = 20_000  # newest job ids read for "the last hour" (a bounded scan)
MEMORY_WARN = 0.9  # share of maxmemory (or of the image budget) that needs attention
MB = 1024 * 1024


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def client(settings: Settings, db: int) -> redis.Redis:
    """The API's short-timeout client (``redis_timeout``), not a worker's patient one: a
    Redis that hangs makes ``status`` say so in seconds instead of hanging with it."""
    return settings.redis(db, timeout=settings.redis_timeout)


def queue(settings: Settings) -> JobQueue:
    return JobQueue(settings, "status", timeout=settings.redis_timeout)


def redis_part(settings: Settings) -> dict[str, Any]:
    r = client(settings, STOCKS_DB)
    server, memory = r.info("server"), r.info("memory")
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    image_bytes = int(client(settings, IMAGES_DB).get(IMAGE_BYTES_KEY) or 0)
    return {
        "url": mask_url(settings.redis_url),
        "version": server.get("redis_version", "?"),
        "used_memory": used,
        "maxmemory": limit,  # 0: no limit
        "image_bytes": image_bytes,
        "image_budget": queue(settings).kept_image_budget(),  # the workers' own
    }


def data_part(settings: Settings) -> dict[str, Any]:
    r = client(settings, STOCKS_DB)
    metas = storage.get_metas(r, storage.list_symbols(r)).values()
    firsts = [m["first_date"] for m in metas if m.get("first_date")]
    lasts = [m["last_date"] for m in metas if m.get("last_date")]
    loads = [m["loaded_at"] for m in metas if m.get("loaded_at")]
    return {
        "tickers": len(metas),
        "sources": dict(Counter(m.get("source") or "unknown" for m in metas)),
        "first_date": min(firsts, default=None),
        "last_date": max(lasts, default=None),
        "last_loaded_at": max(loads, default=None),
    }


def recent_jobs(settings: Settings, now: float) -> dict[str, int]:
    """Jobs created in the last hour by status: the newest ids of ``jobs:all`` (ids start
    with their creation time, so the index is in age order)."""
    r = client(settings, JOBS_DB)
    since = new_job_id(now - RECENT_SECONDS)[:14]
    ids = r.zrevrangebylex(ALL_JOBS_KEY, "+", f"[{since}", 0, RECENT_SCAN_LIMIT)
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(_text(job_id)), "status")
    counts = Counter(_text(s) for s in pipe.execute() if s)
    return {str(s): counts.get(str(s), 0) for s in STATUSES}


def workers_part(settings: Settings) -> dict[str, Any]:
    view = queue(settings).workers()
    pipe = client(settings, JOBS_DB).pipeline(transaction=False)
    for worker in view.workers:
        for job_id in worker.held:
            pipe.hmget(job_key(job_id), "kind", "started_at", "status")
    records = iter(pipe.execute())
    alive, stale = [], []
    for worker in view.workers:
        jobs = []
        for job_id in worker.held:
            kind, started, status = (_text(v) for v in next(records))
            running = round((view.now_ms - int(started)) / 1000, 1) if started else None
            jobs.append({"id": job_id, "kind": kind, "status": status, "running_s": running})
        last_beat = round((view.now_ms - worker.last_beat_ms) / 1000, 1)
        entry = {"worker": worker.worker, "last_beat_s": last_beat, "jobs": jobs}
        (alive if view.alive(worker) else stale).append(entry)
    return {
        "queue": {"waiting": view.waiting, "held": sum(len(w.held) for w in view.workers)},
        "workers": alive,
        "stale_workers": stale,
    }


def attention(report: dict[str, Any]) -> list[str]:
    """What needs an operator, in words; empty when healthy."""
    out = []
    rd, data = report["redis"], report["data"]
    if rd["maxmemory"] and rd["used_memory"] >= MEMORY_WARN * rd["maxmemory"]:
        out.append(f"Redis memory at {rd['used_memory'] / rd['maxmemory']:.0%} of maxmemory")
    if rd["image_budget"] and rd["image_bytes"] > rd["image_budget"]:
        out.append("chart images over their budget")
    if data["tickers"] == 0:
        out.append("no prices loaded (stocks load)")
    if report["queue"]["waiting"] and not report["workers"]:
        out.append(f"{report['queue']['waiting']} job(s) waiting and no live worker")
    if report["stale_workers"]:
        names = ", ".join(w["worker"] for w in report["stale_workers"])
        out.append(f"stale worker(s), to be reaped: {names}")
    return out


def collect(settings: Settings, now: float | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"redis": redis_part(settings), "data": data_part(settings)}
    report.update(workers_part(settings))
    report["jobs_last_hour"] = recent_jobs(settings, time.time() if now is None else now)
    report["attention"] = attention(report)
    report["healthy"] = not report["attention"]
    return report


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB"


def render(report: dict[str, Any]) -> str:
    """The report as aligned ``section  name  value`` rows for a terminal."""
    rd, data, queue = report["redis"], report["data"], report["queue"]
    maxmem = _mb(rd["maxmemory"]) if rd["maxmemory"] else "no limit"
    sources = ", ".join(f"{k} {v}" for k, v in sorted(data["sources"].items())) or "-"
    rows = [
        ("redis", "server", f"{rd['url']} (Redis {rd['version']})"),
        ("", "memory", f"{_mb(rd['used_memory'])} of {maxmem}"),
        ("", "images", f"{_mb(rd['image_bytes'])} of {_mb(rd['image_budget'])} budget"),
        ("data", "tickers", f"{data['tickers']} ({sources})"),
        ("", "dates", f"{data['first_date'] or '-'} to {data['last_date'] or '-'}"),
        ("", "last load", data["last_loaded_at"] or "-"),
        ("queue", "waiting", str(queue["waiting"])),
        ("", "held", str(queue["held"])),
        ("jobs (1 h)", "", ", ".join(f"{k} {v}" for k, v in report["jobs_last_hour"].items())),
        ("workers", "alive", str(len(report["workers"]))),
    ]
    for w in report["workers"]:
        doing = "; ".join(f"{j['kind']} {j['id'][:14]}.. for {j['running_s']} s" for j in w["jobs"])
        rows.append(("", w["worker"], doing or "idle"))
    for w in report["stale_workers"]:
        rows.append(("stale", w["worker"], f"silent {w['last_beat_s']} s, holds {len(w['jobs'])}"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows]
    if report["attention"]:
        lines.append("")
        lines += [f"ATTENTION: {item}" for item in report["attention"]]
    else:
        lines += ["", "healthy"]
    return "\n".join(lines)


def why_not(url: str, error: BaseException) -> str:
    """What went wrong reaching Redis, in words an operator can act on."""
    where, detail = mask_url(url), mask_url(str(error))
    text = detail.lower()
    if isinstance(error, redis.AuthenticationError) or "auth" in text:
        return (
            f"Redis at {where} refused this client: a password is missing or wrong "
            f"(REDIS_URL must carry the right one): {detail}"
        )
    return f"Redis at {where} is unreachable: {detail}"


def main(settings: Settings, as_json: bool = False) -> int:
    """``stocks status``: 0 healthy, 1 something needs attention (or Redis is unreachable)."""
    try:
        report = collect(settings)
    except (redis.RedisError, OSError) as e:
        report = {"healthy": False, "attention": [why_not(settings.redis_url, e)]}
        if not as_json:
            print(f"ATTENTION: {report['attention'][0]}", file=sys.stderr)
            return 1
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(report))
    return 0 if report["healthy"] else 1
