"""The worker's /health (src/worker/health.py): what the Kubernetes probes and Docker's
HEALTHCHECK ask. The lost-Redis case runs end to end in test_smoke.py; here the pieces,
a stuck job, and `stocks worker --concurrency 2` whose supervisor answers for its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_for
from test_devrun import get_json as get

from stocks import jobs
from stocks.config import Settings
from stocks.redis_server import free_port
from stocks.worker.health import Liveness, start_health_server


@pytest.fixture
def served():
    servers = []

    def serve(liveness: Liveness, limit: float) -> str:
        server = start_health_server(0, liveness.last, limit, host="127.0.0.1")
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_health_is_200_while_beats_are_fresh_and_503_once_stale(served):
    liveness = Liveness()
    base = served(liveness, limit=0.3)
    status, body = get(base + "/health")
    assert status == 200 and body["status"] == "ok" and body["limit"] == 0.3
    time.sleep(0.4)
    status, body = get(base + "/health")
    assert status == 503 and body["status"] == "stale" and body["age"] > 0.3
    liveness.beat()
    assert get(base + "/health")[0] == 200
    assert get(base + "/nothing")[0] == 404


def test_a_job_running_too_long_is_stale_although_heartbeats_go_on(served):
    liveness = Liveness()
    base = served(liveness, limit=0.3)
    liveness.busy()  # a render starts...
    for _ in range(5):  # ...and the heartbeat thread keeps beating
        time.sleep(0.1)
        liveness.beat()
    assert get(base + "/health")[0] == 503
    liveness.idle()  # the job ended: the last beat counts again
    assert get(base + "/health")[0] == 200


def test_supervisor_of_two_worker_processes_serves_health(redis_url):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stocks.cli", "worker", "--concurrency", "2",
         "--health-port", str(port)],
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                return get(f"http://127.0.0.1:{port}/health")[0] == 200
            except OSError:
                return False

        # both children registered (a TERM before a child's handlers are set kills it)
        queue = jobs.JobQueue(Settings(redis_url=redis_url))
        wait_for(lambda: queue.stats()["workers"] == 2, 60, "two live workers")
        assert healthy()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
