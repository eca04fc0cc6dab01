"""`stocks run` (what `make run` calls), end to end as a new user meets it."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import secrets
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
from conftest import descendants, running, wait_for

from stocks import devrun
from stocks.config import mask_url
from stocks.keys import QUEUE_DB, WORKERS_KEY
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


@dataclass
class Run:
    proc: subprocess.Popen
    lines: list[str]  # its output, read as it comes: a full pipe would block the children
    reader: threading.Thread
    base: str  # the API
    redis_url: str

    def output(self) -> str:
        """All it printed (once it exited)."""
        self.reader.join(timeout=10)
        return "".join(self.lines)


def run_command(tmp_path: Path) -> tuple[list[str], dict[str, str], str, str]:
    """`stocks run` on two CSV tickers in ``tmp_path``: (argv, env, API base, Redis URL)."""
    data = tmp_path / "prices"
    data.mkdir()
    for symbol in ("AAPL", "MSFT"):
        (data / f"{symbol}.csv").write_text(CSV)
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}"
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "STOCKS_DATA_DIR": str(data)}
    argv = [sys.executable, "-m", "stocks.cli", "run", "--port", str(port)]
    return argv, env, f"http://127.0.0.1:{port}", redis_url


def start_run(tmp_path: Path) -> Run:
    """`stocks run` in ``tmp_path``, in its own session as from a terminal."""
    argv, env, base, redis_url = run_command(tmp_path)
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return Run(proc, lines, reader, base, redis_url)


def test_run_starts_redis_loads_serves_with_a_worker_and_ctrl_c_stops_all(tmp_path):
    run = start_run(tmp_path)
    proc, lines, base, redis_url = run.proc, run.lines, run.base, run.redis_url
    redis_port = urlparse(redis_url).port
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
    output = run.output()

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


def children_when_up(pid: int, base: str, redis_url: str, poll=lambda: True) -> set[int]:
    """Every process under ``pid`` once its API is ready and its worker registered
    (``poll``: called while waiting); the redis-server among them."""
    wait_for(lambda: poll() and ready(base), 90, "/ready")
    queue_db = redis.Redis.from_url(redis_url, db=QUEUE_DB)
    wait_for(lambda: poll() and queue_db.zcard(WORKERS_KEY), 60, "the worker to register")
    children = descendants(pid)
    assert queue_db.info("server")["process_id"] in children
    assert len(children) >= 4  # redis-server, API (and its workers), worker (and its child)
    return children


def kill_all(pids: set[int]) -> None:
    """SIGKILL what is left of ``pids`` (nothing, unless a test failed)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def redis_log(tmp_path: Path) -> str:
    return (tmp_path / ".run" / "redis" / "redis.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_killed_or_hung_up_run_leaves_no_process_behind(tmp_path, signum):
    """SIGHUP (its terminal closed) stops all as SIGTERM does, exit 0; after a SIGKILL the
    kernel sends each child SIGTERM: the redis-server, the API and the worker all end, and
    Redis shuts down as cleanly as when asked."""
    run = start_run(tmp_path)
    children: set[int] = set()
    try:
        children = children_when_up(run.proc.pid, run.base, run.redis_url)
        os.kill(run.proc.pid, signum)
        run.proc.wait(timeout=60)
        wait_for(lambda: not any(running(p) for p in children), 30, "every child to end")
    finally:
        kill_all(children | descendants(run.proc.pid))
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    output = run.output()
    if signum == signal.SIGHUP:
        assert run.proc.returncode == 0, output
        assert "[stocks run] stopping" in output and "stopped redis-server" in output
    else:
        assert run.proc.returncode == -signal.SIGKILL
    assert "Redis is now ready to exit" in redis_log(tmp_path)
    assert PASSWORD not in output
    assert RedisServer(tmp_path / ".run" / "redis").aof_files()
    assert open_to_others(tmp_path / ".run") == {}


def test_a_killed_worker_or_redis_is_started_again_and_said_so(tmp_path):
    """A dev loop goes on: the worker and the redis-server `stocks run` started come back
    (Redis on its files, so the data is there), the API reconnects, a chart is drawn."""
    run = start_run(tmp_path)
    try:
        children_when_up(run.proc.pid, run.base, run.redis_url)
        worker = next(
            pid
            for pid in children_of(run.proc.pid)
            if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(worker, signal.SIGKILL)
        os.kill(redis.Redis.from_url(run.redis_url).info("server")["process_id"], signal.SIGKILL)
        for what in ("the chart worker", "redis-server"):
            said = f"{what} ended (killed by SIGKILL); starting it again"
            wait_for(lambda s=said: any(s in line for line in run.lines), 30, said)
        wait_for(lambda: ready(run.base), 60, "/ready again")
        request = urllib.request.Request(
            run.base + "/jobs",
            data=json.dumps({"kind": "line", "symbols": ["MSFT"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            job = json.loads(resp.read())
        wait_for(
            lambda: get_json(run.base + job["links"]["self"])[1]["status"] == "finished",
            60,
            "the new worker to draw",
        )
    finally:
        os.killpg(run.proc.pid, signal.SIGINT)
        run.proc.wait(timeout=90)
    assert run.proc.returncode == 0, run.output()


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid``, alive."""
    return [p for p in descendants(pid) if parent_of(p) == pid]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def open_to_others(folder: Path) -> dict[str, str]:
    """``folder`` and what is in it that is not its owner's alone (folders 0700, files
    0600): name -> mode."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path.relative_to(folder.parent))] = oct(mode)
    return found


def test_the_redis_folder_and_files_are_its_owners_alone(tmp_path):
    """The AOF holds job ids (read-or-delete capabilities): no one else may read it, even
    in a folder an older version made open (0755)."""
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    server = RedisServer(folder, appendonly=True).start()
    try:
        redis.Redis.from_url(server.url).set("job:x", "1")
    finally:
        server.stop()
    assert server.aof_files() and (folder / "redis.log").is_file()
    assert open_to_others(folder) == {}


def test_closing_its_terminal_stops_all_cleanly(tmp_path):
    """The real hangup: `stocks run` on a pseudo-terminal that then closes. It gets SIGHUP
    and its output fails (EIO), yet it stops every child and exits 0."""
    argv, env, base, redis_url = run_command(tmp_path)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: its own session, the pty its controlling terminal
        try:
            os.chdir(tmp_path)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    children, status = {pid}, None
    try:
        # its output read meanwhile: a full terminal would block the writers
        children |= children_when_up(pid, base, redis_url, poll=lambda: drain(terminal))
        os.close(terminal)  # the terminal window closes
        status = os.waitpid(pid, 0)[1]
        children.discard(pid)  # reaped: its number may be reused
        wait_for(lambda: not any(running(p) for p in children), 30, "every child to end")
    finally:
        kill_all(children)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "Redis is now ready to exit" in redis_log(tmp_path)


def drain(fd: int) -> bool:
    """Read what a terminal has to show now, without waiting for more."""
    with contextlib.suppress(OSError):  # EIO: nobody has it open any more
        while select.select([fd], [], [], 0)[0] and os.read(fd, 65536):
            pass
    return True
