"""``stocks run`` (what ``make run`` calls): everything a laptop needs, in one process tree.

Uses the Redis at REDIS_URL when it answers, else starts a real redis-server with AOF
under ``.run/``; loads prices when DB 0 is empty (../shared/data, else Yahoo, else
synthetic); then serves the API with one chart worker until Ctrl-C (or SIGTERM, or
SIGHUP when its terminal closes), which stops all it started. Should this process die
without a word (SIGKILL), each child is sent SIGTERM by the kernel (stocks.lifetime), so
no redis-server, API or worker outlives it.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from stocks import lifetime, storage
from stocks.config import LOCAL_PASSWORD_FILE, Settings, mask_url
from stocks.keys import STOCKS_DB
from stocks.redis_server import RedisServer, env_with_redis, ping

RUN_DIR = Path(".run")
YAHOO_PROBE = "https://query2.finance.yahoo.com/v8/finance/chart/SPY?range=1d"


def say(message: str) -> None:
    try:
        print(f"[stocks run] {message}", flush=True)
    except OSError:  # the terminal is gone (SIGHUP): stopping the children matters more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of this process


def run_dir() -> Path:
    """``.run/``, the owner's alone: it holds the Redis password, its AOF and its log."""
    RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    RUN_DIR.chmod(0o700)
    return RUN_DIR


def local_password(parsed_password: str | None) -> str:
    """The password for a Redis we start: REDIS_URL's if it has one, else the one kept
    (owner-only) under .run/ from an earlier run, else a new random one kept there."""
    if parsed_password:
        return unquote(parsed_password)
    path = LOCAL_PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    run_dir()
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_redis(settings: Settings) -> RedisServer | None:
    """Reuse a reachable Redis; otherwise start one, with a password and a memory limit, on
    REDIS_URL's local port."""
    url = settings.redis_url
    shown = mask_url(url)
    if ping(url):
        say(f"using the Redis at {shown}")
        return None
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"Redis at {shown} does not answer, and it is not local to start it")
    port = parsed.port or 6379
    if port_in_use(port):
        raise SystemExit(
            f"something on port {port} does not answer as the Redis at {shown} "
            "(a wrong password?): set REDIS_URL"
        )
    server = RedisServer(
        run_dir() / "redis",
        port=port,
        appendonly=True,
        password=local_password(parsed.password),
        maxmemory_mb=settings.redis_maxmemory_mb,
        end_with_parent=True,
    ).start()
    say(
        f"started redis-server on {mask_url(server.url)} (AOF under {RUN_DIR / 'redis'}; "
        f"maxmemory {settings.redis_maxmemory_mb} MB, noeviction; password from REDIS_URL "
        f"or kept in {LOCAL_PASSWORD_FILE}, which the other commands in this folder read)"
    )
    return server


def yahoo_reachable(timeout: float = 3.0) -> bool:
    try:
        urllib.request.urlopen(YAHOO_PROBE, timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # it answered; the loader's retries handle the rest
    except (urllib.error.URLError, OSError):
        return False


def stocks_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stocks.cli", *args]


def load(*args: str, env: dict[str, str], check: bool = False) -> None:
    """``stocks load <args>``, which ends (SIGTERM) should this process be killed."""
    hook = lifetime.ends_with_this_process()
    subprocess.run(stocks_command("load", *args), env=env, check=check, preexec_fn=hook)


def load_if_empty(settings: Settings) -> None:
    r = settings.redis(STOCKS_DB)
    count = storage.count_symbols(r)
    if count:
        say(f"DB 0 already holds {count} tickers; not loading")
        return
    data_dir = settings.data_dir
    env = env_with_redis(settings.redis_url)
    if data_dir.is_dir():
        say(f"loading CSV files from {data_dir}")
        load("--source", "csv", "--path", str(data_dir), env=env)
    elif yahoo_reachable():
        say("loading the S&P 500 from Yahoo Finance (5 years)")
        load("--source", "yahoo", "--sp500", "--period", "5y", env=env)
    if storage.count_symbols(r) == 0:
        say("no real data available: loading synthetic prices (the API labels them synthetic)")
        load("--source", "synthetic", env=env, check=True)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def stop_all(children: list[subprocess.Popen], server: RedisServer | None) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    if server is not None:
        server.stop()
        say("stopped redis-server")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def start_child(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """``stocks <args>`` in its own process group, sent SIGTERM if this process dies.

    Its own group: Ctrl-C reaches only this process, which then stops each child with one
    SIGTERM (the server's master passes it on to its workers, which finish the requests in
    flight). A server worker that got the terminal's SIGINT and its master's signal as
    well could stall in its shutdown.
    """
    return subprocess.Popen(
        stocks_command(*args),
        process_group=0,
        env=env,
        preexec_fn=lifetime.ends_with_this_process(),
    )


RESTARTS_PER_MINUTE = 5  # more, and something is wrong that restarting will not mend


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def supervise(children: list[subprocess.Popen], server: RedisServer | None, env: dict) -> int:
    """Until Ctrl-C: a chart worker or the redis-server started here that ends is started
    again (Redis on the same port and files: its AOF brings the data and the queue back;
    the API and the worker reconnect by themselves); the API ending ends the run."""
    api, worker = children
    restarts: list[float] = []

    def may_restart(what: str, returncode: int) -> bool:
        now = time.monotonic()
        restarts[:] = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > RESTARTS_PER_MINUTE:
            say(f"{what} ended ({how_it_ended(returncode)}), too often to restart; stopping")
            return False
        say(f"{what} ended ({how_it_ended(returncode)}); starting it again")
        return True

    while True:
        time.sleep(0.5)
        if api.poll() is not None:
            say(f"the API ended ({how_it_ended(api.returncode)}); stopping")
            return 1
        if server is not None and server.process.poll() is not None:
            if not may_restart("redis-server", server.process.returncode):
                return 1
            server.start()
        if worker.poll() is not None:
            if not may_restart("the chart worker", worker.returncode):
                return 1
            worker = children[1] = start_child("worker", "--concurrency", "1", env=env)


def run(settings: Settings, host: str, port: int) -> int:
    # SIGTERM (kill, a supervisor, `timeout`) and SIGHUP (the terminal closed) stop
    # everything just like Ctrl-C does, and so does SIGINT even when a non-interactive
    # parent shell started us ignoring it.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _interrupt)
    server = ensure_redis(settings)
    if server is not None:
        settings = settings.replace(redis_url=server.url)
    children: list[subprocess.Popen] = []
    try:
        load_if_empty(settings)
        env = env_with_redis(settings.redis_url)
        api = start_child("serve", "--host", host, "--port", str(port), env=env)
        children.append(api)
        children.append(start_child("worker", "--concurrency", "1", env=env))
        base = f"http://{host}:{port}"
        if not wait_healthy(base, api):
            say("the API did not come up; see its output above")
            return 1
        say(f"API ready at {base}  (docs: {base}/docs). Ctrl-C stops everything.")
        return supervise(children, server, env)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop_all(children, server)
