"""Prometheus figures counted by the processes themselves (requests, jobs, render times),
correct across the processes of one server or one ``stocks worker``.

Several processes serve one port (the HTTP server's workers; ``stocks worker
--concurrency N``), and a scrape reaches one of them, so each process's own counters would
jump around between scrapes. prometheus-client's multiprocess mode fixes that: every
process writes its values to memory-mapped files in one folder, and a scrape sums the
folder (``MultiProcessCollector``). ``prepare_dir`` makes that folder before any metric
exists (a fresh temporary one, or ``STOCKS_METRICS_DIR/<part>``, emptied) and exports it
(``config.export_metrics_dir``) to the processes started afterwards. Without it (tests
that build the app in-process) the values live in this process, as usual.

The metrics are made on first use (``families()``), so importing this module early
cannot fix the mode before ``prepare_dir`` ran. Figures read from Redis at scrape time
(queue depth, workers, image bytes) are not here: see ``stocks.api.metrics_routes``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from stocks.config import Settings, export_metrics_dir

# seconds: API answers (a cache hit ~0.3 ms, a 5-year series a few ms)...
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# ...and jobs (a chart 50 ms to a few s; a wait up to minutes under load)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class JobMetrics(NamedTuple):
    """The job metrics: labelled by ``kind`` (``Families.jobs``), or one kind's children
    (``Families.kind``)."""

    jobs_enqueued: Counter
    jobs_cancelled: Counter
    jobs_finished: Counter
    jobs_failed: Counter
    jobs_requeued: Counter
    queue_wait_seconds: Histogram
    run_seconds: Histogram
    render_seconds: Histogram


@dataclass(frozen=True)
class Families:
    requests: Counter
    request_seconds: Histogram
    cache_hits: Counter
    cache_misses: Counter
    jobs: JobMetrics
    _by_kind: dict[str, JobMetrics] = field(default_factory=dict, repr=False, compare=False)
    _by_request: dict[tuple, tuple[Counter, Histogram]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def all(self) -> list:
        return [self.requests, self.request_seconds, self.cache_hits, self.cache_misses,
                *self.jobs]  # fmt: skip

    def request(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        """The request counter and latency children of one answer's labels, looked up once
        (the labels are bounded: known methods, route templates, status codes)."""
        key = (method, route, status)
        found = self._by_request.get(key)
        if found is None:
            found = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(route),
            )
            self._by_request[key] = found
        return found

    def kind(self, kind: str) -> JobMetrics:
        """The job metrics of one ``kind``, looked up once (``labels()`` costs ~1 us a call,
        a hot cost for a worker draining short jobs)."""
        found = self._by_kind.get(kind)
        if found is None:
            found = JobMetrics(*(parent.labels(kind) for parent in self.jobs))
            self._by_kind[kind] = found
        return found


def families() -> Families:
    """The metrics of this process, made on first use (see the module docstring).

    Made under a lock: two threads making them at once would each get their own values
    for the same samples, and the one written last would erase the other's counts."""
    with _making:
        return _families()


_making = threading.Lock()


@cache
def _families() -> Families:

    def counter(name: str, doc: str, labels: tuple[str, ...] = ("kind",)) -> Counter:
        return Counter(name, doc, labels, registry=None)

    def histogram(name: str, doc: str, buckets: tuple, labels=("kind",)) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=None)

    return Families(
        requests=counter(
            "stocks_http_requests", "API requests answered", ("method", "route", "status")
        ),
        request_seconds=histogram(
            "stocks_http_request_duration_seconds",
            "Time to answer an API request, by route template",
            REQUEST_BUCKETS,
            ("route",),
        ),
        cache_hits=counter("stocks_answer_cache_hits", "GETs answered from the answer cache", ()),
        cache_misses=counter(
            "stocks_answer_cache_misses", "Cacheable GETs computed (then kept) by a view", ()
        ),
        jobs=JobMetrics(
            jobs_enqueued=counter("stocks_jobs_enqueued", "Chart jobs queued by the API"),
            jobs_cancelled=counter("stocks_jobs_cancelled", "Queued chart jobs cancelled"),
            jobs_finished=counter("stocks_jobs_finished", "Chart jobs finished by a worker"),
            jobs_failed=counter("stocks_jobs_failed", "Chart jobs failed by a worker"),
            jobs_requeued=counter(
                "stocks_jobs_requeued",
                "Jobs put back in the queue (at shutdown, or by the reaper)",
            ),
            queue_wait_seconds=histogram(
                "stocks_job_queue_wait_seconds", "From enqueue to a worker starting it", JOB_BUCKETS
            ),
            run_seconds=histogram(
                "stocks_job_run_seconds", "Handler time of a job, whatever its outcome", JOB_BUCKETS
            ),
            render_seconds=histogram(
                "stocks_chart_render_seconds", "Time to draw a chart that was finished", JOB_BUCKETS
            ),
        ),
    )


def prepare_dir(settings: Settings, part: str) -> Settings:
    """Make (or empty) this process tree's metrics folder and switch on multiprocess mode.

    Call it in the process that starts the others, before they start and before any
    metric is made; returns ``settings`` naming the folder. A temporary folder is removed
    when the process that made it exits.
    """
    if settings.metrics_dir:
        path = Path(settings.metrics_dir) / part
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix=f"stocks-{part}-metrics-"))
        owner = os.getpid()
        # forked children run atexit too: only the owner removes the folder
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, True))
    export_metrics_dir(str(path))
    values.ValueClass = values.get_value_class()  # chosen from the environment just set
    _families.cache_clear()
    return settings.replace(metrics_dir=str(path))


class _ThisProcess:
    """The metrics of this process alone (no multiprocess folder)."""

    def collect(self):
        for family in families().all():
            yield from family.collect()


def registry(settings: Settings) -> CollectorRegistry:
    """A registry of the counted metrics: summed over the folder's processes, or this one's."""
    reg = CollectorRegistry(auto_describe=False)
    if settings.metrics_dir:
        MultiProcessCollector(reg, path=settings.metrics_dir)
    else:
        reg.register(_ThisProcess())
    return reg


def exposition(reg: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and its Content-Type (one charset) in the format the scraper asked for."""
    encode, content_type = choose_encoder(accept or "")
    return encode(reg), content_type
