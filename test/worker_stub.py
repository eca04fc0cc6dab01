"""A real worker process with test handlers: ``python test/worker_stub.py`` (REDIS_URL set).

It runs the production loop (``stocks.worker.main.run_worker``: signals, grace, heartbeat,
reaper) with handlers the tests control through the job params, and records every
successful finish in ``test:finished`` (DB 0) so tests can count completions.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from stocks.config import Settings
from stocks.jobs import JobError, JobQueue
from stocks.keys import STOCKS_DB
from stocks.worker.main import run_worker

FINISHED_KEY = "test:finished"
RAN_KEY = "test:ran"
SETTINGS = Settings.from_env()


def handle(kind: str, params: dict) -> tuple[bytes, str]:
    """``sleep``: wait params["seconds"]; ``fail``: a deterministic error; else return at once."""
    r0 = SETTINGS.redis(STOCKS_DB)
    r0.rpush(RAN_KEY, params.get("tag", ""))
    if kind == "sleep":
        time.sleep(float(params["seconds"]))
    if kind == "fail":
        raise JobError(params.get("message", "failed on purpose"))
    return f"{kind}:{params.get('tag', '')}:{os.getpid()}".encode(), "text/plain"


class CountingQueue(JobQueue):
    def finish_many(self, results, take=0):
        statuses, taken = super().finish_many(results, take)
        pairs = zip(results, statuses, strict=True)
        finished = [job.id for (job, _, _), status in pairs if status == "finished"]
        if finished:
            self.settings.redis(STOCKS_DB).rpush(FINISHED_KEY, *finished)
        return statuses, taken


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    sys.exit(run_worker(SETTINGS, handle, (JobError,), CountingQueue(SETTINGS)))
