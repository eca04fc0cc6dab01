"""JSON log lines with request and job ids: the formatter, the request middleware, and the
request id of a POST /jobs followed into the worker's lines (real server, worker, Redis)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from conftest import wait_for
from obs_stack import http_call, json_lines, load_series, start_api, start_worker, stop

from stocks import jobs, logs, metrics
from stocks.api.observe import request_id
from stocks.config import Settings
from stocks.jobs import Interrupted, JobError
from stocks.redis_server import RedisServer
from stocks.worker.loop import Worker

KEY = "logs-test-api-key-0123456789"
PASSWORD = "logs-test-redis-password-42"


@pytest.fixture
def capture():
    """Logging set up as `stocks` does it, into a buffer; the root logger restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()

    def setup(fmt: str) -> io.StringIO:
        logs.setup(Settings(log_format=fmt), buffer)
        return buffer

    yield setup
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_time_level_logger_message_and_fields(capture):
    out = capture("json")
    logging.getLogger("stocks.x").info("hello %s", "there", extra={"job_id": "j1", "n": 3})
    line = json.loads(out.getvalue())
    assert line["level"] == "INFO" and line["logger"] == "stocks.x"
    assert line["message"] == "hello there" and line["job_id"] == "j1" and line["n"] == 3
    assert line["time"][:2] == "20" and "T" in line["time"]


def test_text_lines_are_readable_with_the_fields_after_the_message(capture):
    out = capture("text")
    logging.getLogger("stocks.x").warning("careful", extra={"job_id": "j2"})
    text = out.getvalue()
    assert not text.startswith("{") and "WARNING stocks.x careful job_id=j2" in text


def test_a_password_inside_a_url_never_reaches_a_line(capture):
    out = capture("json")
    logging.getLogger("stocks.x").error("cannot reach redis://:%s@db:6379/0", "s3cret")
    assert "s3cret" not in out.getvalue() and "redis://:***@db:6379/0" in out.getvalue()


def test_the_log_format_setting_is_checked():
    with pytest.raises(SystemExit, match="STOCKS_LOG_FORMAT"):
        logs.use_json("yaml")
    assert logs.use_json("auto", io.StringIO())  # not a terminal: JSON


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123_X.y:z", True), ("x" * 64, True), ("x" * 65, False), ("a b", False),
     ("<script>", False), ("", False), (None, False)],
)  # fmt: skip
def test_a_sent_request_id_is_kept_only_when_sane(sent, kept):
    rid = request_id(sent)
    assert (rid == sent) is kept and 1 <= len(rid) <= 64


def test_every_answer_echoes_its_request_id_cache_hits_too(client, r0, capture):
    out = capture("json")
    load_series(r0)
    url = "/tickers/AAPL/prices?start=2016-02-01&end=2016-02-10"
    first = client.get(url, headers={"X-Request-ID": "first-1"})
    second = client.get(url, headers={"X-Request-ID": "second-2"})  # from the answer cache
    generated = client.get("/tickers/NOPE", headers={"X-Request-ID": "bad id!"})
    assert first.headers["X-Request-ID"] == "first-1"
    assert second.headers["X-Request-ID"] == "second-2"
    assert generated.status_code == 404 and len(generated.headers["X-Request-ID"]) == 32
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    requests = {x["request_id"]: x for x in lines if x["logger"] == "stocks.request"}
    assert requests["first-1"]["cache"] == "miss" and requests["second-2"]["cache"] == "hit"
    for rid, status in (("first-1", 200), ("second-2", 200)):
        line = requests[rid]
        assert line["route"] == "/tickers/<symbol>/prices" and line["status"] == status
        assert line["method"] == "GET" and line["duration_ms"] >= 0 and "client" in line
    assert requests[generated.headers["X-Request-ID"]]["status"] == 404


def test_probes_are_logged_at_debug_only(client, capture):
    out = capture("json")
    assert client.get("/health").status_code == 200
    assert out.getvalue() == ""


def test_a_post_jobs_request_id_follows_the_job_into_the_worker(tmp_path, r0, redis_url):
    """Real `stocks serve` (2 processes) and `stocks worker`: the POST's id is in the API's
    request and enqueue lines and the worker's started/finished lines of that job."""
    load_series(r0)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    port, api = start_api(redis_url, api_log, STOCKS_API_KEYS=KEY)
    worker = start_worker(redis_url, worker_log, "--concurrency", "1")
    try:
        body = {"kind": "line", "symbols": ["AAPL"], "options": {"width": 420, "height": 300}}
        status, headers, answer = http_call(
            port, "POST", "/jobs", body, {"X-Request-ID": "e2e-job-request-1"}
        )
        assert status == 202 and headers["x-request-id"] == "e2e-job-request-1"
        job_id = json.loads(answer)["id"]
        # a write with a key: the key must appear in no line
        bar = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10}
        put = http_call(port, "PUT", "/tickers/AAPL/prices/2016-01-04", bar,
                        {"Authorization": f"Bearer {KEY}"})  # fmt: skip
        assert put[0] in (200, 201)

        def finished_line():
            return [
                x for x in json_lines(worker_log)
                if x.get("job_id") == job_id and x.get("event") == "finished"
            ]  # fmt: skip

        wait_for(finished_line, timeout=60, what="the worker's finished line")
    finally:
        stop(worker)
        stop(api)

    api_lines, worker_lines = json_lines(api_log), json_lines(worker_log)
    for line in api_lines + worker_lines:
        assert {"time", "level", "logger", "message"} <= set(line)
    post = [x for x in api_lines if x.get("route") == "/jobs" and x.get("method") == "POST"]
    assert len(post) == 1 and post[0]["status"] == 202
    assert post[0]["request_id"] == "e2e-job-request-1"
    enqueued = [x for x in api_lines if x.get("event") == "enqueued"]
    assert [(x["job_id"], x["request_id"], x["kind"]) for x in enqueued] == [
        (job_id, "e2e-job-request-1", "line")
    ]
    events = {x["event"]: x for x in worker_lines if x.get("job_id") == job_id}
    assert set(events) == {"started", "finished"}
    for event in events.values():
        assert event["request_id"] == "e2e-job-request-1" and event["kind"] == "line"
        assert event["attempt"] == 1 and event["worker"]
    assert events["finished"]["duration_ms"] > 0
    assert KEY not in api_log.read_text() and KEY not in worker_log.read_text()


@pytest.mark.parametrize("worker_class", ["granian", "gthread"])
def test_the_http_servers_own_lines_are_json_too(worker_class, tmp_path, redis_url):
    """Start-up, worker and access lines of granian and of gunicorn (the fallback)."""
    log = tmp_path / "api.log"
    env = {"STOCKS_WORKER_CLASS": worker_class, "STOCKS_ACCESS_LOG": "1"}
    port, api = start_api(redis_url, log, workers=1, **env)
    try:
        assert http_call(port, "GET", "/tickers")[0] == 200
    finally:
        stop(api)
    lines = json_lines(log)  # a line that is not JSON fails here
    server_lines = [x for x in lines if not x["logger"].startswith("stocks")]
    assert len(server_lines) >= 3, lines  # listening, a worker, the access line at least
    assert all({"time", "level", "logger", "message"} <= set(x) for x in server_lines)
    assert any("/tickers" in x["message"] for x in server_lines), server_lines


def test_no_redis_password_in_any_line(tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        log = tmp_path / "worker.log"
        worker = start_worker(server.url, log, "--concurrency", "1")
        wait_for(lambda: "ready" in log.read_text(), timeout=30, what="the worker ready")
        stop(worker)
        text = log.read_text()
        assert PASSWORD not in text
        ready = [x for x in json_lines(log) if "ready" in x["message"]]
        assert ready and ready[0]["redis"].startswith("redis://:***@127.0.0.1:")
    finally:
        server.stop(kill=True)


def test_failed_cancelled_and_requeued_jobs_each_log_one_event(settings, capture):
    """In-process worker loop on real Redis: every job event names its job, kind, attempt,
    worker and the request id kept in the record; the counters by kind follow."""
    out = capture("json")
    queue = jobs.JobQueue(settings, "events-worker")
    before = {k: metrics.families().kind(k) for k in ("bad", "slow", "line")}
    failed_before = before["bad"].jobs_failed._value.get()
    bad = queue.put("bad", {}, request_id="req-bad")
    cancelled = queue.put("line", {}, request_id="req-cancel")
    assert queue.cancel_or_delete(cancelled) == "cancelled"

    def handler(kind: str, params: dict) -> tuple[bytes, str]:
        if kind == "bad":
            raise JobError("no such chart")
        raise Interrupted("shutdown")  # "slow": put back, attempt refunded

    slow = queue.put("slow", {}, request_id="req-slow")
    with pytest.raises(Interrupted):
        Worker(queue, handler, idle_timeout=0.05).run()
    assert queue.get_job(bad)["status"] == "failed"
    assert queue.get_job(slow)["status"] == "queued"

    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    events = {(x.get("job_id"), x.get("event")): x for x in lines if x.get("event")}
    assert events[(bad, "failed")]["error"] == "no such chart"
    assert events[(bad, "failed")]["request_id"] == "req-bad"
    assert events[(bad, "failed")]["attempt"] == 1
    assert events[(bad, "failed")]["worker"] == "events-worker"
    assert events[(cancelled, "cancelled")]["kind"] == "line"
    assert events[(slow, "requeued")]["request_id"] == "req-slow"
    assert events[(slow, "requeued")]["status"] == "queued"
    assert {e for (job, e) in events if job == slow} == {"enqueued", "started", "requeued"}
    assert before["bad"].jobs_failed._value.get() == failed_before + 1
