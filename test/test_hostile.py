"""Hostile and unlucky conditions (issue 12's table), each a 4xx or a clear 503/507, never a
500, and nothing stored harmed. Real redis-server processes; the app in process."""

from __future__ import annotations

import enum
import gzip
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pydantic
import pytest
import redis
from conftest import business_days, random_bars, store, wait_for
from test_api_server import get as api_get
from test_api_server import start_server, stop_server

from stocks import storage
from stocks.api.app import create_app
from stocks.api.errors import validation_error_response
from stocks.config import Settings
from stocks.jobs import STATUSES, JobQueue
from stocks.redis_server import RedisServer, env_with_redis

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BAR = {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1000}
DEEP = "[" * 1000 + "]" * 1000


YEAR_2017 = business_days("2017-01-02", "2017-12-29")


@pytest.fixture
def app(settings):
    return create_app(settings.replace(api_keys=(KEY,)), {"TESTING": True})


@pytest.fixture
def client(client, r0):
    """The conftest client, with AAPL stored."""
    store(r0, "AAPL", random_bars(YEAR_2017))
    return client


def job(**changes) -> str:
    return json.dumps({"kind": "line", "symbols": ["AAPL"], **changes})


def put(client, day: str, body) -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {**AUTH, "Content-Type": "application/json"}
    return client.put(f"/tickers/AAPL/prices/{day}", data=data, headers=headers)


ROWS = [
    # (what, request, expected status)
    ("POST /jobs nested 1,000 deep", lambda c: c.post("/jobs", data=DEEP, headers=JSON), 400),
    ("PUT nested 1,000 deep", lambda c: put(c, "2018-01-02", DEEP), 400),
    ("lone surrogate in options.title", lambda c: post(c, job(options={"title": "\udfff"})), 400),
    ("lone surrogate in symbols", lambda c: post(c, job(symbols=["\udfff"])), 400),
    ("volume 2^62", lambda c: put(c, "2018-01-02", {**BAR, "volume": 2**62}), 400),
    ("date 9999-12-31", lambda c: put(c, "9999-12-31", BAR), 400),
    ("date 0001-01-01", lambda c: put(c, "0001-01-01", BAR), 400),
    ("price 1e308", lambda c: put(c, "2018-01-02", {**BAR, "high": 1e308}), 400),
    ('"volume": true', lambda c: put(c, "2018-01-02", {**BAR, "volume": True}), 400),
    ('"open": "60"', lambda c: put(c, "2018-01-02", {**BAR, "open": "60"}), 400),
    ("an unknown key", lambda c: put(c, "2018-01-02", {**BAR, "note": 1}), 400),
    ("a Saturday", lambda c: put(c, "2018-01-06", BAR), 400),
    ("NaN", lambda c: put(c, "2018-01-02", '{"open": NaN, "high": 1, "low": 1, "close": 1}'), 400),
    ("a weekday bar that is fine", lambda c: put(c, "2018-01-02", BAR), 201),
]
JSON = {"Content-Type": "application/json"}


def post(client, body: str):
    # a lone surrogate cannot be encoded as UTF-8: send the JSON escape, as a client would
    data = body.encode("utf-8", "backslashreplace") if isinstance(body, str) else body
    return client.post("/jobs", data=data.replace(b"\\\\udfff", b"\\udfff"), headers=JSON)


BAR_URL = "/tickers/AAPL/prices/2018-01-02"
BAR_TEXT = json.dumps(BAR)
NOT_JSON = "send the body as application/json"
# Answers that misled (a redirect built from the Host header, enum reprs, a 400 about the
# model for a body of the wrong type, a UTF-8 error for gzip, a duplicate key taken
# silently, a repeated parameter taken silently), each with what the message must say.
MISLEADING = [
    (
        "a double slash: no redirect built from Host",
        lambda c: c.get("/tickers/AAPL//stats", headers={"Host": "evil.example"}),
        404,
        "no such route",
    ),
    (
        "an authorised DELETE with a double slash",
        lambda c: c.delete("/tickers/AAPL//prices/2017-03-01", headers=AUTH),
        404,
        "no such route",
    ),
    ("..%2F", lambda c: c.get("/tickers/..%2F/prices/2017-03-01"), 404, "no such route"),
    (
        "status=bogus names the statuses, not enum reprs",
        lambda c: c.get("/jobs?status=bogus", headers=AUTH),
        400,
        "status: Input should be 'queued', 'running'",
    ),
    (
        "PUT of JSON as text/plain",
        lambda c: c.put(BAR_URL, data=BAR_TEXT, headers=AUTH, content_type="text/plain"),
        415,
        NOT_JSON,
    ),
    ("PUT of a form", lambda c: c.put(BAR_URL, data=BAR, headers=AUTH), 415, NOT_JSON),
    (
        "PUT with no Content-Type",
        lambda c: c.put(BAR_URL, data=BAR_TEXT, headers=AUTH),
        415,
        NOT_JSON,
    ),
    (
        "POST /jobs of JSON as text/plain",
        lambda c: c.post("/jobs", data=job(), content_type="text/plain"),
        415,
        NOT_JSON,
    ),
    (
        "PUT gzipped",
        lambda c: c.put(
            BAR_URL,
            data=gzip.compress(BAR_TEXT.encode()),
            headers={**AUTH, **JSON, "Content-Encoding": "gzip"},
        ),
        415,
        "Content-Encoding gzip is not supported",
    ),
    (
        "POST /jobs gzipped",
        lambda c: c.post(
            "/jobs",
            data=gzip.compress(job().encode()),
            headers={**JSON, "Content-Encoding": "gzip"},
        ),
        415,
        "Content-Encoding gzip is not supported",
    ),
    (
        "invalid UTF-8",
        lambda c: c.post("/jobs", data=b'{"kind": "line\xff", "symbols": ["AAPL"]}', headers=JSON),
        400,
        "the body is not valid UTF-8",
    ),
    (
        "a duplicate key",
        lambda c: post(c, '{"kind": "line", "kind": "candlestick", "symbols": ["AAPL"]}'),
        400,
        "duplicate key 'kind'",
    ),
    (
        "a duplicate key, nested",
        lambda c: post(
            c, '{"kind": "line", "symbols": ["AAPL"], "options": {"width": 300, "width": 400}}'
        ),
        400,
        "duplicate key 'width'",
    ),
    (
        "a duplicate key in a bar",
        lambda c: put(c, "2018-01-02", BAR_TEXT[:-1] + ', "close": 10.7}'),
        400,
        "duplicate key 'close'",
    ),
    (
        "colons in text, no duplicate key",
        lambda c: post(c, job(options={"title": 'AAPL: "2017: a year"'})),
        202,
        None,
    ),
    (
        "a repeated parameter",
        lambda c: c.get("/tickers/AAPL/prices?limit=5&limit=7"),
        400,
        "limit",
    ),
    (
        "a repeated parameter of /jobs",
        lambda c: c.get("/jobs?limit=1&limit=2", headers=AUTH),
        400,
        "limit",
    ),
    ("a repeated parameter, no route", lambda c: c.get("/no/route?x=1&x=2"), 404, "no such route"),
    (
        "a long title counts characters, not items",
        lambda c: post(c, job(options={"title": "t" * 201})),
        400,
        "options.title: String should have at most 200 characters",
    ),
    (
        "a long q counts characters",
        lambda c: c.get("/tickers?q=" + "a" * 101),
        400,
        "q: String should have at most 100 characters",
    ),
    (
        "a long sector counts characters",
        lambda c: c.get("/tickers?sector=" + "a" * 101),
        400,
        "sector: String should have at most 100 characters",
    ),
    (
        "a long movers sector counts characters",
        lambda c: c.get("/market/movers?sector=" + "a" * 101),
        400,
        "sector: String should have at most 100 characters",
    ),
    (
        "a long symbol counts characters",
        lambda c: post(c, job(symbols=["A" * 21])),
        400,
        "symbols.0: String should have at most 20 characters",
    ),
    (
        "a long fields counts characters",
        lambda c: c.get("/market/2017-03-01?fields=" + ",".join(["open"] * 21)),
        400,
        "fields: String should have at most 100 characters",
    ),
    (
        "a long indicator name counts characters",
        lambda c: c.get("/tickers/AAPL/indicators/" + "s" * 41),
        400,
        "name: String should have at most 40 characters",
    ),
    (
        "a moving average listed twice",
        lambda c: post(c, job(kind="candlestick", options={"moving_averages": [20, 50, 20]})),
        400,
        "options.moving_averages: window 20 is listed twice",
    ),
]
CASES = [(*row, None) for row in ROWS] + MISLEADING


@pytest.mark.parametrize(("what", "send", "status", "says"), CASES, ids=[r[0] for r in CASES])
def test_bad_input_is_a_clear_4xx_and_harms_nothing(client, r0, what, send, status, says):
    before = storage.read_series(r0, "AAPL")[1].tobytes()
    resp = send(client)
    assert resp.status_code == status, resp.data
    assert "Location" not in resp.headers or status == 202
    body = resp.get_json()
    if status >= 400:
        assert body["error"]["status"] == status and body["error"]["message"]
        assert says is None or says in body["error"]["message"], body
        assert storage.read_series(r0, "AAPL")[1].tobytes() == before  # untouched
        assert (
            JobQueue(Settings(redis_url=client.application.config["SETTINGS"].redis_url)).count()
            == 0
        )


SAMPLE_VALUES = {"symbol": "AAPL", "date": "2017-03-01", "name": "sma", "filename": "x.js"}


def slash_variants(path: str) -> set[str]:
    """``path`` with each slash doubled, with a slash added at the end, and without its own."""
    variants = {path[:i] + "/" + path[i:] for i, ch in enumerate(path) if ch == "/"}
    variants |= {path + "/", path.rstrip("/") or "/"}
    return variants - {path}


def test_no_route_answers_a_redirect_whatever_its_slashes(client, app):
    """Werkzeug's redirects (merged slashes, a missing trailing slash) answer HTML with a
    Location built from the client's Host header; every variant of every route is a JSON
    answer instead, without a Location."""
    paths = {}
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", SAMPLE_VALUES.get(name, "x"))
            path = path.replace(f"<path:{name}>", SAMPLE_VALUES.get(name, "x"))
        paths.setdefault(path, set()).update(rule.methods - {"HEAD", "OPTIONS"})
    seen = 0
    for path, methods in paths.items():
        for method in sorted(methods):
            for variant in slash_variants(path) - paths.keys():
                resp = client.open(
                    variant, method=method, headers={**AUTH, "Host": "evil.example"}, json={}
                )
                assert not 300 <= resp.status_code < 400, (method, variant)
                assert "Location" not in resp.headers, (method, variant)
                assert resp.mimetype == "application/json" or resp.status_code < 300
                seen += 1
    assert seen > 100
    # the one redirect of the API's own, a fixed path for browsers (not built from Host)
    docs = client.get("/docs", headers={"Host": "evil.example"})
    assert docs.status_code == 302 and docs.headers["Location"] == "/docs/swagger"


def test_any_routing_redirect_left_is_a_json_404(app):
    """A rule ending in a slash, asked for without it, would be werkzeug's 308 too."""
    app.add_url_rule("/probe/", "probe", lambda: "found")
    resp = app.test_client().get("/probe", headers={"Host": "evil.example"})
    assert resp.status_code == 404 and "Location" not in resp.headers
    assert resp.get_json()["error"]["code"] == "not_found"


def test_every_enum_in_a_validation_message_reads_as_its_value():
    class Size(enum.IntEnum):
        SMALL = 1
        LARGE = 2

    class Form(pydantic.BaseModel):
        size: Literal[tuple(Size)]  # type: ignore[valid-type]
        status: Literal[STATUSES]  # type: ignore[valid-type]

    with pytest.raises(pydantic.ValidationError) as failed:
        Form(size=3, status="bogus")
    reasons = [
        p["reason"] for p in validation_error_response(failed.value).get_json()["error"]["errors"]
    ]
    assert reasons == [
        "Input should be 1 or 2",
        "Input should be 'queued', 'running', 'finished', 'failed' or 'cancelled'",
    ]


def test_monthly_volume_sums_never_overflow_whatever_is_stored(client, r0):
    days = business_days("2017-01-02", "2017-01-31")
    huge = np.full(len(days), 2**62)  # written around the API, as an old store might hold
    ones = np.ones(len(days))
    storage.replace_series(r0, "HUGE", storage.make_bars(days, ones, ones, ones, ones, huge), {})
    for interval in ("1wk", "1mo"):
        prices = client.get(f"/tickers/HUGE/prices?interval={interval}").get_json()["prices"]
        assert all(bar["volume"] > 0 for bar in prices)


def test_options_answers_204_with_allow_and_images_are_not_sniffed(client, settings):
    resp = client.options("/tickers/AAPL/prices")
    assert resp.status_code == 204 and resp.data == b""
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "HEAD", "OPTIONS"}
    assert client.options("/no/such/route").status_code == 404
    job_id = client.post("/jobs", data=job(), headers=JSON).get_json()["id"]
    queue = JobQueue(settings, "w1")
    queue.finish(queue.get(timeout=1), b"\x89PNG\r\n\x1a\n", "image/png")
    image = client.get(f"/jobs/{job_id}/image")
    assert image.status_code == 200 and image.headers["X-Content-Type-Options"] == "nosniff"


def test_no_content_has_no_content_type(client, settings):
    """A 204 or 304 has no body, so no type (Flask would say text/html)."""
    job_id = client.post("/jobs", data=job(), headers=JSON).get_json()["id"]
    queue = JobQueue(settings, "w1")
    queue.finish(queue.get(timeout=1), b"\x89PNG\r\n\x1a\n", "image/png")
    deleted = client.delete(f"/jobs/{job_id}")
    assert deleted.status_code == 204 and "Content-Type" not in deleted.headers
    options = client.options("/tickers/AAPL")
    assert options.status_code == 204 and "Content-Type" not in options.headers
    for url in ("/tickers/AAPL/prices?limit=3", "/tickers/AAPL/stats"):
        tag = client.get(url).headers["ETag"]
        for _ in range(2):  # built by the route, then served by the answer cache
            same = client.get(url, headers={"If-None-Match": tag})
            assert same.status_code == 304 and "Content-Type" not in same.headers, url


def test_a_lost_series_is_a_503_and_ready_says_which(client, r0):
    r0.delete(storage.bars_key("AAPL"))  # as an eviction would
    resp = client.get("/tickers/AAPL/prices")
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "series_missing"
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["error"]["symbols"] == ["AAPL"]


def test_fair_use_limits_one_client_not_the_others(settings, r0):
    store(r0, "AAPL", random_bars(YEAR_2017))
    store(r0, "MSFT", random_bars(YEAR_2017, 1))
    app = create_app(settings.replace(compute_rate="5/minute"), {"TESTING": True})
    flood, other = app.test_client(), app.test_client()
    codes = [
        flood.get(f"/compare?symbols=AAPL,MSFT&start=2017-02-{day:02d}").status_code
        for day in range(1, 9)
    ]
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
    limited = flood.get("/tickers/AAPL/stats?period=1mo")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert flood.get("/health").status_code == 200 and flood.get("/metrics").status_code == 200
    elsewhere = {"REMOTE_ADDR": "10.0.0.7"}
    assert other.get("/tickers/AAPL/stats", environ_base=elsewhere).status_code == 200


# --- outages --------------------------------------------------------------------------------


def test_a_paused_redis_answers_503_fast_and_recovers_by_itself(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    try:
        settings = Settings(redis_url=server.url, redis_timeout=2.0)
        store(settings.redis(0), "AAPL", random_bars(YEAR_2017))
        client = create_app(settings, {"TESTING": True}).test_client()
        assert client.get("/tickers/AAPL/prices").status_code == 200
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            first = client.get("/tickers/AAPL/prices?start=2017-02-01")
            assert first.status_code == 503 and first.headers["Retry-After"]
            assert 1.5 < time.monotonic() - started < 10  # its own timeout, not 30 s
            # once one call has timed out, the next ones do not wait for Redis at all
            for path, send in [
                ("/tickers/AAPL/prices?start=2017-03-01", client.get),
                ("/tickers/AAPL/stats?period=1mo", client.get),
                ("/ready", client.get),
                ("/jobs", lambda p: client.post(p, data=job(), headers=JSON)),
            ]:
                started = time.monotonic()
                resp = send(path)
                took = time.monotonic() - started
                assert resp.status_code == 503, (path, resp.data)
                assert resp.headers.get("Retry-After") and took < 1, (path, took)
            # the metrics the processes counted are still served, and say Redis is away
            scrape = client.get("/metrics")
            assert scrape.status_code == 200
            assert b"stocks_redis_up 0.0" in scrape.data
            assert b"stocks_http_requests_total" in scrape.data
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: client.get("/tickers/AAPL/prices").status_code == 200, 10, "recovery")
        assert client.post("/jobs", data=job(), headers=JSON).status_code == 202
        assert b"stocks_redis_up 1.0" in client.get("/metrics").data
    finally:
        server.stop(kill=True)


def test_a_burst_during_an_outage_is_answered_without_queueing_behind_redis(tmp_path):
    """40 requests on 4 threads: each thread would wait its own timeout in turn (10 s);
    the first timeout tells the process, and the rest answer 503 at once."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    port, api = start_server(server.url, workers=1, STOCKS_THREADS="4", STOCKS_REDIS_TIMEOUT="1")
    try:
        store(redis.Redis.from_url(server.url), "AAPL", random_bars(YEAR_2017))
        assert api_get(port, "/tickers/AAPL/prices")[0] == 200
        server.process.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(40) as pool:
                paths = [f"/tickers/AAPL/prices?limit={n}" for n in range(1, 41)]
                answers = list(pool.map(timed_get(port), paths))
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert {status for status, _, _ in answers} == {503}
        assert all(
            json.loads(body)["error"]["code"] == "redis_unavailable" for _, body, _ in answers
        )
        assert max(took for _, _, took in answers) < 4, sorted(t for _, _, t in answers)
        # Redis is back: the process finds out by itself (it tries twice a second), so a
        # burst that comes later is served whole, not refused while its first finds out
        time.sleep(2)
        with ThreadPoolExecutor(12) as pool:
            later = list(pool.map(timed_get(port), paths[:12]))
        assert [status for status, _, _ in later] == [200] * 12
    finally:
        stop_server(api)
        server.stop(kill=True)


def timed_get(port: int):
    def get(path: str) -> tuple[int, bytes, float]:
        started = time.monotonic()
        status, _, body = api_get(port, path)
        return status, body, time.monotonic() - started

    return get


def test_a_full_redis_refuses_jobs_with_507_and_keeps_serving_prices(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=False, maxmemory_mb=20).start()
    try:
        settings = Settings(redis_url=server.url)
        store(settings.redis(0), "AAPL", random_bars(YEAR_2017))
        client = create_app(settings, {"TESTING": True}).test_client()
        filler = redis.Redis.from_url(server.url, db=5)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(10_000):  # until Redis refuses: noeviction
                filler.set(f"junk:{i}", b"x" * 100_000)
        resp = client.post("/jobs", data=job(), headers=JSON)
        assert resp.status_code == 507 and resp.get_json()["error"]["code"] == "storage_full"
        assert JobQueue(settings).count() == 0  # nothing half-written
        prices = client.get("/tickers/AAPL/prices")
        assert prices.status_code == 200, prices.data
        assert prices.get_json()["count"] == len(business_days("2017-01-02", "2017-12-29"))
        filler.flushdb()
        assert client.post("/jobs", data=job(), headers=JSON).status_code == 202
    finally:
        server.stop(kill=True)


def test_a_small_redis_holds_prices_and_every_job_ends_with_images_within_budget(tmp_path):
    """maxmemory 32 MB (noeviction) and a 1 MB image budget: 40 distinct charts through a
    real worker all finish, the images stay within the budget, and no price is lost."""
    server = RedisServer(tmp_path / "redis", appendonly=False, maxmemory_mb=32).start()
    worker = None
    try:
        settings = Settings(redis_url=server.url, image_budget_mb=1.0)
        r0 = settings.redis(0)
        for seed, symbol in enumerate(("AAPL", "MSFT")):
            store(r0, symbol, random_bars(business_days("2013-01-02", "2017-12-29"), seed))
        before = {s: storage.read_series(r0, s)[1].tobytes() for s in ("AAPL", "MSFT")}
        env = {**env_with_redis(server.url), "STOCKS_IMAGE_BUDGET_MB": "1"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "stocks.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = create_app(settings, {"TESTING": True}).test_client()
        ids = []
        for i in range(40):
            body = job(options={"title": f"chart {i}", "width": 900, "height": 600})
            ids.append(client.post("/jobs", data=body, headers=JSON).get_json()["id"])
        queue = JobQueue(settings)
        wait_for(
            lambda: all(queue.get_job(i)["status"] == "finished" for i in ids), 120, "40 charts"
        )
        images = redis.Redis.from_url(server.url, db=3)
        stored = [len(images.get(f"image:{i}") or b"") for i in ids]
        assert sum(stored) <= 1024 * 1024 + max(stored)  # the budget, plus the newest one
        assert stored[-1] > 0 and 0 in stored  # the newest kept, the oldest dropped
        dropped = ids[stored.index(0)]
        gone = client.get(f"/jobs/{dropped}/image")
        assert gone.status_code == 410 and gone.get_json()["error"]["code"] == "image_dropped"
        info = redis.Redis.from_url(server.url).info("memory")
        assert info["used_memory"] < info["maxmemory"]
        assert {s: storage.read_series(r0, s)[1].tobytes() for s in before} == before
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop(kill=True)
