"""The version watch: cached answers without a round trip, and never a stale one."""

from __future__ import annotations

import logging
import signal
import time

import pytest
import redis
from conftest import random_bars, store, wait_for

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
