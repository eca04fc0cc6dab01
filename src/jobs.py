"""Chart jobs: the job model and the queue's atomic operations (Redis DBs 1, 2 and 3).

The shape is HotQueue's (``put``, ``get``, ``consume``); the failure mode is not: a job
taken by a worker stays in Redis until it is finished, so a worker killed mid-job loses
nothing. Messages and records are JSON; nothing is pickled. Key names: ``stocks.keys``;
the scripts that make each change atomic: ``stocks.scripts``; the loop that runs jobs:
``stocks.worker.loop``.

Status transitions, each a compare-and-set inside one script:
    queued  -> running    take: only from ``queued`` (a cancelled job is never run); the
                          record gets a fresh random ``token`` and ``attempts + 1``
    running -> finished   finish: only with the current token, so a stale or duplicate
    running -> failed     worker (reaped, then back) can never overwrite the result, and a
                          job completes at most once; image and record share one TTL
    running -> queued     put back: graceful shutdown (attempt refunded) or the reaper
    queued  -> cancelled  cancel: also removes it from the waiting list
A worker heartbeats into the workers set; any worker runs the reaper, which puts back the
jobs of workers silent for ``worker_timeout`` s, or fails them once they have used
``max_attempts`` attempts. A call that takes a job and loses its reply is sent again
marked as a retry, and hands out the job the lost call took, so no job sits in a live
worker's list with nobody running it.

Several jobs can be finished and the next ones taken in one script (``finish_many``):
each keeps its own CAS transitions and sits in the worker's list until finished. A job
tried before is taken alone, so if it is what killed its last worker, no batch-mate pays
an attempt for it again; a job identical to one in the batch waits for the next take, to
copy that image.

Records and images live ``result_ttl`` s after their last change; the image and its
record get the same TTL in the same script.

Identical requests: the API stores a ``cache_key`` (kind, params and data versions) in
the record; when a worker takes a job whose key maps to a stored image, the take script
copies that image and finishes the job in the same step instead of drawing it again.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

import orjson
import redis

from stocks import metrics
from stocks.config import Settings
from stocks.keys import (
    ALL_JOBS_KEY,
    IMAGE_BUDGET_KEY,
    IMAGES_DB,
    JOBS_DB,
    QUEUE_DB,
    WAITING_KEY,
    WORKERS_KEY,
    image_key,
    job_key,
    owner_jobs_key,
    processing_key,
)
from stocks.logs import REQUEST_ID
from stocks.scripts import TRANSIENT, Scripts, retry_transient

log = logging.getLogger(__name__)

LIST_SCAN_BUDGET = 2000
BLOCK_SLICE = 10.0  # longest BLMOVE, in s: well under the client's socket timeout (30 s)
REAP_IDS_LOGGED = 50  # job ids named in a reaper line at most
ID_LENGTH = 46  # 14 hex digits of epoch microseconds + 32 random ones (128 bits: unguessable)


class Status(StrEnum):
    """A job's status; str-valued, so stored and JSON values are the plain words."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(Status)
TERMINAL = (Status.FINISHED, Status.FAILED, Status.CANCELLED)


class JobRecord(TypedDict):
    """A job hash decoded: times in epoch ms (None when unset), params as a dict."""

    id: str
    kind: str
    params: dict
    owner: str | None
    status: Status
    created_at: int | None
    started_at: int | None
    finished_at: int | None
    attempts: int
    error: str | None
    token: str | None
    worker: str | None
    cache_key: str | None
    content_type: str | None
    request_id: str | None  # the API request that created it (absent in older records)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """Raise inside a handler to put its job back without using up an attempt (shutdown)."""


class JobError(Exception):
    """A deterministic failure: the job fails at once with this message, no retry."""


def new_job_id(now: float | None = None) -> str:
    """Time-ordered id: ids sort by creation, which gives newest-first listing for free; the
    random part makes an id a capability (whoever holds it may read or delete the job)."""
    us = int((time.time() if now is None else now) * 1_000_000)
    return f"{us:014x}{secrets.token_hex(16)}"


def is_job_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def new_worker_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(4)}"


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def decode_record(raw: dict) -> JobRecord:
    rec = {_text(k): _text(v) for k, v in raw.items()}
    for name in ("created_at", "started_at", "finished_at"):
        rec[name] = int(rec[name]) if rec.get(name) else None
    rec["attempts"] = int(rec.get("attempts") or 0)
    rec["params"] = orjson.loads(rec.get("params") or "{}")
    rec["status"] = Status(rec["status"])
    rec["error"] = rec.get("error") or None
    for name in ("token", "worker", "cache_key", "content_type", "owner", "request_id"):
        rec[name] = rec.get(name) or None
    return rec  # type: ignore[return-value]


@dataclass(frozen=True)
class Job:
    """A job this worker is running: ``token`` proves it is still the current attempt."""

    id: str
    kind: str
    params: dict
    token: str
    attempts: int
    request_id: str = ""  # of the API request that created it, for log lines

    @classmethod
    def from_reply(cls, reply: list, token: str) -> Job:
        _, job_id, kind, params, attempts, *more = reply
        rid = _text(more[0]) if more else ""
        return cls(_text(job_id), _text(kind), orjson.loads(params), token, int(attempts), rid)

    def created(self) -> float:
        """When it was enqueued (epoch s), from its id."""
        return int(self.id[:14], 16) / 1_000_000


@dataclass(frozen=True)
class WorkerView:
    worker: str
    last_beat_ms: int  # Redis server time
    held: list[str]  # ids in its processing list


@dataclass(frozen=True)
class QueueView:
    now_ms: int  # Redis server time: heartbeats are compared with it, never a local clock
    waiting: int
    workers: list[WorkerView]
    timeout_ms: int

    def alive(self, worker: WorkerView) -> bool:
        return self.now_ms - worker.last_beat_ms <= self.timeout_ms


@dataclass
class Transition:
    """What a finish/fail/put-back did, and the next job when finish took one in the same step."""

    status: str
    next_job: Job | None = None


class JobQueue:
    """The reliable queue and the job records: producers ``put``; workers ``get``/``consume``
    (or run ``stocks.worker.loop.Worker``); readers ``get_job``/``list_jobs``/``get_image``."""

    def __init__(
        self, settings: Settings, worker_id: str | None = None, timeout: float | None = None
    ):
        self.settings = settings
        self.redis_timeout = timeout  # None: a worker's patient client (config.redis_client)
        self.worker_id = worker_id or new_worker_id()
        self.ttl = settings.result_ttl
        self.timeout = settings.worker_timeout
        self.max_attempts = settings.max_attempts
        self.batch_max = max(1, settings.batch_max)
        self.image_budget = int(settings.image_budget_mb * 1024 * 1024)
        self.scripts = Scripts(lambda: self.client(QUEUE_DB))
        self._last_reap = 0.0
        self._puts = 0
        self.on_heartbeat: Callable[[], None] | None = None  # after each beat that got through

    @property
    def redis(self) -> redis.Redis:
        return self.client(QUEUE_DB)

    def client(self, db: int) -> redis.Redis:
        """This queue's client for ``db`` (the API's short timeout, or a worker's patience)."""
        return self.settings.redis(db, timeout=self.redis_timeout)

    # producer side

    def put(
        self,
        kind: str,
        params: dict,
        cache_key: str = "",
        job_id: str = "",
        owner: str = "",
        request_id: str | None = None,
    ) -> str:
        """Record and queue a job in one atomic step; returns its id.

        Idempotent per id: putting an id that exists changes nothing, so a producer (or the
        connection's retry after a lost reply) may send the same put again. ``owner`` (an
        opaque name, never a secret) is whose list the job appears in. ``request_id``
        (default: the API request being served, ``stocks.logs.REQUEST_ID``) is kept in the
        record so that the worker's log lines for the job name it.
        """
        if job_id and not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        job_id = job_id or new_job_id()
        self._puts += 1
        # now and then, forget index entries far older than any record can live
        prune_below = new_job_id(time.time() - 2 * self.ttl)[:14] if self._puts % 100 == 1 else ""
        params_json = orjson.dumps(params)
        rid = REQUEST_ID.get() if request_id is None else request_id
        created = self.scripts.run(
            "enqueue", job_id, kind, params_json, cache_key, self.ttl, prune_below, owner, rid
        )
        if created:
            metrics.families().kind(kind).jobs_enqueued.inc()
            log.info(
                "job %s enqueued",
                job_id,
                extra={"event": "enqueued", "job_id": job_id, "kind": kind, "request_id": rid},
            )
        return job_id

    def count(self) -> int:
        """Jobs waiting (not taken yet). Not ``__len__``: an empty queue must stay truthy."""
        return int(self.redis.llen(WAITING_KEY))

    def cancel_or_delete(self, job_id: str) -> str:
        """queued -> 'cancelled'; terminal -> 'deleted' (with its image); or 'running'/'missing'."""
        if not is_job_id(job_id):
            return "missing"
        outcome = _text(self.scripts.run("cancel_or_delete", job_id, self.ttl))
        if outcome == "cancelled":
            jobs_db = self.client(JOBS_DB)
            kind = _text(jobs_db.hget(job_key(job_id), "kind")) or "unknown"
            metrics.families().kind(kind).jobs_cancelled.inc()
            log.info(
                "job %s cancelled",
                job_id,
                extra={"event": "cancelled", "job_id": job_id, "kind": kind},
            )
        return outcome

    # readers

    def get_job(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        raw = self.client(JOBS_DB).hgetall(job_key(job_id))
        return decode_record(raw) if raw else None

    def list_jobs(
        self,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first, up to ``limit`` records after ``cursor`` (an id), and the next cursor;
        ``owner``: only that owner's jobs (its own index), else every job.

        A status filter reads through the index; past ``LIST_SCAN_BUDGET`` records it returns
        what it found with a cursor to go on from, so one request stays cheap. Index entries
        whose record has expired are dropped as they are met.
        """
        r = self.client(JOBS_DB)
        index = ALL_JOBS_KEY if owner is None else owner_jobs_key(owner)
        upper = f"({cursor}" if cursor else "+"
        out: list[JobRecord] = []
        scanned = 0
        while scanned < LIST_SCAN_BUDGET:
            want = limit + 1 - len(out)
            batch = min(max(want, 50), LIST_SCAN_BUDGET - scanned)
            ids = [_text(i) for i in r.zrevrangebylex(index, upper, "-", 0, batch)]
            if not ids:
                return out, None
            pipe = r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(job_key(job_id))
            gone = []
            for job_id, raw in zip(ids, pipe.execute(), strict=True):
                scanned += 1
                if not raw:
                    gone.append(job_id)
                    continue
                rec = decode_record(raw)
                if status is None or rec["status"] == status:
                    out.append(rec)
                    if len(out) > limit:
                        break
            if gone:
                r.zrem(index, *gone)
            if len(out) > limit:
                return out[:limit], out[limit - 1]["id"]
            upper = f"({ids[-1]}"
        return out, upper[1:]

    def get_image(self, job_id: str) -> bytes | None:
        """The image bytes of a finished job (its content type is in the record)."""
        if not is_job_id(job_id):
            return None
        return self.client(IMAGES_DB).get(image_key(job_id))

    def workers(self) -> QueueView:
        """One look at the queue: Redis's clock, the waiting count, and every worker that
        has heartbeated with its last beat and the ids it holds."""
        r = self.redis
        seconds, micros = r.time()
        beats = r.zrange(WORKERS_KEY, 0, -1, withscores=True)
        pipe = r.pipeline(transaction=False)
        pipe.llen(WAITING_KEY)
        for worker, _ in beats:
            pipe.lrange(processing_key(_text(worker)), 0, -1)
        waiting, *held = pipe.execute()
        return QueueView(
            now_ms=seconds * 1000 + micros // 1000,
            waiting=int(waiting),
            workers=[
                WorkerView(_text(worker), int(beat), [_text(i) for i in ids])
                for (worker, beat), ids in zip(beats, held, strict=True)
            ],
            timeout_ms=int(self.timeout * 1000),
        )

    def stats(self) -> dict[str, int]:
        """Waiting jobs, jobs held by workers, and workers heard from within the timeout."""
        view = self.workers()
        return {
            "waiting": view.waiting,
            "taken": sum(len(w.held) for w in view.workers),
            "workers": sum(view.alive(w) for w in view.workers),
        }

    # worker side

    def _take_args(self, token: str) -> list:
        return [self.worker_id, token, self.max_attempts, self.ttl, self.image_budget]

    def get(
        self, block: bool = True, timeout: float = 1.0, stop: Callable[[], bool] | None = None
    ) -> Job | None:
        """Take the next runnable job (queued -> running), or None after ``timeout`` seconds.

        The id moves atomically into this worker's processing list (LMOVE/BLMOVE), so it is
        never only in this process's memory.
        """
        token = secrets.token_hex(8)
        taken = self._settling(self.scripts.run_taking("take", *self._take_args(token), 1))
        if taken:
            return Job.from_reply(taken[0], token)
        if not block:
            return None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                job_id = self.scripts.call(
                    "BLMOVE", WAITING_KEY, processing_key(self.worker_id), "RIGHT", "LEFT",
                    min(max(left, 0.01), BLOCK_SLICE), retry=False,
                )  # fmt: skip
            except TRANSIENT:
                # a lost reply may have moved a job into this worker's list: a take told
                # it is a retry starts that one rather than leave it there
                args = (*self._take_args(token), 1, "1")
                taken = self._settling(retry_transient(self.scripts.run, "take", *args))
                if taken:
                    return Job.from_reply(taken[0], token)
                continue
            if job_id is None:
                continue
            if stop is not None and stop():
                self.release_own()  # taken while stopping: straight back to the queue
                return None
            reply = self._settling(
                self.scripts.run_taking("start", job_id, *self._take_args(token))
            )
            if _text(reply[0]) == "started":
                return Job.from_reply(reply, token)
        return None

    def consume(
        self, timeout: float = 1.0, stop: Callable[[], bool] | None = None
    ) -> Iterator[Job]:
        """Jobs as they come; an idle ``timeout`` ends it. The caller must finish each job.

        It heartbeats meanwhile, so if this process dies the reaper puts back the job it
        held. (A bare ``get`` does not: wrap its use in ``heartbeating()``.)
        """
        with self.heartbeating():
            while not (stop and stop()):
                job = self.get(timeout=timeout, stop=stop)
                if job is None:
                    return
                yield job

    def finish(
        self, job: Job, data: bytes, content_type: str, take_next: bool = False
    ) -> Transition:
        """running -> finished with the image, if ``job`` is still the current attempt.

        With ``take_next`` the same script also takes the next job (one round trip per job
        when the queue is busy). Connection errors are retried with backoff (about 10 s).
        """
        statuses, taken = self.finish_many([(job, data, content_type)], take=int(take_next))
        return Transition(statuses[0], taken[0] if taken else None)

    def finish_many(
        self, results: Sequence[tuple[Job, bytes, str]], take: int = 0
    ) -> tuple[list[str], list[Job]]:
        """``finish`` for several jobs in one step, then start up to ``take`` next ones.

        Returns each job's status and the jobs taken, oldest first: fewer when the queue
        runs short, when a job tried before comes up (it is taken alone), or when one is
        identical to a job already taken (it waits for that image). Connection errors are
        retried with backoff (about 10 s).
        """
        token = secrets.token_hex(8) if take else ""
        args: list = [self.worker_id, self.ttl, token, self.max_attempts, self.image_budget]
        args += [take, len(results)]
        for job, data, content_type in results:
            args += [job.id, job.token, data, content_type]
        statuses, taken, settled = self.scripts.run_taking("finish", *args)
        self._settled(settled)
        return [_text(s) for s in statuses], [Job.from_reply(t, token) for t in taken]

    def _settling(self, reply: list) -> list:
        """A take's own reply, once the jobs it ended without running are logged."""
        own, settled = reply
        self._settled(settled)
        return own

    def _settled(self, settled: list) -> None:
        """Log and count the jobs a take ended itself: a copy of an identical request's
        image (finished, no drawing) or one out of attempts (failed)."""
        fam = metrics.families()
        for status, job_id, kind, request_id, attempts, *copied_from in settled:
            status, kind = _text(status), _text(kind) or "unknown"
            fields = {
                "event": status,
                "job_id": _text(job_id),
                "kind": kind,
                "attempt": int(attempts),
                "worker": self.worker_id,
                "request_id": _text(request_id),
            }
            if status == "finished":
                fam.kind(kind).jobs_finished.inc()
                fields["copied_from"] = _text(copied_from[0])
                log.info("job %s finished: identical chart copied", fields["job_id"], extra=fields)
            else:
                fam.kind(kind).jobs_failed.inc()
                fields["error"] = f"gave up after {fields['attempt']} attempts"
                log.warning("job %s failed: out of attempts", fields["job_id"], extra=fields)

    def fail(self, job: Job, error: str) -> Transition:
        status = self.scripts.run("fail", job.id, self.worker_id, job.token, self.ttl, error)
        return Transition(_text(status))

    def put_back(self, job: Job, refund: bool = True) -> Transition:
        """running -> queued at the front of the line (shutdown: the attempt is refunded)."""
        status = self.scripts.run("put_back", job.id, self.worker_id, job.token, int(refund))
        return Transition(_text(status))

    def heartbeat(self) -> None:
        self.scripts.run("heartbeat", self.worker_id, "", self.image_budget)
        if self.on_heartbeat is not None:
            self.on_heartbeat()

    def kept_image_budget(self) -> int:
        """The image budget the workers keep (their heartbeats say it), else this queue's."""
        told = self.client(IMAGES_DB).get(IMAGE_BUDGET_KEY)
        return int(told) if told else self.image_budget

    def unregister(self) -> None:
        self.release_own()
        self.scripts.run("heartbeat", self.worker_id, "1")

    def reap(self) -> tuple[int, int]:
        """Put back (or fail) the jobs of workers silent for the timeout: (requeued, failed)."""
        timeout_ms = int(self.timeout * 1000)
        requeued, failed = self._reaped("", timeout_ms)
        fam = metrics.families()
        for _, kind in requeued:
            fam.kind(kind).jobs_requeued.inc()
        for _, kind in failed:
            fam.kind(kind).jobs_failed.inc()
        if requeued or failed:
            log.warning(
                "reaper: %s job(s) put back, %s failed",
                len(requeued),
                len(failed),
                extra={
                    "event": "requeued",
                    "requeued": len(requeued),
                    "failed": len(failed),
                    "job_ids": [job_id for job_id, _ in (requeued + failed)[:REAP_IDS_LOGGED]],
                },
            )
        return len(requeued), len(failed)

    def release_own(self) -> tuple[int, int]:
        """Put back what this worker holds but is not running (after an outage or a stop)."""
        requeued, failed = self._reaped(self.worker_id, 0)
        return len(requeued), len(failed)

    def _reaped(self, worker: str, timeout_ms: int) -> tuple[list, list]:
        """The reap script's (id, kind) pairs put back and failed."""
        lists = self.scripts.run("reap", worker, timeout_ms, self.max_attempts, self.ttl)
        return tuple(
            [(_text(flat[i]), _text(flat[i + 1]) or "unknown") for i in range(0, len(flat), 2)]
            for flat in lists
        )

    @contextmanager
    def heartbeating(self) -> Iterator[None]:
        """A thread that heartbeats and runs the reaper while the block runs."""
        stop = threading.Event()
        interval = min(max(self.timeout / 5, 0.1), 5.0)

        def beat() -> None:
            while True:
                try:
                    self.heartbeat()
                    now = time.monotonic()
                    if now - self._last_reap >= self.timeout / 2:
                        self._last_reap = now
                        self.reap()
                except Exception as e:  # the thread must outlive any error
                    log.warning("heartbeat failed: %s", e)
                if stop.wait(interval):
                    return

        try:
            self.heartbeat()  # registered before the first take
        except redis.RedisError as e:
            log.warning("heartbeat failed: %s", e)
        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
