"""``stocks run`` (what ``make run`` calls): everything a laptop needs, in one process tree.

Uses the Redis at REDIS_URL when it answers, else starts a real redis-server with AOF
under ``.run/``; loads prices when DB 0 is empty (../shared/data, else Yahoo, else
synthetic); then serves the API with one chart worker until Ctrl-C, which stops all
it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from stocks import storage
from stocks.config import STOCKS_DB, redis_client, redis_url
from stocks.redis_server import RedisServer, ping

RUN_DIR = Path(".run")
SHARED_PRICES = Path("..") / "shared" / "data" / "sp500_daily"
YAHOO_PROBE = "https://query2.finance.yahoo.com/v8/finance/chart/SPY?range=1d"


def say(message: str) -> None:
    print(f"[stocks run] {message}", flush=True)


def ensure_redis() -> RedisServer | None:
    """Reuse a reachable Redis; otherwise start one on REDIS_URL's local port."""
    url = redis_url()
    if ping(url):
        say(f"using the Redis at {url}")
        return None
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"Redis at {url} does not answer, and it is not local to start it")
    server = RedisServer(RUN_DIR / "redis", port=parsed.port or 6379, appendonly=True).start()
    say(f"started redis-server on {server.url} (AOF under {RUN_DIR / 'redis'})")
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


def load_if_empty() -> None:
    r = redis_client(STOCKS_DB)
    count = storage.count_symbols(r)
    if count:
        say(f"DB 0 already holds {count} tickers; not loading")
        return
    data_dir = Path(os.environ.get("STOCKS_DATA_DIR", SHARED_PRICES))
    if data_dir.is_dir():
        say(f"loading CSV files from {data_dir}")
        subprocess.run(stocks_command("load", "--source", "csv", "--path", str(data_dir)))
    elif yahoo_reachable():
        say("loading the S&P 500 from Yahoo Finance (5 years)")
        subprocess.run(stocks_command("load", "--source", "yahoo", "--sp500", "--period", "5y"))
    if storage.count_symbols(r) == 0:
        say("no real data available: loading synthetic prices (the API labels them synthetic)")
        subprocess.run(stocks_command("load", "--source", "synthetic"), check=True)


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


def run(host: str, port: int) -> int:
    # SIGTERM (kill, a supervisor, `timeout`) stops everything just like Ctrl-C does, and
    # so does SIGINT even when a non-interactive parent shell started us ignoring it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    server = ensure_redis()
    if server is not None:
        os.environ["REDIS_URL"] = server.url
    children: list[subprocess.Popen] = []
    try:
        load_if_empty()
        # Each child in its own process group: Ctrl-C reaches only this process, which
        # then stops each child with one SIGTERM (the server's master passes it on to its
        # workers, which finish the requests in flight). A server worker that got the
        # terminal's SIGINT and its master's signal as well could stall in its shutdown.
        api = subprocess.Popen(
            stocks_command("serve", "--host", host, "--port", str(port)), process_group=0
        )
        children.append(api)
        worker = subprocess.Popen(stocks_command("worker", "--concurrency", "1"), process_group=0)
        children.append(worker)
        base = f"http://{host}:{port}"
        if not wait_healthy(base, api):
            say("the API did not come up; see its output above")
            return 1
        say(f"API ready at {base}  (docs: {base}/docs). Ctrl-C stops everything.")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        say("a child process exited; stopping")
        return 1
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop_all(children, server)
