"""``stocks worker``: chart worker processes, each running ``stocks.worker.loop.Worker``.

Processes, not threads: matplotlib is not thread-safe and drawing holds the GIL. With
``--concurrency N`` a small supervisor starts N spawned children (fresh interpreters, so
no Redis connection or matplotlib state crosses a fork; each reads the same environment
into its own ``Settings``), forwards SIGTERM/SIGINT to them and replaces a child that dies
on its own.

Shutdown (SIGTERM or SIGINT): stop taking jobs; let the job being drawn finish within
``shutdown_grace`` seconds (``STOCKS_SHUTDOWN_GRACE``, default 25), else interrupt it and
put it back at the front of the queue with its attempt refunded; then exit 0.

Health: ``--health-port`` serves ``GET /health`` (``stocks.worker.health``) from the process
that was started: 503 once a worker's heartbeat has not reached Redis, or one chart has been
drawing, for ``worker_stall`` seconds (with N processes: the stalest of them). The same port
serves ``GET /metrics``: the job figures of all N processes, summed through the multiprocess
folder that ``stocks worker`` prepared (``stocks.metrics.prepare_dir``) before starting them.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time

from stocks import logs, metrics
from stocks.config import Settings, mask_url, reset_clients
from stocks.jobs import Interrupted, JobError, JobQueue
from stocks.keys import STOCKS_DB
from stocks.lifetime import end_with_parent
from stocks.worker import health
from stocks.worker.loop import Handler, Worker

log = logging.getLogger(__name__)


def chart_handler(settings: Settings) -> tuple[Handler, tuple[type[BaseException], ...]]:
    """The real job handler and the errors that fail a job at once."""
    from stocks.worker.chart_data import ChartDataError, draw_job  # noqa: PLC0415 - heavy

    return functools.partial(draw_job, settings.redis(STOCKS_DB)), (JobError, ChartDataError)


class _Shutdown:
    """Signal state of one worker process: stop taking jobs, then a grace timer."""

    def __init__(self, grace: float):
        self.grace = grace
        self.stopping = False
        self.expired = False
        self.drawing = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGALRM, self.on_alarm)

    def on_stop(self, signum: int, frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("signal %s: finishing the current job (grace %.0f s)", signum, self.grace)
        signal.setitimer(signal.ITIMER_REAL, max(self.grace, 0.001))

    def on_alarm(self, signum: int, frame: object) -> None:
        self.expired = True
        if self.drawing:
            raise Interrupted("shutdown grace expired")

    def guard(self, handler: Handler) -> Handler:
        """``handler`` that the grace timer can interrupt (only while it draws)."""

        def guarded(kind: str, params: dict) -> tuple[bytes, str]:
            if self.expired:
                raise Interrupted("shutdown grace expired")
            self.drawing = True
            try:
                return handler(kind, params)
            finally:
                self.drawing = False

        return guarded


def _watched(queue: JobQueue, handler: Handler, liveness: health.Liveness) -> Handler:
    """``handler`` reporting to ``liveness`` how long each job runs, and ``queue`` reporting
    each heartbeat that reached Redis."""
    queue.on_heartbeat = liveness.beat

    def timed(kind: str, params: dict) -> tuple[bytes, str]:
        liveness.busy()
        try:
            return handler(kind, params)
        finally:
            liveness.idle()

    return timed


def run_worker(
    settings: Settings,
    handler: Handler | None = None,
    deterministic: tuple[type[BaseException], ...] | None = None,
    queue: JobQueue | None = None,
    liveness: health.Liveness | None = None,
) -> int:
    """One worker in this process until SIGTERM/SIGINT; returns the exit code (0)."""
    if handler is None:
        handler, default_errors = chart_handler(settings)
        deterministic = deterministic or default_errors
    shutdown = _Shutdown(settings.shutdown_grace)
    shutdown.install()
    queue = queue or JobQueue(settings)
    if liveness is not None:
        handler = _watched(queue, handler, liveness)
    log.info(
        "worker %s ready",
        queue.worker_id,
        extra={"worker": queue.worker_id, "redis": mask_url(settings.redis_url)},
    )
    try:
        worker = Worker(queue, shutdown.guard(handler), deterministic or (JobError,))
        worker.run(stop=lambda: shutdown.stopping)
    except Interrupted:
        log.info("worker %s: job put back after the grace period", queue.worker_id)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    log.info("worker %s stopped", queue.worker_id)
    return 0


def _child(slots, supervisor_pid: int) -> None:
    end_with_parent(supervisor_pid)  # SIGTERM: finish or put back the job, then exit
    settings = Settings.from_env()
    logs.setup(settings)
    reset_clients()
    raise SystemExit(run_worker(settings, liveness=health.Liveness(slots)))


def run_workers(settings: Settings, concurrency: int = 1, health_port: int | None = None) -> int:
    """``stocks worker --concurrency N``: N worker processes until SIGTERM/SIGINT."""
    port = settings.health_port if health_port is None else health_port
    routes = {"/metrics": health.metrics_route(metrics.registry(settings))}
    if concurrency <= 1:
        liveness = health.Liveness()
        if port:
            health.start_health_server(port, liveness.last, settings.worker_stall, routes=routes)
        return run_worker(settings, liveness=liveness)
    ctx = multiprocessing.get_context("spawn")
    slots = [ctx.Array("d", 2, lock=False) for _ in range(concurrency)]
    for s in slots:
        health.Liveness(s)  # alive from now: a child writes its own once it starts
    if port:
        health.start_health_server(
            port,
            lambda: min(health.last_beat(s) for s in slots),
            settings.worker_stall,
            routes=routes,
        )
    stopping = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each child finishes or puts back its job

    def spawn(slot: int) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_child, args=(slots[slot], os.getpid()), daemon=False)
        proc.start()
        return proc

    procs = []
    # before the first child: a SIGTERM while they start stops those already started
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    for i in range(concurrency):
        if stopping:
            break
        procs.append(spawn(i))
    if stopping:  # it came while a child was starting: that one stops too
        on_stop(signal.SIGTERM, None)
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p in procs], timeout=1.0)
        for i, proc in enumerate(procs):
            if not stopping and proc.exitcode is not None:
                log.warning(
                    "worker process %s exited with %s; replacing it", proc.pid, proc.exitcode
                )
                time.sleep(1.0)
                procs[i] = spawn(i)
    grace = settings.shutdown_grace + 10
    for proc in procs:
        proc.join(timeout=grace)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return 0 if all(p.exitcode == 0 for p in procs) else 1
