"""The reliable queue and its compare-and-set transitions, driven in-process on a real Redis."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
import redis
from conftest import wait_for

from stocks import jobs, keys, metrics, scripts
from stocks.config import Settings
from stocks.jobs import JobError, JobQueue
from stocks.redis_server import env_with_redis
from stocks.worker.loop import Pace, Worker


@pytest.fixture
def dbs(redis_url):
    return {n: redis.Redis.from_url(redis_url, db=n) for n in (1, 2, 3)}


def test_put_writes_the_record_and_the_queue_entry_together(dbs, settings):
    job_id = JobQueue(settings).put("line", {"symbols": ["AAPL"], "n": 1.5})
    assert dbs[1].lrange("queue:waiting", 0, -1) == [job_id.encode()]
    raw = dbs[2].hgetall(f"job:{job_id}")
    assert raw[b"status"] == b"queued"
    assert orjson.loads(raw[b"params"]) == {"symbols": ["AAPL"], "n": 1.5}  # JSON, no pickle
    assert dbs[2].zrange("jobs:all", 0, -1) == [job_id.encode()]


def test_a_refused_enqueue_leaves_nothing(dbs, settings):
    dbs[1].set("queue:waiting", "not a list")
    with pytest.raises(redis.ResponseError):
        JobQueue(settings).put("line", {"symbols": ["AAPL"]})
    assert dbs[2].dbsize() == 0
    with pytest.raises(TypeError):
        JobQueue(settings).put("line", {"bad": object()})  # not JSON: refused before Redis
    assert dbs[2].dbsize() == 0


def test_putting_an_id_again_changes_nothing_even_after_the_job_finished(dbs, settings):
    queue = JobQueue(settings, "w1")
    job_id = queue.put("line", {"i": 1})
    assert queue.put("line", {"i": 1}, job_id=job_id) == job_id  # still queued: one entry
    assert dbs[1].lrange("queue:waiting", 0, -1) == [job_id.encode()]
    queue.finish(queue.get(timeout=0.5), b"img", "image/png")
    before = dbs[2].hgetall(f"job:{job_id}")
    queue.put("line", {"i": 2}, job_id=job_id)  # e.g. a retry whose first reply was lost
    assert dbs[2].hgetall(f"job:{job_id}") == before
    assert before[b"status"] == b"finished"
    assert dbs[1].llen("queue:waiting") == 0 and queue.get(block=False) is None
    with pytest.raises(ValueError):
        queue.put("line", {}, job_id="not-an-id")


def test_fifo_and_the_job_moves_into_the_workers_own_list(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    ids = [queue.put("line", {"i": i}) for i in range(3)]
    job = queue.get(timeout=0.5)
    assert job.id == ids[0] and job.params == {"i": 0} and job.attempts == 1
    assert dbs[1].lrange("queue:processing:w1", 0, -1) == [job.id.encode()]
    rec = jobq.get_job(job.id)
    assert rec["status"] == "running" and rec["worker"] == "w1" and rec["started_at"]
    assert queue.finish(job, b"img", "image/png").status == "finished"
    assert dbs[1].llen("queue:processing:w1") == 0
    assert jobq.get_image(job.id) == b"img"
    assert jobq.get_job(job.id)["content_type"] == "image/png"


def test_finish_can_take_the_next_job_in_the_same_step(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    first, second = queue.put("line", {}), queue.put("line", {})
    outcome = queue.finish(queue.get(timeout=0.5), b"1", "image/png", take_next=True)
    assert outcome.status == "finished" and outcome.next_job.id == second
    assert jobq.get_job(second)["status"] == "running"
    assert jobq.get_job(first)["status"] == "finished"
    assert queue.finish(outcome.next_job, b"2", "image/png", take_next=True).next_job is None


def test_get_times_out_on_an_empty_queue(dbs, settings):
    started = time.monotonic()
    assert JobQueue(settings).get(timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2


def test_a_cancelled_job_is_never_handed_out_even_if_already_taken(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    cancelled, runnable = queue.put("line", {}), queue.put("line", {})
    # simulate the race: the id is already in the worker's list when the user cancels
    dbs[1].lmove("queue:waiting", "queue:processing:w1", "RIGHT", "LEFT")
    assert jobq.cancel_or_delete(cancelled) == "cancelled"
    assert jobq.get_job(cancelled)["status"] == "cancelled"
    assert queue.release_own() == (0, 0)  # a cancelled leftover is dropped, not requeued
    job = queue.get(timeout=0.2)
    assert job.id == runnable
    dbs[1].lpush("queue:waiting", cancelled)  # even a stray duplicate entry is skipped
    assert queue.get(timeout=0.2) is None
    assert jobq.get_job(cancelled)["status"] == "cancelled"
    assert dbs[1].llen("queue:processing:w1") == 1  # only the running one


def requeued_total(kind: str) -> float:
    counter = metrics.families().jobs.jobs_requeued
    samples = next(iter(counter.collect())).samples
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels["kind"] == kind)


def test_a_stale_worker_cannot_overwrite_a_finished_job(dbs, monkeypatch, jobq, settings, caplog):
    settings = settings.replace(worker_timeout=0.2)
    slow, fast = JobQueue(settings, "slow"), JobQueue(settings, "fast")
    job_id = slow.put("line", {})
    slow.heartbeat()
    old = slow.get(timeout=0.5)
    time.sleep(0.4)  # "slow" stops heartbeating
    fast.heartbeat()
    before = requeued_total("line")
    with caplog.at_level(logging.WARNING, logger="stocks.jobs"):
        assert fast.reap() == (1, 0)
    assert requeued_total("line") == before + 1  # counted under the job's own kind
    assert [r.job_ids for r in caplog.records if hasattr(r, "job_ids")] == [[job_id]]
    new = fast.get(timeout=0.5)
    assert new.id == job_id and new.attempts == 2 and new.token != old.token
    assert fast.finish(new, b"good", "image/png").status == "finished"
    finished = jobq.get_job(job_id)

    assert slow.finish(old, b"stale", "image/png").status == "stale"
    assert slow.fail(old, "late failure").status == "stale"
    assert slow.put_back(old).status == "stale"
    assert fast.finish(new, b"again", "image/png").status == "finished"  # replay: no change
    assert jobq.get_job(job_id) == finished
    assert jobq.get_image(job_id) == b"good"
    assert dbs[1].llen("queue:waiting") == 0


def test_only_the_current_attempt_can_finish_a_running_job(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    queue.put("line", {})
    job = queue.get(timeout=0.5)
    impostor = jobs.Job(job.id, job.kind, job.params, "0" * 16, job.attempts)
    assert queue.finish(impostor, b"x", "image/png").status == "stale"
    assert jobq.get_job(job.id)["status"] == "running"
    assert jobq.get_image(job.id) is None


def test_the_reaper_gives_up_after_max_attempts(dbs, monkeypatch, jobq, settings):
    settings = settings.replace(worker_timeout=0.1, max_attempts=2)
    reaper = JobQueue(settings, "reaper")
    job_id = reaper.put("line", {})
    for attempt in (1, 2):
        dying = JobQueue(settings, f"dying{attempt}")
        dying.heartbeat()
        assert dying.get(timeout=0.5).attempts == attempt
        time.sleep(0.25)
        assert reaper.reap() == ((1, 0) if attempt == 1 else (0, 1))
    rec = jobq.get_job(job_id)
    assert rec["status"] == "failed" and rec["attempts"] == 2
    assert "stopped responding" in rec["error"] and "2 attempts" in rec["error"]
    assert dbs[1].zcard("queue:workers") == 0
    assert reaper.get(timeout=0.1) is None


def test_a_live_worker_is_not_reaped(dbs, monkeypatch, settings):
    settings = settings.replace(worker_timeout=5)
    busy, other = JobQueue(settings, "busy"), JobQueue(settings, "other")
    busy.put("line", {})
    busy.heartbeat()
    job = busy.get(timeout=0.5)
    assert other.reap() == (0, 0)
    assert busy.finish(job, b"x", "image/png").status == "finished"


class LostReplies:
    """Drops the reply to the next command carrying a marker, after Redis has run it: what
    a worker sees when its connection dies on the way back."""

    def __init__(self, monkeypatch):
        self.armed: list[bytes] = []
        self.lost = 0
        send, read = redis.Connection.send_packed_command, redis.Connection.read_response
        lost = self

        def send_packed_command(conn, command, check_health=True):
            send(conn, command, check_health)  # may connect first, which sends commands too
            parts = command if isinstance(command, list) else [command]
            conn._test_sent = b"".join(bytes(part) for part in parts)

        def read_response(conn, *args, **kwargs):
            reply = read(conn, *args, **kwargs)
            if lost.armed and lost.armed[0] in getattr(conn, "_test_sent", b""):
                lost.armed.pop(0)
                lost.lost += 1
                raise redis.ConnectionError("reply lost on the way back (test)")
            return reply

        monkeypatch.setattr(redis.Connection, "send_packed_command", send_packed_command)
        monkeypatch.setattr(redis.Connection, "read_response", read_response)

    def next_reply_to(self, marker: bytes, times: int = 1) -> None:
        self.armed += [marker] * times


@pytest.fixture
def lost_replies(monkeypatch):
    return LostReplies(monkeypatch)


def script(name: str) -> bytes:
    return scripts.SHAS[name].encode()


@pytest.mark.parametrize("times", [1, 2])  # 2: the quick resend is lost too, then backoff
def test_a_lost_reply_to_finish_and_take_hands_out_the_job_it_took(
    dbs, lost_replies, times, jobq, settings
):
    queue = JobQueue(settings, "w1")
    first, second, third = (queue.put("line", {"n": i}) for i in range(3))
    job = queue.get(timeout=0.5)
    lost_replies.next_reply_to(script("finish"), times)
    outcome = queue.finish(job, b"img", "image/png", take_next=True)
    assert lost_replies.lost == times
    assert outcome.status == "finished" and jobq.get_image(first) == b"img"
    assert outcome.next_job.id == second  # not the third, with the second stranded
    rec = jobq.get_job(second)
    assert rec["status"] == "running" and rec["attempts"] == 1
    assert rec["token"] == outcome.next_job.token
    assert dbs[1].lrange("queue:processing:w1", 0, -1) == [second.encode()]
    assert dbs[1].lrange("queue:waiting", 0, -1) == [third.encode()]


def test_a_lost_reply_to_take_hands_out_the_job_it_took(dbs, lost_replies, jobq, settings):
    queue = JobQueue(settings, "w1")
    first, second = queue.put("line", {}), queue.put("line", {})
    lost_replies.next_reply_to(script("take"))
    job = queue.get(block=False)
    assert lost_replies.lost == 1
    assert job.id == first and jobq.get_job(first)["token"] == job.token
    assert dbs[1].lrange("queue:processing:w1", 0, -1) == [first.encode()]
    assert dbs[1].lrange("queue:waiting", 0, -1) == [second.encode()]


@pytest.mark.parametrize("lost", [b"BLMOVE", script("start")], ids=["blmove", "start"])
def test_a_lost_reply_while_blocked_on_an_empty_queue_strands_nothing(
    dbs, lost_replies, lost, jobq, settings
):
    queue, producer = JobQueue(settings, "w1"), JobQueue(settings, "producer")
    ids = []
    timer = threading.Timer(0.2, lambda: ids.extend([producer.put("line", {}) for _ in range(2)]))
    timer.start()
    lost_replies.next_reply_to(lost)
    job = queue.get(timeout=3)
    timer.join()  # the worker may wake after the first put, before ids is filled
    assert lost_replies.lost == 1
    assert job.id == ids[0] and job.attempts == 1
    assert jobq.get_job(ids[0])["status"] == "running"
    assert dbs[1].lrange("queue:processing:w1", 0, -1) == [ids[0].encode()]
    assert dbs[1].lrange("queue:waiting", 0, -1) == [ids[1].encode()]


def test_a_stray_entry_of_a_job_running_elsewhere_is_skipped(dbs, settings):
    holder, other = JobQueue(settings, "w1"), JobQueue(settings, "w2")
    job_id = holder.put("line", {})
    job = holder.get(timeout=0.5)
    dbs[1].lpush("queue:waiting", job_id)  # a duplicate entry, however it came about
    assert other.get(block=False) is None
    assert dbs[1].llen("queue:processing:w2") == 0 and dbs[1].llen("queue:waiting") == 0
    assert holder.finish(job, b"x", "image/png").status == "finished"


def test_a_stopped_worker_is_not_registered_again_by_a_late_heartbeat(dbs, monkeypatch, settings):
    settings = settings.replace(worker_timeout=0.5)
    unregistered = threading.Event()
    beat, unregister = JobQueue.heartbeat, JobQueue.unregister

    def heartbeat(self):
        if threading.current_thread().name == "heartbeat":
            unregistered.wait(1.0)  # a beat in flight while the worker stops
        beat(self)

    def unregister_then_tell(self):
        unregister(self)
        unregistered.set()

    monkeypatch.setattr(JobQueue, "heartbeat", heartbeat)
    monkeypatch.setattr(JobQueue, "unregister", unregister_then_tell)
    until = time.monotonic() + 0.2
    Worker(JobQueue(settings, "w1"), lambda kind, params: (b"", "image/png")).run(
        stop=lambda: time.monotonic() > until
    )
    time.sleep(0.2)
    assert dbs[1].zcard("queue:workers") == 0


def die_holding_jobs(redis_url: str, body: str) -> None:
    """Run ``body`` in a new Python process, which must SIGKILL itself (holding jobs)."""
    code = (
        "import os, signal\nfrom stocks.config import Settings\n"
        "from stocks.jobs import JobQueue\nfrom stocks.worker.loop import Worker\n"
        "settings = Settings.from_env()\n" + body
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env_with_redis(redis_url))
    assert proc.returncode == -signal.SIGKILL


def test_a_consumer_killed_mid_job_is_reaped(dbs, redis_url, monkeypatch, jobq, settings):
    settings = settings.replace(worker_timeout=0.5)
    reaper = JobQueue(settings, "reaper")
    job_id = reaper.put("line", {})
    die_holding_jobs(
        redis_url,
        "job = next(JobQueue(settings, 'consumer').consume(timeout=5))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    assert jobq.get_job(job_id)["status"] == "running"
    wait_for(lambda: reaper.reap() == (1, 0), timeout=5, what="the reaper to put it back")
    assert reaper.get(timeout=0.5).id == job_id


def test_put_back_refunds_the_attempt_and_goes_first(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    first = queue.put("line", {})
    queue.put("line", {})
    job = queue.get(timeout=0.5)
    assert queue.put_back(job, refund=True).status == "queued"
    rec = jobq.get_job(first)
    assert rec["status"] == "queued" and rec["attempts"] == 0 and rec["started_at"] is None
    assert queue.get(timeout=0.5).id == first


def test_release_own_puts_back_what_a_worker_holds(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    job_id = queue.put("line", {})
    queue.get(timeout=0.5)  # lost by the process (e.g. Redis went away mid-job)
    assert queue.release_own() == (1, 0)
    rec = jobq.get_job(job_id)
    assert rec["status"] == "queued" and rec["attempts"] == 1
    assert dbs[1].llen("queue:processing:w1") == 0


def test_the_worker_runs_handlers_and_records_outcomes(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    ids = {name: queue.put(name, {"n": i}) for i, name in enumerate(["ok", "bad", "bug", "blip"])}
    blips = []
    done = []

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        done.append(kind)
        if kind == "bad":
            raise JobError("no prices in that range")
        if kind == "bug":
            raise KeyError("oops")
        if kind == "blip" and not blips:
            blips.append(1)
            raise redis.ConnectionError("blip")
        return orjson.dumps(params), "application/json"

    worker = Worker(queue, handle)
    worker.run(
        stop=lambda: len(set(done)) == 4 and jobq.get_job(ids["blip"])["status"] != "running"
    )
    assert jobq.get_job(ids["ok"])["status"] == "finished"
    assert jobq.get_image(ids["ok"]) == b'{"n":0}'
    bad = jobq.get_job(ids["bad"])
    assert bad["status"] == "failed" and bad["error"] == "no prices in that range"
    assert bad["attempts"] == 1
    bug = jobq.get_job(ids["bug"])
    assert bug["status"] == "failed" and "internal error" in bug["error"]
    blip = jobq.get_job(ids["blip"])
    assert blip["status"] == "finished" and blip["attempts"] == 1  # retried in place
    assert dbs[1].zcard("queue:workers") == 0  # unregistered on the way out


def test_interrupted_handler_puts_the_job_back(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    job_id = queue.put("line", {})

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        raise jobs.Interrupted()

    with pytest.raises(jobs.Interrupted):
        Worker(queue, handle).run()
    rec = jobq.get_job(job_id)
    assert rec["status"] == "queued" and rec["attempts"] == 0
    assert dbs[1].lrange("queue:waiting", 0, -1) == [job_id.encode()]


def test_enqueue_across_databases_is_one_transaction_in_the_aof(own_redis):
    settings = Settings(redis_url=own_redis.url)
    jobq = JobQueue(settings, "reader")
    job_id = JobQueue(settings).put("line", {"symbols": ["AAPL"]})
    for _ in range(100):  # everysec: the write may be postponed a moment
        aof = b"".join(path.read_bytes() for path in own_redis.aof_files())
        if b"EXEC" in aof:
            break
        time.sleep(0.05)
    multi = aof.rindex(b"MULTI")
    exec_ = aof.index(b"EXEC", multi)
    block = aof[multi:exec_]
    assert job_id.encode() in block
    # one block, switching databases inside it (Redis 6 also selects the first one there)
    assert b"LPUSH" in block and b"HSET" in block and b"SELECT" in block
    own_redis.restart(kill=True)
    assert jobq.get_job(job_id)["status"] == "queued"
    assert redis.Redis.from_url(own_redis.url, db=1).lrange("queue:waiting", 0, -1) == [
        job_id.encode()
    ]


# --- batches of short jobs ---------------------------------------------------------------


def test_the_pace_batches_only_jobs_much_shorter_than_a_round_trip():
    pace = Pace(most=32)
    assert pace.batch() == 1  # nothing known yet
    for _ in range(5):
        pace.observe(0.00002)
    assert pace.batch() == 32
    pace.observe(0.05)  # one chart is enough to go back to one at a time
    assert pace.batch() == 1
    for _ in range(10):  # then the average comes down again, over a few jobs
        pace.observe(0.0005)
    assert 1 < pace.batch() < 32


def test_batches_can_be_turned_off(dbs, monkeypatch, jobq, settings):
    settings = settings.replace(batch_max=1)
    queue = JobQueue(settings, "w1")
    ids = [queue.put("noop", {}) for _ in range(50)]
    held: list[int] = []

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        held.append(dbs[1].llen("queue:processing:w1"))
        return b"", "text/plain"

    Worker(queue, handle, idle_timeout=0.05).run(stop=lambda: len(held) == 50)
    assert held == [1] * 50
    assert {jobq.get_job(i)["status"] for i in ids} == {"finished"}


def test_short_jobs_share_round_trips_and_charts_are_taken_alone(dbs, monkeypatch, jobq, settings):
    queue = JobQueue(settings, "w1")
    budget = 0.015  # slack for a slow machine, < a chart
    held: dict[str, list[int]] = {"short": [], "chart": []}

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        held[kind].append(dbs[1].llen("queue:processing:w1"))
        if kind == "chart":
            time.sleep(0.02)
        return kind.encode(), "text/plain"

    for kind, n in (("short", 200), ("chart", 8)):
        ids = [queue.put(kind, {"i": i}) for i in range(n)]
        worker = Worker(queue, handle, idle_timeout=0.05, budget=budget)
        worker.run(stop=lambda: len(held[kind]) == n)  # noqa: B023
        assert [jobq.get_job(i)["status"] for i in ids] == ["finished"] * n
        assert all(jobq.get_image(i) == kind.encode() for i in ids)
    assert max(held["short"]) > 1  # several short jobs held at once: one take for many
    assert max(held["short"]) <= settings.batch_max
    assert held["chart"] == [1] * 8  # never holds a chart it is not drawing
    assert dbs[1].llen("queue:processing:w1") == 0


def test_a_job_tried_before_is_taken_alone(dbs, settings):
    queue = JobQueue(settings, "w1")
    first, retried, fresh, last = (queue.put("noop", {}) for _ in range(4))
    dbs[2].hset(f"job:{retried}", "attempts", 1)  # its worker died holding it
    _, taken = queue.finish_many([], take=5)
    assert [job.id for job in taken] == [first]
    assert dbs[1].lrange("queue:waiting", 0, -1) == [j.encode() for j in (last, fresh, retried)]
    _, taken = queue.finish_many([], take=5)
    assert [(job.id, job.attempts) for job in taken] == [(retried, 2)]
    _, taken = queue.finish_many([], take=5)
    assert [job.id for job in taken] == [fresh, last]


def test_a_batch_stops_before_an_identical_request_which_then_copies_the_image(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    first = queue.put("line", {"s": "AAPL"}, cache_key="same")
    twin = queue.put("line", {"s": "AAPL"}, cache_key="same")
    other = queue.put("line", {"s": "MSFT"}, cache_key="other")
    _, taken = queue.finish_many([], take=5)
    assert [job.id for job in taken] == [first]  # the twin waits for this one's image
    statuses, taken = queue.finish_many([(taken[0], b"PNG", "image/png")], take=5)
    assert statuses == ["finished"] and [job.id for job in taken] == [other]
    twin_rec = jobq.get_job(twin)
    assert twin_rec["status"] == "finished" and jobq.get_image(twin) == b"PNG"  # copied


def test_jobs_a_take_ends_itself_are_logged_and_counted(dbs, jobq, settings, caplog):
    """A copied image (no drawing) counts as finished; a job out of attempts as failed."""
    settings = settings.replace(max_attempts=1)
    queue = JobQueue(settings, "w1")
    of_line = metrics.families().kind("line")
    finished, failed = of_line.jobs_finished._value.get(), of_line.jobs_failed._value.get()
    first = queue.put("line", {"s": "AAPL"}, cache_key="same")
    queue.finish(queue.get(timeout=0.5), b"PNG", "image/png")
    twin = queue.put("line", {"s": "AAPL"}, cache_key="same")
    spent = queue.put("line", {"s": "MSFT"})
    dbs[2].hset(keys.job_key(spent), "attempts", 1)  # tried already, by a worker that vanished
    with caplog.at_level(logging.INFO, logger="stocks.jobs"):
        assert queue.get(timeout=0.2) is None  # neither is left to run
    events = {r.job_id: r for r in caplog.records if hasattr(r, "job_id")}
    assert set(events) == {twin, spent}
    assert (events[twin].event, events[twin].copied_from, events[twin].kind) == (
        "finished",
        first,
        "line",
    )
    assert events[spent].event == "failed" and events[spent].error == "gave up after 1 attempts"
    assert of_line.jobs_finished._value.get() == finished + 1  # the twin (the worker counts
    assert of_line.jobs_failed._value.get() == failed + 1  # what it draws itself)
    assert jobq.get_job(twin)["status"] == "finished" and jobq.get_image(twin) == b"PNG"
    assert jobq.get_job(spent)["status"] == "failed"


def test_a_lost_reply_to_a_batch_take_hands_out_that_batch(dbs, lost_replies, jobq, settings):
    queue = JobQueue(settings, "w1")
    ids = [queue.put("noop", {"i": i}) for i in range(8)]
    job = queue.get(timeout=0.5)
    lost_replies.next_reply_to(script("finish"))
    statuses, taken = queue.finish_many([(job, b"x", "text/plain")], take=5)
    assert lost_replies.lost == 1
    assert statuses == ["finished"]
    assert [t.id for t in taken] == ids[1:6]  # not the next five, with these stranded
    assert all(jobq.get_job(t.id)["token"] == t.token for t in taken)
    assert dbs[1].lrange("queue:processing:w1", 0, -1) == [i.encode() for i in ids[5:0:-1]]
    assert dbs[1].lrange("queue:waiting", 0, -1) == [i.encode() for i in ids[:5:-1]]


@pytest.mark.parametrize("how", ["stop", "interrupt"])  # SIGTERM; its grace running out
def test_stopping_mid_batch_records_what_ran_and_puts_back_the_rest_in_order(
    dbs, how, jobq, settings
):
    queue = JobQueue(settings, "w1")
    ids = [queue.put("noop", {"i": i}) for i in range(120)]
    ran: list[int] = []

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        if how == "interrupt" and params["i"] == 100:
            raise jobs.Interrupted()
        ran.append(params["i"])
        return b"done", "text/plain"

    if how == "stop":
        Worker(queue, handle, idle_timeout=0.05).run(stop=lambda: len(ran) == 100)
    else:
        with pytest.raises(jobs.Interrupted):
            Worker(queue, handle, idle_timeout=0.05).run()
    assert ran == list(range(100))
    for i, job_id in enumerate(ids):
        rec = jobq.get_job(job_id)
        if i < 100:
            assert rec["status"] == "finished" and jobq.get_image(job_id) == b"done"
        else:  # held in a batch but not run: queued again, attempt refunded
            assert rec["status"] == "queued" and rec["attempts"] == 0
    assert dbs[1].llen("queue:processing:w1") == 0
    assert queue.get(timeout=0.5).id == ids[100]  # still first come, first served
    assert dbs[1].lrange("queue:waiting", 0, -1) == [i.encode() for i in ids[:100:-1]]


def test_results_do_not_wait_for_the_slow_rest_of_a_batch(dbs, monkeypatch, jobq, settings):
    monkeypatch.setattr(Pace, "batch", lambda self: 10)
    queue = JobQueue(settings, "w1")
    seen: dict[int, list[str]] = {}
    alone = queue.put("noop", {"i": -1})  # the first job is taken alone, the rest by ten
    kinds = ["noop"] * 4 + ["slow"] * 3 + ["noop"] * 3
    ids = [alone] + [queue.put(kind, {"i": i}) for i, kind in enumerate(kinds)]

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        seen[params["i"]] = [jobq.get_job(j)["status"] for j in ids]
        if kind == "slow":
            time.sleep(0.05)
        return b"", "text/plain"

    Worker(queue, handle, idle_timeout=0.05).run(stop=lambda: len(seen) == len(ids))
    # a result waits for at most one job it did not ask for (plus BATCH_BUDGET): once a
    # slow job has run, everything before it is recorded
    assert seen[5][:5] == ["finished"] * 5
    assert seen[6][:6] == ["finished"] * 6
    assert [jobq.get_job(j)["status"] for j in ids] == ["finished"] * len(ids)


def test_a_worker_killed_mid_batch_loses_nothing_and_costs_its_batch_mates_one_attempt(
    dbs, redis_url, monkeypatch, jobq, settings
):
    settings = settings.replace(worker_timeout=0.5)
    queue = JobQueue(settings, "other")
    ids = [queue.put("noop", {"i": i}) for i in range(150)]
    die_holding_jobs(
        redis_url,
        "def handle(kind, params):\n"
        "    if params['i'] == 100:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return b'victim', 'text/plain'\n"
        "Worker(JobQueue(settings, 'victim'), handle).run()\n",
    )
    held = [i.decode() for i in dbs[1].lrange("queue:processing:victim", 0, -1)]
    assert len(held) > 1  # it held more than the job it died in
    recorded = [i for i in ids if jobq.get_job(i)["status"] == "finished"]
    assert all(jobq.get_image(i) == b"victim" for i in recorded)
    requeued = wait_for(lambda: queue.reap()[0], timeout=5, what="the reaper")
    assert requeued == len(held)

    ran: list[str] = []
    alone: list[bool] = []

    def handle(kind: str, params: dict) -> tuple[bytes, str]:
        ran.append(ids[params["i"]])
        if ran[-1] in held:  # tried before: runs by itself
            alone.append(dbs[1].llen("queue:processing:other") == 1)
        return b"other", "text/plain"

    Worker(queue, handle, idle_timeout=0.05).run(stop=lambda: len(ran) == 150 - len(recorded))
    assert sorted(ran + recorded) == sorted(ids)  # each finished once, by one of the two
    assert alone == [True] * len(held)
    assert [jobq.get_job(i)["status"] for i in ids] == ["finished"] * 150
    for job_id in ids:
        assert jobq.get_job(job_id)["attempts"] == (2 if job_id in held else 1)


# --- the image budget --------------------------------------------------------------------


def finish_with(queue: JobQueue, size: int, cache_key: str = "") -> str:
    job_id = queue.put("line", {"size": size}, cache_key)
    job = queue.get(timeout=0.5)
    assert job.id == job_id
    assert queue.finish(job, b"x" * size, "image/png").status == "finished"
    return job_id


def test_images_stay_within_the_budget_oldest_dropped_first(dbs, jobq, settings):
    queue = JobQueue(settings.replace(image_budget_mb=2500 / 1024 / 1024), "w1")
    ids = [finish_with(queue, 1000) for _ in range(5)]
    kept = [i for i in ids if jobq.get_image(i) is not None]
    assert kept == ids[-2:]  # 2 x 1000 fit in 2500, a third does not
    assert int(dbs[3].get("images:bytes")) == 2000
    assert {jobq.get_job(i)["status"] for i in ids} == {"finished"}  # records stay
    assert sum(len(dbs[3].get(k) or b"") for k in dbs[3].scan_iter("image:*")) == 2000


def test_an_identical_request_whose_image_was_dropped_is_drawn_again(dbs, jobq, settings):
    queue = JobQueue(settings.replace(image_budget_mb=2500 / 1024 / 1024), "w1")
    first = finish_with(queue, 1000, cache_key="same")
    finish_with(queue, 1000)
    third = finish_with(queue, 1000)  # pushes the first image out
    assert jobq.get_image(first) is None
    again = queue.put("line", {}, "same")
    job = queue.get(timeout=0.5)  # not answered from a missing image: drawn again
    assert job is not None and job.id == again
    queue.finish(job, b"y" * 1000, "image/png")
    assert jobq.get_image(again) == b"y" * 1000
    copy = queue.put("line", {}, "same")
    assert queue.get(block=False) is None  # the copy finished in the take script
    assert jobq.get_image(copy) == b"y" * 1000
    assert jobq.get_image(again) == b"y" * 1000  # the source of a copy is not its victim
    assert jobq.get_image(third) is None  # the oldest made room for the copy
    assert int(dbs[3].get("images:bytes")) == 2000


def test_deleting_a_job_gives_its_bytes_back(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    job_id = finish_with(queue, 700)
    assert int(dbs[3].get("images:bytes")) == 700
    assert queue.cancel_or_delete(job_id) == "deleted"
    assert int(dbs[3].get("images:bytes")) == 0
    assert dbs[3].zcard("images:order") == 0 and dbs[3].hlen("images:sizes") == 0


def test_ids_are_unguessable_and_each_owner_lists_only_its_own(dbs, jobq, settings):
    queue = JobQueue(settings, "w1")
    job_id = queue.put("line", {}, owner="alice")
    assert jobs.is_job_id(job_id) and len(job_id) == 46  # 128 random bits after the time
    mine = [queue.put("line", {"i": i}, owner="bob") for i in range(3)]
    anyone = queue.put("line", {})
    assert [r["id"] for r in jobq.list_jobs(owner="bob")[0]] == mine[::-1]
    assert [r["id"] for r in jobq.list_jobs(owner="alice")[0]] == [job_id]
    assert jobq.list_jobs(owner="carol")[0] == []
    assert jobq.get_job(mine[0])["owner"] == "bob" and jobq.get_job(anyone)["owner"] is None
    assert queue.cancel_or_delete(mine[0]) == "cancelled"
    assert queue.cancel_or_delete(mine[0]) == "deleted"
    assert [r["id"] for r in jobq.list_jobs(owner="bob")[0]] == mine[:0:-1]
    assert dbs[2].zcard("jobs:owner:bob") == 2
