"""kubernetes/smoke.sh, the script `make smoke` runs in the cluster, run here against the real
thing: redis-server started with the cluster's own redis.conf and a password (as the Secret
gives it), prices loaded by `stocks load`, `stocks serve` and `stocks worker` with its health
port. So the script, the Redis config and the worker's /health are known to work before any
cluster sees them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from conftest import business_days, stop_process, wait_for

from stocks.redis_server import find_redis_server, free_port

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "kubernetes" / "smoke.sh"
REDIS_CONF = ROOT / "kubernetes" / "redis" / "redis.conf"
STOCKS = Path(sys.executable).with_name("stocks")

pytestmark = pytest.mark.skipif(
    shutil.which("sh") is None or shutil.which("curl") is None, reason="needs sh and curl"
)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def write_csvs(folder: Path, symbols: list[str]) -> None:
    folder.mkdir()
    days = business_days("2016-06-01", "2017-12-29")
    for n, symbol in enumerate(symbols):
        rows = "".join(
            f"{d},{10 + n + i * 0.01:.2f},{11 + n + i * 0.01:.2f},{9 + n + i * 0.01:.2f},"
            f"{10.5 + n + i * 0.01:.2f},{1000 + i}\n"
            for i, d in enumerate(days)
        )
        (folder / f"{symbol}.csv").write_text("date,open,high,low,close,volume\n" + rows)


@pytest.fixture
def stack(tmp_path):
    """Redis (cluster config, password), loaded prices, the API and one worker; all stopped."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server")
    password = secrets.token_hex(32)  # what `make deploy` writes into redis-password.env
    redis_port, api_port, health_port = free_port(), free_port(), free_port()
    data = tmp_path / "redis"
    data.mkdir()
    procs: list[subprocess.Popen] = []

    def start(*cmd: str, **env: str) -> subprocess.Popen:
        log = open(tmp_path / f"{len(procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            list(cmd),
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    # The cluster's redis.conf as it is; only where it listens and writes differs here.
    start(
        binary, str(REDIS_CONF), "--requirepass", password,
        "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(data),
    )  # fmt: skip
    url = f"redis://:{password}@127.0.0.1:{redis_port}"
    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), 20, "redis-server")
    env = {"REDIS_URL": url, "STOCKS_WORKER_STALL": "3", "STOCKS_SHUTDOWN_GRACE": "5"}
    write_csvs(tmp_path / "prices", ["AAPL", "MSFT"])
    subprocess.run(
        [str(STOCKS), "load", "--source", "csv", "--path", str(tmp_path / "prices")],
        env={**os.environ, **env}, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    start(str(STOCKS), "serve", "--host", "127.0.0.1", "--port", str(api_port),
          "--workers", "2", **env)  # fmt: skip
    start(str(STOCKS), "worker", "--health-port", str(health_port), **env)
    base = f"http://127.0.0.1:{api_port}"
    wait_for(lambda: status_of(base + "/ready") == 200, 60, "the API to be ready")
    yield {
        "base": base,
        "health": f"http://127.0.0.1:{health_port}/health",
        "redis": procs[0],
        "client": client,
        "password": password,
        "redis_port": redis_port,
    }
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:  # graceful stops are tested elsewhere: 3 s, then SIGKILL
        stop_process(proc, grace=3)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def smoke(base: str, shell: str = "sh", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shell, str(SMOKE), base],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_smoke_script_passes_against_the_real_stack_and_redis_is_closed(stack):
    result = smoke(stack["base"])
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "10 passed, 0 failed"
    steps = [ln for ln in lines if ln.startswith(("ok ", "FAIL "))]
    assert len(steps) == 10 and all(s.startswith("ok ") for s in steps)
    for what in ("health", "ready", "price range", "stats", "finished", "PNG", "bad request"):
        assert any(what in s for s in steps), what

    # The cluster's Redis config, as the server runs it: closed, durable, bounded.
    no_password = redis.Redis(port=stack["redis_port"])
    with pytest.raises(redis.AuthenticationError):
        no_password.ping()
    config = stack["client"].config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == 640 * 1024 * 1024
    assert config["save"] == ""


def test_worker_health_follows_its_heartbeat_and_smoke_fails_when_redis_is_gone(stack):
    wait_for(lambda: status_of(stack["health"]) == 200, 20, "the worker's /health")
    with urllib.request.urlopen(stack["health"], timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "ok" and body["limit"] == 3.0

    stack["redis"].kill()  # lost Redis: heartbeats stop reaching it
    stack["redis"].wait()
    wait_for(lambda: status_of(stack["health"]) == 503, 20, "/health to answer 503")

    result = smoke(stack["base"], SMOKE_POLL_SECONDS="2")
    assert result.returncode == 1, result.stdout
    assert "FAIL 2 - ready" in result.stdout  # /ready sees Redis gone
    assert result.stdout.startswith(f"smoke test of {stack['base']}\nok   1 - health (200)")


def test_smoke_script_fails_clearly_with_nothing_listening():
    result = smoke(f"http://127.0.0.1:{free_port()}", SMOKE_POLL_SECONDS="1")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "0 passed, 8 failed"
    assert "FAIL 1 - health: GET /health answered 000" in result.stdout


def busybox() -> str | None:
    """BusyBox, installed from Debian when missing and root (the debug pod's image is Alpine)."""
    if shutil.which("busybox") is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "busybox"], capture_output=True, timeout=300
        )
    return shutil.which("busybox")


def test_smoke_script_runs_on_busybox_and_curl_alone(stack, tmp_path):
    """As in the debug pod (curlimages/curl: Alpine): BusyBox's sh, grep, sed, od... and curl,
    nothing else on PATH."""
    box = busybox()
    if box is None:
        pytest.skip("busybox is not installed and cannot be (not root)")
    tools = tmp_path / "bin"
    tools.mkdir()
    applets = subprocess.run([box, "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        (tools / applet).symlink_to(box)
    (tools / "curl").symlink_to(shutil.which("curl"))
    result = subprocess.run(
        [str(tools / "sh"), str(SMOKE), stack["base"]],
        env={"PATH": str(tools)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "10 passed, 0 failed"
