"""The worker loop: take jobs from a ``JobQueue``, run a handler, record the results.

Kept apart from the queue (as RQ, arq and SAQ keep theirs): the queue knows how a job
changes state atomically; this loop knows when to ask for those changes, how to pace
them, and how to survive a Redis outage or a stop in the middle of a batch.

Round trips: a busy worker finishes its job and takes the next in one script. Jobs far
shorter than that round trip (a no-op; never a 50 ms chart) are taken in batches of up to
``batch_max``, sized by the recent pace (``Pace``), and their results recorded together,
each at most about ``BATCH_BUDGET`` plus one job late. A stopping worker records what it
ran and puts back the rest, in order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import redis
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from stocks import metrics
from stocks.jobs import Interrupted, Job, JobError, JobQueue
from stocks.scripts import TRANSIENT, retry_transient

log = logging.getLogger(__name__)

Handler = Callable[[str, dict], tuple[bytes, str]]

BATCH_BUDGET = 0.005  # s of paced work a worker takes at once (see Pace)


class Pace:
    """How many jobs a worker takes at once: as many as the recent pace (a moving average of
    handler times) fits into ``budget`` s, at most ``most``, and one while the pace is
    unknown. A chart (50 ms and up) is always taken alone; no-op-sized jobs share one round
    trip per batch instead of paying one each.
    """

    def __init__(self, most: int, budget: float = BATCH_BUDGET) -> None:
        self.most = most
        self.budget = budget
        self.mean: float | None = None

    def observe(self, seconds: float) -> None:
        self.mean = seconds if self.mean is None else 0.8 * self.mean + 0.2 * seconds

    def batch(self) -> int:
        if self.mean is None:
            return 1
        return max(1, min(self.most, int(self.budget / max(self.mean, 1e-6))))


class Worker:
    """Runs ``handler(kind, params)`` for the jobs of ``queue`` until told to stop.

    ``deterministic`` errors fail a job at once; any other exception fails it as an
    internal error; a Redis blip inside the handler draws it again; ``Interrupted`` puts
    the job back (attempt refunded) and goes up to the caller.
    """

    def __init__(
        self,
        queue: JobQueue,
        handler: Handler,
        deterministic: tuple[type[BaseException], ...] = (JobError,),
        idle_timeout: float = 1.0,
        budget: float = BATCH_BUDGET,
    ):
        self.queue = queue
        self.handler = handler
        self.deterministic = deterministic
        self.idle_timeout = idle_timeout
        self.pace = Pace(queue.batch_max, budget)
        self.held: deque[Job] = deque()  # started for this worker, not run yet
        self.done: list[tuple[Job, bytes, str]] = []  # run, not recorded yet
        self._done_since = 0.0
        self._stop: Callable[[], bool] = lambda: False
        self._recovering = False
        self._ran: dict[str, float] = {}  # job id -> handler seconds, until recorded

    def event(self, level: int, event: str, job: Job, **fields: object) -> None:
        """One log line about ``job`` with the fields an operator filters on."""
        if log.isEnabledFor(level):
            fields = {
                "event": event,
                "job_id": job.id,
                "kind": job.kind,
                "attempt": job.attempts,
                "worker": self.queue.worker_id,
                "request_id": job.request_id,
                **fields,
            }
            log.log(level, "job %s %s", job.id, event, extra=fields)

    def process(self, job: Job) -> tuple[bytes, str] | None:
        """The job's result to finish with, or None when it has failed (recorded here)."""
        wait = max(0.0, time.time() - job.created())
        metrics.families().kind(job.kind).queue_wait_seconds.observe(wait)
        self.event(logging.INFO, "started", job, queue_wait_ms=round(wait * 1000, 1))
        started = time.perf_counter()
        try:
            return retry_transient(self.handler, job.kind, job.params)
        except Interrupted:
            raise
        except self.deterministic as e:
            error = str(e) or type(e).__name__
        except TRANSIENT:
            raise  # the run loop backs off; release_own() puts the job back later
        except Exception as e:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            error = f"internal error while drawing ({type(e).__name__})"
        status = retry_transient(self.queue.fail, job, error).status
        seconds = time.perf_counter() - started
        if status == "failed":
            metrics.families().kind(job.kind).jobs_failed.inc()
        self.event(logging.WARNING, "failed", job, error=error, status=status,
                   duration_ms=round(seconds * 1000, 1))  # fmt: skip
        return None

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Take, run, finish, until ``stop()``; survives Redis restarts."""
        self._stop = stop
        # down, restarting, out of memory...: whatever this worker holds is put back by
        # release_own() once Redis answers again
        retrying = Retrying(
            retry=retry_if_exception_type(redis.RedisError),
            wait=wait_random_exponential(multiplier=0.1, max=5.0),
            stop=lambda _state: stop(),
            before_sleep=self._forget_taken,
            reraise=True,
        )
        try:
            with self.queue.heartbeating():
                while not stop():
                    try:
                        retrying(self._serve)
                    except redis.RedisError:
                        break  # told to stop while Redis is away
        finally:
            # after the heartbeat thread has stopped, so that no late beat registers the
            # worker again once it has gone
            self._leave()

    def _serve(self) -> None:
        """Steps until ``stop()``, or until the first one that goes through after an outage
        (so that the next outage's backoff starts short again)."""
        while not self._stop():
            self._step()
            if self._recovering:
                self._recovering = False
                return

    def _step(self) -> None:
        """Run the next held job, or record what is done and take more."""
        if not self.held:
            if self.done:  # record them and take the next ones in one step
                self.held.extend(self._record(self.pace.batch()))
            else:
                self.queue.heartbeat()
                self.queue.release_own()
                job = self.queue.get(timeout=self.idle_timeout, stop=self._stop)
                if job is not None:
                    self.held.append(job)
            return
        job = self.held[0]
        started = time.perf_counter()
        result = self.process(job)
        ended = time.perf_counter()
        self.held.popleft()
        self.pace.observe(ended - started)
        metrics.families().kind(job.kind).run_seconds.observe(ended - started)
        if result is not None:
            self._ran[job.id] = ended - started
            if not self.done:
                self._done_since = ended
            self.done.append((job, *result))
        if self.done and self.held and ended - self._done_since > self.pace.budget:
            self._record()  # the rest of the batch is slower than paced

    def _record(self, take: int = 0) -> list[Job]:
        """Finish what is done (and forget it); maybe take the next jobs."""
        statuses, taken = self.queue.finish_many(self.done, take)  # retries by itself
        fam = metrics.families()
        for (job, _, _), status in zip(self.done, statuses, strict=True):
            seconds = self._ran.pop(job.id, 0.0)
            if status != "finished":
                log.warning("job %s was %s elsewhere; result dropped", job.id, status)
                continue
            of_kind = fam.kind(job.kind)
            of_kind.jobs_finished.inc()
            of_kind.render_seconds.observe(seconds)
            self.event(logging.INFO, "finished", job, duration_ms=round(seconds * 1000, 1))
        self.done.clear()
        return taken

    def _forget_taken(self, retry_state) -> None:
        self._recovering = True
        self.held.clear()
        self.done.clear()
        self._ran.clear()
        log.warning("redis error (%s); retrying", retry_state.outcome.exception())

    def _leave(self) -> None:
        """Record what ran, put back what did not (in order, refunded), unregister."""
        try:
            if self.done:
                self._record()
            for job in reversed(self.held):  # back to the front, in their order
                status = retry_transient(self.queue.put_back, job, refund=True).status
                if status == "queued":
                    metrics.families().kind(job.kind).jobs_requeued.inc()
                self.event(logging.INFO, "requeued", job, status=status)
            self.held.clear()
            self.queue.unregister()
        except redis.RedisError as e:
            log.warning("could not record, put back or unregister: %s", e)
