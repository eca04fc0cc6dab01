"""`stocks run` (what `make run` calls), end to end as a new user meets it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

from conftest import wait_for

from stocks import devrun
from stocks.config import mask_url
from stocks.redis_server import RedisServer, free_port, ping

PASSWORD = "pw-" + secrets.token_hex(8)
CSV = "date,open,high,low,close,volume,Name\n" + "".join(
    f"2017-01-{day:02d},{10 + day},{11 + day},{9 + day},{10.5 + day},{1000 * day},X\n"
    for day in (3, 4, 5, 6, 9, 10)
)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ready(base: str) -> bool:
    try:
        return get_json(base + "/ready")[0] == 200
    except OSError:
        return False


def test_run_starts_redis_loads_serves_with_a_worker_and_ctrl_c_stops_all(tmp_path):
    data = tmp_path / "prices"
    data.mkdir()
    for symbol in ("AAPL", "MSFT"):
        (data / f"{symbol}.csv").write_text(CSV)
    redis_port = free_port()
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{redis_port}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "REDIS_URL": redis_url, "STOCKS_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stocks.cli", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []  # read as they come: a full pipe would block the children
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: ready(base), 90, "/ready")
        assert ping(redis_url)  # the password in REDIS_URL is the one it set
        assert not ping(f"redis://127.0.0.1:{redis_port}")  # and it is needed
        status, body = get_json(base + "/tickers")
        assert status == 200 and [t["symbol"] for t in body["tickers"]] == ["AAPL", "MSFT"]

        request = urllib.request.Request(
            base + "/jobs",
            data=json.dumps({"kind": "line", "symbols": ["aapl", "msft"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            job = json.loads(resp.read())
        assert resp.status == 202
        wait_for(
            lambda: get_json(base + job["links"]["self"])[1]["status"] == "finished",
            60,
            "the worker to draw the chart",
        )
        with urllib.request.urlopen(base + job["links"]["image"], timeout=5) as resp:
            assert resp.headers["Content-Type"] == "image/png"
            assert resp.read(8) == b"\x89PNG\r\n\x1a\n"
        # it says so too (its own /health poll may come a moment after ours)
        wait_for(lambda: any(f"API ready at {base}" in line for line in lines), 30, "API ready")
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
        proc.wait(timeout=90)
        reader.join(timeout=10)
    output = "".join(lines)

    assert proc.returncode == 0, output
    assert f"API ready at {base}" in output
    assert "[stocks run] stopping" in output
    assert "SIGKILL" not in output, "every child stops on its own, none is killed"
    assert "loading CSV files from" in output
    assert not ping(redis_url), "the redis-server it started must stop with it"
    assert PASSWORD not in output and "redis://:***@127.0.0.1" in output
    assert not ready(base)
    assert RedisServer(tmp_path / ".run" / "redis").aof_files(), "AOF on, as documented"


def test_a_started_redis_gets_a_password_kept_for_its_owner_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = devrun.local_password(None)
    path = tmp_path / ".run" / "redis.password"
    assert len(first) >= 24 and path.stat().st_mode & 0o777 == 0o600
    assert devrun.local_password(None) == first  # the same on the next run (AOF data)
    assert devrun.local_password("given%21") == "given!"  # REDIS_URL's own wins


def test_no_command_prints_the_password(tmp_path):
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "REDIS_URL": url}
    load = subprocess.run(
        [sys.executable, "-m", "stocks.cli", "load", "--source", "synthetic", "--count", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert load.returncode == 1 and "cannot reach Redis at redis://:***@" in load.stderr
    assert PASSWORD not in load.stdout + load.stderr
    assert "***" in mask_url(url) and PASSWORD not in mask_url(url)
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
