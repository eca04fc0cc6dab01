"""The API through a real `stocks serve` process (granian; gunicorn as the fallback)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import business_days, descendants, random_bars, running, stop_process, wait_for

from stocks import storage
from stocks.redis_server import free_port

KEY = "server-test-key"
STOCKS = Path(sys.executable).with_name("stocks")


def get(port: int, path: str, method: str = "GET", body: dict | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def bars():
    out = random_bars(business_days("2016-01-04", "2017-12-29"), 11, start_price=40)
    out["open"][2] = np.nan
    return out


def start_server(
    redis_url: str, workers: int = 3, **env_extra: str
) -> tuple[int, subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "STOCKS_API_KEYS": KEY, **env_extra}
    command = [str(STOCKS), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    return port, started(command, env, port, "/health")


def started(command: list[str], env: dict, port: int, probe: str) -> subprocess.Popen:
    """Run ``command`` until ``probe`` on ``port`` answers 200 (at most 30 s).

    Its output goes to a file, not a pipe nobody reads: a server logging every request
    would fill a pipe and block. Its own session, so ``stop_server`` reaches its workers.
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, probe)[0] == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            log.seek(0)
            raise RuntimeError(f"{command[:3]} did not start: " + log.read().decode()[-4000:])
        time.sleep(0.1)


stop_server = stop_process


@pytest.fixture(scope="module")
def shared_server(redis_server):
    """One server for the module; each test reloads the data it reads (new versions)."""
    port, proc = start_server(redis_server.url)
    yield port, proc
    stop_server(proc)


@pytest.fixture
def server(shared_server, r0, bars):
    storage.replace_series(r0, "BRK.B", bars, {"name": "Berkshire", "source": "csv"})
    return shared_server


def test_served_by_granian_with_exact_values(server, bars):
    port, _ = server
    status, headers, body = get(port, "/tickers/brk-b/prices?end=2016-01-08")
    assert status == 200 and headers["server"] == "granian"
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["symbol"] == "BRK.B" and data["count"] == 5
    assert data["prices"][2]["open"] is None
    assert [p["close"] for p in data["prices"]] == bars["close"][:5].tolist()
    assert data["prices"][0]["volume"] == int(bars["volume"][0])


def test_keep_alive_connection_serves_many_requests(server):
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    sock = conn.sock
    for _ in range(20):
        conn.request("GET", "/tickers/BRK.B/prices?start=2017-06-01&end=2017-06-30")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["count"] == 22
    assert conn.sock is sock  # never reconnected
    conn.close()


def test_write_is_seen_by_every_worker_at_once(server, r0):
    port, _ = server
    url = "/tickers/BRK.B/prices?start=2017-12-01"
    for _ in range(30):  # fill the caches of all workers with the old answer
        assert json.loads(get(port, url)[2])["prices"][-1]["close"] != 99.5
    bar = {"open": 99.0, "high": 100.0, "low": 98.0, "close": 99.5, "volume": 7}
    auth = {"Authorization": f"Bearer {KEY}"}
    status, _, _ = get(port, "/tickers/BRK.B/prices/2017-12-29", "PUT", bar, auth)
    assert status == 200
    for _ in range(30):
        assert json.loads(get(port, url)[2])["prices"][-1]["close"] == 99.5
    # A reload through storage (as `stocks load` does) is seen at once too.
    meta, old = storage.read_series(r0, "BRK.B")
    storage.replace_series(r0, "BRK.B", old[:-1].copy(), {"source": "csv"})
    for _ in range(30):
        assert json.loads(get(port, url)[2])["prices"][-1]["date"] == "2017-12-28"


def test_errors_are_json_never_500(server):
    port, _ = server
    cases = [
        ("/nope", "GET", 404),
        ("/tickers/BRK.B/prices", "POST", 405),
        ("/tickers/BRK.B/prices?start=2017-02-30", "GET", 400),
        ("/tickers/ZZZZ/prices", "GET", 404),
        ("/tickers/BRK.B/prices/2017-12-29", "PUT", 401),
    ]
    for path, method, want in cases:
        status, headers, body = get(port, path, method)
        assert status == want, path
        assert json.loads(body)["error"]["status"] == want


def raw_request(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Bytes as sent, for requests no HTTP client library would build."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def gunicorn_server(redis_server):
    """The fallback server (STOCKS_WORKER_CLASS=gthread) still starts and answers."""
    port, proc = start_server(redis_server.url, STOCKS_WORKER_CLASS="gthread")
    yield port, proc
    stop_server(proc)


@pytest.mark.parametrize("which", ["server", "gunicorn_server"])
def test_requests_the_server_refuses_get_json_errors_too(which, request, bars, r0):
    port, _ = request.getfixturevalue(which)
    storage.replace_series(r0, "BRK.B", bars, {"name": "Berkshire", "source": "csv"})
    long_query = "/tickers/BRK.B/prices?fields=" + "close," * 2000
    cases = [
        (f"GET {long_query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414, "uri_too_long"),
        (
            b"GET /tickers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
    ]
    garbage = b"NOT HTTP AT ALL\r\n\r\n"
    if which == "gunicorn_server":
        cases.append((garbage, 400, "bad_request"))
    else:  # granian (hyper) answers a request it cannot parse itself: 400, empty body
        assert raw_request(port, garbage)[:3:2] == (400, b"")
    for request, want, code in cases:
        status, headers, body = raw_request(port, request)
        assert status == want, body
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["status"] == want and error["code"] == code and error["message"]
        assert len(body) < 1000  # the refused input is not echoed back whole
    assert get(port, "/tickers/BRK.B/prices?fields=close")[0] == 200  # still serving


def test_sigterm_stops_cleanly_and_leaves_no_files(redis_url, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    port, proc = start_server(redis_url, **env)
    try:
        assert get(port, "/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            get(port, "/health")
        assert list(home.iterdir()) == []  # e.g. no gunicorn control socket in ~/.gunicorn
    finally:
        stop_server(proc)


def create_sleepy_app():
    """A WSGI app that answers after the number of seconds in its query string."""

    def app(environ, start_response):
        time.sleep(float(environ["QUERY_STRING"] or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished"]

    return app


def start_sleepy_server(**env_extra: str) -> tuple[int, subprocess.Popen]:
    """``create_sleepy_app`` under ``stocks.api.server.run_wsgi``, one worker."""
    port = free_port()
    code = (
        "import sys; from stocks.api.server import run_wsgi; "
        "from stocks.config import Settings; "
        "from test_api_server import create_sleepy_app; "
        f"sys.exit(run_wsgi(Settings.from_env(), create_sleepy_app, '127.0.0.1', {port}, 1))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), **env_extra}
    return port, started([sys.executable, "-c", code], env, port, "/?0")


def test_sigterm_lets_a_request_in_flight_finish():
    port, proc = start_sleepy_server()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/?1.5")
        time.sleep(0.3)  # the request is in the app now
        proc.send_signal(signal.SIGTERM)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"finished")
        assert proc.wait(timeout=15) == 0
    finally:
        stop_server(proc)


def test_a_request_over_the_time_limit_answers_503_json():
    port, proc = start_sleepy_server(STOCKS_TIMEOUT="1")
    try:
        started = time.monotonic()
        status, headers, body = get(port, "/?4")
        assert status == 503 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "timeout"
        assert time.monotonic() - started < 3.5  # not the 4 s the app would take
        assert get(port, "/?0")[0] == 200  # the server goes on
    finally:
        stop_server(proc)


def test_workers_stop_when_the_master_is_killed(redis_url):
    port, proc = start_server(redis_url)
    workers = descendants(proc.pid)
    assert len(workers) == 3
    proc.kill()  # SIGKILL: the master cannot pass anything on to its workers
    proc.wait()
    try:
        # every worker process ends (a port that stops answering is not enough: a worker
        # stuck in its shutdown keeps the socket but answers nothing)
        wait_for(lambda: not any(running(pid) for pid in workers), 30, "the workers to end")
    finally:
        stop_server(proc)  # the group: nothing outlives the test even when it fails

    def port_closed() -> bool:
        try:
            get(port, "/health")
        except OSError:
            return True
        return False

    wait_for(port_closed, timeout=20, what="workers gone with their master")
