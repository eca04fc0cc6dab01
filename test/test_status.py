"""`stocks status` against a real stack: healthy, then with a stale worker (exit 1, named)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import wait_for
from obs_stack import load_series, start_worker, stop

from stocks import jobs
from stocks.keys import (
    IMAGE_BYTES_KEY,
    IMAGES_DB,
    JOBS_DB,
    QUEUE_DB,
    WAITING_KEY,
    WORKERS_KEY,
    job_key,
    processing_key,
)
from stocks.redis_server import RedisServer, env_with_redis

PASSWORD = "status-test-password-77"


def status(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stocks.cli", "status", *args],
        env={**env_with_redis(redis_url), "STOCKS_WORKER_TIMEOUT": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthy_stack_then_a_stale_worker(tmp_path, r0, redis_url, settings):
    load_series(r0, "AAPL")
    load_series(r0, "MSFT", days=100)
    queue = jobs.JobQueue(settings, "status-test")
    cancelled = queue.put("line", {"symbols": ["NOPE"]})
    queue.cancel_or_delete(cancelled)
    old = queue.put("line", {"symbols": ["AAPL"]}, job_id=jobs.new_job_id(time.time() - 7200))
    queue.cancel_or_delete(old)  # two hours ago: not in "the last hour"
    # the worker keeps a budget of its own: status (run with the default) reports the
    # worker's, which its heartbeats tell
    worker = start_worker(
        redis_url, tmp_path / "worker.log", "--concurrency", "1", STOCKS_IMAGE_BUDGET_MB="3"
    )
    try:
        wait_for(lambda: queue.stats()["workers"] == 1, timeout=30, what="the worker alive")
        done = queue.put("line", {"symbols": ["AAPL"], "options": {"width": 300}})
        wait_for(lambda: queue.get_job(done)["status"] == "finished", what="a chart drawn")
        settings.redis(IMAGES_DB).set(IMAGE_BYTES_KEY, 2 * 1024 * 1024)

        run = status(redis_url, "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["healthy"] and report["attention"] == []
        assert report["redis"]["version"] and report["redis"]["used_memory"] > 0
        assert report["redis"]["image_bytes"] == 2 * 1024 * 1024
        assert settings.image_budget_mb != 3
        assert report["redis"]["image_budget"] == 3 * 1024 * 1024
        data = report["data"]
        assert data["tickers"] == 2 and data["sources"] == {"csv": 2}
        assert data["first_date"] == "2016-01-04" and data["last_loaded_at"]
        assert report["jobs_last_hour"] == {
            "queued": 0, "running": 0, "finished": 1, "failed": 0, "cancelled": 1
        }  # fmt: skip
        assert report["queue"] == {"waiting": 0, "held": 0}
        assert len(report["workers"]) == 1 and report["stale_workers"] == []

        text = status(redis_url)
        assert text.returncode == 0 and "healthy" in text.stdout
        assert "Redis" in text.stdout and "AAPL" not in text.stdout

        # a worker that stopped beating 60 s ago, holding a running job
        stale = "gone-host:4242:dead"
        qdb = settings.redis(QUEUE_DB)
        seconds, _ = qdb.time()
        qdb.zadd(WORKERS_KEY, {stale: (seconds - 60) * 1000})
        held = queue.put("candlestick", {"symbols": ["AAPL"]})
        qdb.lrem(WAITING_KEY, 0, held)
        qdb.lpush(processing_key(stale), held)
        settings.redis(JOBS_DB).hset(
            job_key(held), mapping={"status": "running", "started_at": (seconds - 90) * 1000}
        )

        run = status(redis_url, "--json")
        assert run.returncode == 1
        report = json.loads(run.stdout)
        assert not report["healthy"]
        assert [w["worker"] for w in report["stale_workers"]] == [stale]
        assert report["stale_workers"][0]["jobs"][0]["id"] == held
        assert report["stale_workers"][0]["jobs"][0]["running_s"] >= 89
        assert any(stale in item for item in report["attention"])
        assert report["queue"]["held"] == 1

        text = status(redis_url)
        assert text.returncode == 1 and f"ATTENTION: stale worker(s), to be reaped: {stale}" in (
            text.stdout
        )
    finally:
        stop(worker)


def test_a_running_job_is_shown_with_its_age(redis_url, settings):
    queue = jobs.JobQueue(settings, "busy-worker")
    queue.heartbeat()
    job_id = queue.put("line", {"symbols": ["AAPL"]})
    assert queue.get(timeout=1).id == job_id
    report = json.loads(status(redis_url, "--json").stdout)
    (worker,) = report["workers"]
    assert worker["worker"] == "busy-worker"
    assert worker["jobs"][0]["kind"] == "line" and worker["jobs"][0]["running_s"] >= 0
    # nothing loaded: that needs attention
    assert report["attention"] == ["no prices loaded (stocks load)"]


def test_unreachable_or_locked_redis_exits_1_without_the_password(tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        wrong = server.url.replace(PASSWORD, "wrong-password")
        for url in (server.url, wrong):
            run = status(url)
            assert PASSWORD not in run.stdout + run.stderr
        assert status(server.url).returncode == 1  # empty: no prices
        run = status(wrong)
        assert run.returncode == 1 and "ATTENTION: Redis at redis://:***@" in run.stderr
        assert "wrong-password" not in run.stdout + run.stderr
        assert "a password is missing or wrong" in run.stderr  # not "unreachable"
        bare = f"redis://127.0.0.1:{server.port}"  # no password at all
        assert "a password is missing or wrong" in status(bare).stderr
    finally:
        server.stop(kill=True)


def test_a_hung_redis_is_reported_in_seconds_not_waited_for(tmp_path):
    """SIGSTOP: Redis accepts the connection (the kernel does) and never answers. Both
    commands give up after STOCKS_REDIS_TIMEOUT, exit 1 and name it, password masked."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    env = {**env_with_redis(server.url), "STOCKS_REDIS_TIMEOUT": "1"}
    commands = {
        "status": ["status", "--json"],
        "load": ["load", "--source", "synthetic", "--tickers", "AAPL"],
    }
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        for name, argv in commands.items():
            # a hang guard, not a speed test: they used to wait 30 s per try, twice
            run = subprocess.run(
                [sys.executable, "-m", "stocks.cli", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=25,
            )
            output = run.stdout + run.stderr
            assert run.returncode == 1, (name, output)
            assert PASSWORD not in output and "Traceback" not in output
            if name == "status":
                (item,) = json.loads(run.stdout)["attention"]
                assert item.startswith("Redis at redis://:***@127.0.0.1:")
                assert "is unreachable: Timeout" in item
            else:
                *logged, line = run.stderr.splitlines()
                assert line.startswith("stocks load: cannot reach Redis at redis://:***@")
                # before it, at most the log line of the client noticing Redis is away
                assert [json.loads(x)["event"] for x in logged] in ([], ["redis_away"])
    finally:
        server.stop(kill=True)
