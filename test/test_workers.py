"""Real worker processes: `stocks worker` for real charts, test/worker_stub.py otherwise."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from conftest import descendants, random_bars, running, stop_process, store, wait_for
from worker_stub import FINISHED_KEY, RAN_KEY

from stocks import jobs
from stocks.api.app import create_app
from stocks.config import Settings
from stocks.jobs import JobQueue
from stocks.redis_server import env_with_redis

STUB = Path(__file__).with_name("worker_stub.py")


@pytest.fixture
def spawn(tmp_path):
    """Start worker processes (logs under tmp_path); whatever is left is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(url: str, *args: str, cli: bool = False, **env: str) -> subprocess.Popen:
        cmd = (
            [sys.executable, "-m", "stocks.cli", "worker", *args]
            if cli
            else [sys.executable, str(STUB)]
        )
        log = open(tmp_path / f"worker{len(procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            cmd,
            env={**env_with_redis(url), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a supervisor's children go with it (stop_process)
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc, grace=0)


def statuses(queue: JobQueue, ids) -> list[str | None]:
    return [(queue.get_job(i) or {}).get("status") for i in ids]


def all_done(queue: JobQueue, ids) -> bool:
    return all(s in jobs.TERMINAL for s in statuses(queue, ids))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


FAST = {"STOCKS_WORKER_TIMEOUT": "1", "STOCKS_SHUTDOWN_GRACE": "10"}


def test_every_kind_end_to_end_through_the_api_and_a_real_worker(r0, redis_url, spawn, jobq):
    queue = jobq
    for seed, sym in enumerate(("AAPL", "MSFT", "^GSPC")):
        store(r0, sym, random_bars(400, seed, start="2017-01-02"), source="synthetic")
    client = create_app(jobq.settings, {"TESTING": True}).test_client()
    requests = {
        "line": {"symbols": ["AAPL", "MSFT"], "options": {"width": 640, "height": 480}},
        "candlestick": {
            "symbols": ["aapl"],
            "start": "2017-03-01",
            "options": {"width": 900, "height": 600, "moving_averages": [5, 20]},
        },
        "compare": {"symbols": ["AAPL", "MSFT"], "options": {"width": 800, "height": 400}},
        "benchmark": {"symbols": ["MSFT"], "options": {"width": 1000, "height": 500}},
    }
    ids = {}
    for kind, body in requests.items():
        resp = client.post("/jobs", json={"kind": kind, **body})
        assert resp.status_code == 202
        ids[kind] = resp.get_json()["id"]
    svg = client.post(
        "/jobs", json={"kind": "line", "symbols": ["AAPL"], "options": {"format": "svg"}}
    ).get_json()["id"]
    empty = client.post(
        "/jobs", json={"kind": "line", "symbols": ["AAPL"], "start": "2030-01-01"}
    ).get_json()["id"]

    worker = spawn(redis_url, "--concurrency", "1", cli=True)
    every = [*ids.values(), svg, empty]
    wait_for(lambda: all_done(queue, every), timeout=60, what="all jobs done")

    for kind, job_id in ids.items():
        rec = client.get(f"/jobs/{job_id}").get_json()
        assert rec["status"] == "finished", rec
        assert rec["attempts"] == 1 and rec["started_at"] <= rec["finished_at"]
        image = client.get(f"/jobs/{job_id}/image")
        assert image.status_code == 200 and image.mimetype == "image/png"
        opts = requests[kind]["options"]
        assert png_size(image.data) == (opts["width"], opts["height"]), kind
    image = client.get(f"/jobs/{svg}/image")
    assert image.mimetype == "image/svg+xml" and b"<svg" in image.data[:500]
    failed = client.get(f"/jobs/{empty}").get_json()
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["error"]

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_supervisor_starts_n_processes_and_stops_cleanly(redis_url, spawn):
    q1 = redis.Redis.from_url(redis_url, db=1)
    sup = spawn(redis_url, "--concurrency", "2", cli=True)
    wait_for(lambda: q1.zcard("queue:workers") == 2, timeout=30, what="two workers")
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert q1.zcard("queue:workers") == 0


def test_several_workers_finish_each_job_exactly_once(r0, redis_url, spawn, settings):
    q1 = redis.Redis.from_url(redis_url, db=1)
    workers = [spawn(redis_url, **FAST) for _ in range(3)]
    wait_for(lambda: q1.zcard("queue:workers") == 3, timeout=30, what="three workers")
    time.sleep(0.2)  # all three blocked on the empty queue, so all three get work
    queue = JobQueue(settings)
    ids = [queue.put("noop", {"tag": str(i)}) for i in range(300)]
    wait_for(lambda: all_done(queue, ids), timeout=60, what="300 jobs")
    assert set(statuses(queue, ids)) == {"finished"}
    for w in workers:
        w.send_signal(signal.SIGTERM)
    assert [w.wait(timeout=30) for w in workers] == [0, 0, 0]
    finished = [i.decode() for i in r0.lrange(FINISHED_KEY, 0, -1)]
    assert sorted(finished) == sorted(ids)  # each exactly once
    served_by = {queue.get_image(i).split(b":")[-1] for i in ids}
    assert len(served_by) >= 2  # the work really was shared


def test_cancellation_racing_workers(r0, redis_url, spawn, settings):
    queue = JobQueue(settings)
    ids = [queue.put("sleep", {"tag": str(i), "seconds": 0.005}) for i in range(200)]
    workers = [spawn(redis_url, **FAST) for _ in range(2)]
    wait_for(lambda: r0.llen(RAN_KEY) > 0, what="a first job")
    outcomes = {i: queue.cancel_or_delete(i) for i in ids}  # deletes the ones already done
    live = [i for i in ids if outcomes[i] != "deleted"]
    wait_for(lambda: all_done(queue, live), timeout=60, what="jobs settled")
    ran = {t.decode() for t in r0.lrange(RAN_KEY, 0, -1)}
    assert set(outcomes.values()) <= {"cancelled", "running", "deleted"}
    assert "cancelled" in outcomes.values(), "the race should cancel some jobs"
    for i, job_id in enumerate(ids):
        rec = queue.get_job(job_id)
        if outcomes[job_id] == "cancelled":
            assert rec["status"] == "cancelled" and str(i) not in ran
        elif outcomes[job_id] == "running":
            assert rec["status"] == "finished" and str(i) in ran
        else:
            assert rec is None and str(i) in ran
    # both registered, so both have their SIGTERM handling (one may have had no job at all)
    q1 = redis.Redis.from_url(redis_url, db=1)
    wait_for(lambda: q1.zcard("queue:workers") == 2, timeout=30, what="two workers")
    for w in workers:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=30) == 0


def test_worker_killed_mid_job_is_finished_by_another(r0, redis_url, spawn, settings):
    queue = JobQueue(settings)
    job_id = queue.put("sleep", {"tag": "slow", "seconds": 2})
    doomed = spawn(redis_url, **FAST)
    rec = wait_for(
        lambda: (queue.get_job(job_id) or {}).get("status") == "running" and queue.get_job(job_id),
        what="the job to start",
    )
    assert rec["worker"].split(":")[1] == str(doomed.pid)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = spawn(redis_url, **FAST)
    wait_for(lambda: all_done(queue, [job_id]), timeout=30, what="the rescue")
    rec = queue.get_job(job_id)
    assert rec["status"] == "finished" and rec["attempts"] == 2
    assert queue.get_image(job_id).endswith(str(rescuer.pid).encode())
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0
    assert r0.lrange(FINISHED_KEY, 0, -1) == [job_id.encode()]


def test_sigterm_mid_job_finishes_it_within_the_grace(redis_url, spawn, settings):
    queue = JobQueue(settings)
    job_id = queue.put("sleep", {"seconds": 1.0})
    later = queue.put("noop", {})
    worker = spawn(redis_url, **FAST)
    wait_for(lambda: statuses(queue, [job_id]) == ["running"], what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert statuses(queue, [job_id, later]) == ["finished", "queued"]  # no new job after SIGTERM
    assert queue.count() == 1


def test_sigterm_past_the_grace_puts_the_job_back(redis_url, spawn, settings):
    queue = JobQueue(settings)
    job_id = queue.put("sleep", {"seconds": 30})
    worker = spawn(redis_url, STOCKS_SHUTDOWN_GRACE="0.5", STOCKS_WORKER_TIMEOUT="1")
    wait_for(lambda: statuses(queue, [job_id]) == ["running"], what="the job to start")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    rec = queue.get_job(job_id)
    assert rec["status"] == "queued" and rec["attempts"] == 0  # put back, attempt refunded
    assert queue.get(block=False).id == job_id  # at the front of the queue


def test_redis_restart_with_jobs_queued_and_running(own_redis, spawn):
    url = own_redis.url
    queue = JobQueue(Settings(redis_url=url))
    ids = [queue.put("sleep", {"tag": str(i), "seconds": 0.4}) for i in range(12)]
    workers = [spawn(url, **FAST) for _ in range(2)]
    wait_for(lambda: "running" in statuses(queue, ids), what="a running job")
    assert "queued" in statuses(queue, ids)
    own_redis.restart(kill=True)
    wait_for(lambda: all_done(queue, ids), timeout=60, what="all jobs after the restart")
    assert set(statuses(queue, ids)) == {"finished"}
    for w in workers:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=30) == 0


def batch_held(url: str) -> bool:
    """Some worker holds more than one job: a batch of short ones."""
    q1 = redis.Redis.from_url(url, db=1)
    return any(q1.llen(key) > 1 for key in q1.scan_iter("queue:processing:*"))


def test_redis_restart_while_workers_hold_batches_of_short_jobs(own_redis, spawn):
    url = own_redis.url
    queue = JobQueue(Settings(redis_url=url))
    ids = [queue.put("noop", {"tag": str(i)}) for i in range(3000)]
    workers = [spawn(url, **FAST) for _ in range(2)]
    wait_for(lambda: batch_held(url), what="a batch held")
    own_redis.restart(kill=True)  # the AOF keeps all but the last second or so
    wait_for(lambda: all_done(queue, ids), timeout=90, what="all jobs after the restart")
    assert set(statuses(queue, ids)) == {"finished"}
    assert all(queue.get_image(i).startswith(b"noop:") for i in ids)
    for w in workers:
        w.send_signal(signal.SIGTERM)
        assert w.wait(timeout=30) == 0


def test_sigterm_while_draining_short_jobs_records_them_and_puts_back_the_rest(
    r0, redis_url, spawn, settings
):
    queue = JobQueue(settings)
    ids = [queue.put("noop", {"tag": str(i)}) for i in range(5000)]
    worker = spawn(redis_url, **FAST)
    wait_for(lambda: batch_held(redis_url), what="a batch held")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    finished = {i.decode() for i in r0.lrange(FINISHED_KEY, 0, -1)}
    assert 0 < len(finished) < len(ids)
    for job_id, status in zip(ids, statuses(queue, ids), strict=True):
        assert status == ("finished" if job_id in finished else "queued")
    assert batch_held(redis_url) is False and queue.count() == len(ids) - len(finished)
    waiting = [i.decode() for i in redis.Redis.from_url(redis_url, db=1).lrange(
        "queue:waiting", 0, -1)][::-1]  # fmt: skip
    assert waiting == [i for i in ids if i not in finished]  # still in order
    assert {queue.get_job(i)["attempts"] for i in waiting[:40]} == {0}  # refunded


def test_children_of_a_killed_supervisor_stop_by_themselves(tmp_path, redis_url):
    """SIGKILL of `stocks worker --concurrency 2` leaves no worker taking jobs unseen."""
    from obs_stack import start_worker  # noqa: PLC0415

    supervisor = start_worker(redis_url, tmp_path / "worker.log", "--concurrency", "2")
    try:
        queue = JobQueue(Settings(redis_url=redis_url))
        wait_for(lambda: queue.stats()["workers"] == 2, 60, "two workers heartbeating")
        children = descendants(supervisor.pid)
        assert len(children) >= 2
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        wait_for(lambda: not any(running(p) for p in children), 30, "the children to stop")
    finally:
        stop_process(supervisor)
