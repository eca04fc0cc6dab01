"""The version watch: cached answers without a round trip, and never a stale one."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import pytest
import redis
from conftest import random_bars, store, wait_for
from test_api_server import get, start_server, stop_server
from werkzeug.test import EnvironBuilder

from stocks import storage, version_watch
from stocks.api.app import create_app
from stocks.config import Settings
from stocks.version_watch import VersionWatch

URL = "/tickers/AAPL/prices?start=2017-01-01"


def hget_calls(r: redis.Redis) -> int:
    return r.info("commandstats").get("cmdstat_hget", {}).get("calls", 0)


def watch_of(app) -> VersionWatch:
    return app.wsgi_app.wsgi_app.versions  # RequestObserver -> CachedAnswers


def close_of(client, url: str = URL) -> float:
    resp = client.get(url)
    assert resp.status_code == 200, resp.data
    return resp.get_json()["prices"][-1]["close"]


@pytest.fixture
def aapl(r0):
    return store(r0, "AAPL", random_bars(300, start="2016-11-01"))


def test_a_repeat_costs_no_round_trip_once_the_watch_is_trusted(app, client, aapl, r0):
    close_of(client)
    close_of(client)
    wait_for(lambda: watch_of(app).watching, 5, "the watch")
    close_of(client)  # the versions are now known from the watch's own read
    before = hget_calls(r0)
    for _ in range(50):
        close_of(client)
    assert hget_calls(r0) - before <= 1  # a trust lapse on a slow machine costs one


def test_every_write_is_seen_by_the_next_read_of_another_process_cache(settings, aapl, r0):
    """Two apps (two watches, two connections); one writes, the other reads at once."""
    settings = settings.replace(compute_rate="100000/second")  # every other read computes
    reader = create_app(settings, {"TESTING": True}).test_client()
    writer = redis.Redis.from_url(settings.redis_url, db=0)
    bar = aapl[-1:].copy()
    for i in range(200):
        bar["close"] = 100 + i
        storage.upsert_bar(writer, "AAPL", bar)
        assert close_of(reader) == 100 + i  # no sleep: the notice is read before the answer
        assert close_of(reader) == 100 + i  # and the refilled entry is served again


def test_a_new_symbol_changes_every_answer_over_all_symbols(client, aapl, r0):
    assert [t["symbol"] for t in client.get("/tickers").get_json()["tickers"]] == ["AAPL"]
    client.get("/tickers")
    store(r0, "MSFT", random_bars(30, start="2017-01-02"))
    assert [t["symbol"] for t in client.get("/tickers").get_json()["tickers"]] == [
        "AAPL",
        "MSFT",
    ]


def test_a_lost_watch_forgets_what_it_knew(app, client, aapl, r0, caplog):
    close_of(client)
    wait_for(lambda: watch_of(app).watching, 5, "the watch")
    close_of(client)
    tracking = [c for c in r0.client_list() if "t" in c["flags"]]  # this app's and others'
    assert tracking
    for conn in tracking:
        r0.client_kill_filter(_id=conn["id"])
    bar = aapl[-1:].copy()
    bar["close"] = 4242.0
    storage.upsert_bar(r0, "AAPL", bar)  # no notice can reach the killed connection
    with caplog.at_level(logging.WARNING, logger="stocks.version_watch"):
        assert close_of(client) == 4242.0
    assert "lost the data-version watch" in caplog.text
    wait_for(lambda: watch_of(app).watching, 5, "the watch back")


def test_a_paused_redis_is_trusted_no_longer_than_trust_for(own_redis):
    client = redis.Redis.from_url(own_redis.url, db=0, socket_timeout=0.5)
    store(client, "AAPL", random_bars(30, start="2017-01-02"))
    watch = VersionWatch(client)
    version = watch.current(["AAPL"])
    wait_for(lambda: watch.watching, 5, "the watch")
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        assert watch.current(["AAPL"]) == version  # known, and nothing can change now
        time.sleep(version_watch.TRUST_FOR + 0.1)
        with pytest.raises(redis.RedisError):
            watch.current(["AAPL"])  # back to a round trip, which times out
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    wait_for(lambda: watch.watching, 5, "trust again after the pause")
    assert watch.current(["AAPL"]) == version


def test_a_redis_refusing_tracking_leaves_round_trips(own_redis, caplog):
    admin = redis.Redis.from_url(own_redis.url)
    admin.acl_setuser(
        "reader", enabled=True, passwords=["+reader-pw"], keys=["*"], commands=["+@all", "-client"]
    )
    host, port = admin.connection_pool.connection_kwargs["host"], own_redis.port
    client = redis.Redis(host=host, port=port, username="reader", password="reader-pw")
    store(admin, "AAPL", random_bars(30, start="2017-01-02"))
    watch = VersionWatch(client)
    with caplog.at_level(logging.WARNING, logger="stocks.version_watch"):
        first = watch.current(["AAPL"])
        assert not watch.watching
    assert caplog.text.count("refuses change tracking") == 1
    before = hget_calls(admin)
    assert watch.current(["AAPL"]) == first
    assert hget_calls(admin) == before + 1  # each check is a round trip
    store(admin, "AAPL", random_bars(31, start="2017-01-02"))
    assert watch.current(["AAPL"]) != first


def test_the_settings_url_with_a_password_works_for_the_watch(own_redis):
    settings = Settings(redis_url=own_redis.url)
    watch = VersionWatch(settings.redis(0, timeout=1.0))
    watch.current(["NOPE"])
    assert watch.watching


# --- answers given by the server's event loop (stocks.api.buffered_wsgi) ---------------


def test_answer_now_gives_a_cached_answer_with_its_id_line_and_metrics(app, client, aapl, caplog):
    def environ(**headers: str) -> dict:
        return EnvironBuilder(path="/tickers/AAPL/prices", query_string=URL.split("?")[1],
                              headers=headers).get_environ()  # fmt: skip

    assert app.answer_now(environ()) is None  # nothing cached yet
    first = client.get(URL)
    client.get(URL)  # a hit through the thread path starts the watch
    wait_for(lambda: app.answer_now(environ()) is not None, 5, "an answer at hand")
    with caplog.at_level(logging.INFO, logger="stocks.request"):
        status, headers, body = app.answer_now(environ(**{"X-Request-ID": "loop-1"}))
    assert status == "200 OK" and body == first.data
    assert dict(headers)["X-Request-ID"] == "loop-1"
    assert dict(headers)["X-Content-Type-Options"] == "nosniff"
    assert dict(headers)["ETag"] == first.headers["ETag"]
    line = next(r for r in caplog.records if getattr(r, "request_id", "") == "loop-1")
    assert line.cache == "hit" and line.status == 200 and line.route == "/tickers/<symbol>/prices"
    status, _, body = app.answer_now(environ(**{"If-None-Match": first.headers["ETag"]}))
    assert status == "304 Not Modified" and body == b""
    assert app.answer_now({**environ(), "REQUEST_METHOD": "POST"}) is None


def close_over_http(port: int) -> float:
    status, _, body = get(port, URL)
    assert status == 200, body
    return json.loads(body)["prices"][-1]["close"]


def test_every_worker_of_a_real_server_sees_each_write_at_once(redis_server, r0, aapl):
    port, proc = start_server(redis_server.url, STOCKS_COMPUTE_RATE="100000/second")
    try:
        bar = aapl[-1:].copy()
        for i in range(30):
            bar["close"] = 200 + i
            storage.upsert_bar(r0, "AAPL", bar)
            for _ in range(6):  # new connections: any worker, from its cache after its first
                assert close_over_http(port) == 200 + i
    finally:
        stop_server(proc)


def test_a_cached_answer_does_not_wait_for_a_busy_thread(own_redis):
    """One worker with one thread, held by a request waiting on a paused Redis: a cached
    answer is still given at once, by the event loop."""
    store(redis.Redis.from_url(own_redis.url), "AAPL", random_bars(300, start="2016-11-01"))
    port, proc = start_server(own_redis.url, 1, STOCKS_THREADS="1", STOCKS_REDIS_TIMEOUT="3")
    try:
        want = close_over_http(port)
        for _ in range(3):  # cached; the watch pings and hears back in between
            assert close_over_http(port) == want
            time.sleep(0.3)
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            busy = threading.Thread(
                target=get, args=(port, "/tickers/AAPL/prices?start=2017-02-01")
            )
            busy.start()
            time.sleep(0.2)  # it holds the only thread for 3 s
            started_at = time.monotonic()
            assert close_over_http(port) == want
            assert time.monotonic() - started_at < 1.0
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        busy.join()
    finally:
        stop_server(proc)
