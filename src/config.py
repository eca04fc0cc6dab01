"""Settings, read from the environment once, at start, and handed to every part.

Every knob is an environment variable so the same image runs on a laptop and in a
cluster; secrets (API keys, the Redis password inside REDIS_URL) never live in code.
This is the only module that reads the environment: a part gets a ``Settings`` from
whoever starts it (``stocks`` subcommands call ``Settings.from_env()``; tests build one),
so a setting cannot change under a running process or differ between two modules.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stocks.redis_outage import FailFastPool, Outage

LOCAL_PASSWORD_FILE = Path(".run") / "redis.password"  # written by ``stocks run``


def _env(name: str, **kwargs):
    """A field read from environment variable ``name`` (the README lists the same names)."""
    return field(metadata={"env": name}, **kwargs)


@dataclass(frozen=True)
class Settings:
    redis_url: str = _env("REDIS_URL", default="redis://127.0.0.1:6379")
    api_keys: tuple[str, ...] = _env("STOCKS_API_KEYS", default=())
    data_dir: Path = _env("STOCKS_DATA_DIR", default=Path("../shared/data/sp500_daily"))
    # jobs and workers
    worker_timeout: float = _env("STOCKS_WORKER_TIMEOUT", default=30.0)
    max_attempts: int = _env("STOCKS_MAX_ATTEMPTS", default=3)
    result_ttl: int = _env("STOCKS_RESULT_TTL", default=7 * 24 * 3600)
    shutdown_grace: float = _env("STOCKS_SHUTDOWN_GRACE", default=25.0)
    # 0 (outside the images, where several workers share a host) serves nothing
    health_port: int = _env("STOCKS_HEALTH_PORT", default=0)
    worker_stall: float = _env("STOCKS_WORKER_STALL", default=60.0)
    batch_max: int = _env("STOCKS_BATCH_MAX", default=32)
    image_budget_mb: float = _env("STOCKS_IMAGE_BUDGET_MB", default=256.0)
    redis_maxmemory_mb: int = _env("STOCKS_REDIS_MAXMEMORY_MB", default=1024)
    # the API
    redis_timeout: float = _env("STOCKS_REDIS_TIMEOUT", default=1.5)
    job_rate: str = _env("STOCKS_JOB_RATE", default="120/minute")
    compute_rate: str = _env("STOCKS_COMPUTE_RATE", default="50/second;1500/minute")
    api_cache_mb: int = _env("STOCKS_API_CACHE_MB", default=128)
    analytics_cache: int = _env("STOCKS_ANALYTICS_CACHE", default=128)
    indicator_cache: int = _env("STOCKS_INDICATOR_CACHE", default=32)
    # the HTTP server
    worker_class: str = _env("STOCKS_WORKER_CLASS", default="granian")
    threads: int = _env("STOCKS_THREADS", default=4)
    timeout: float = _env("STOCKS_TIMEOUT", default=30.0)
    header_timeout: float = _env("STOCKS_HEADER_TIMEOUT", default=10.0)
    body_timeout: float = _env("STOCKS_BODY_TIMEOUT", default=10.0)
    access_log: bool = _env("STOCKS_ACCESS_LOG", default=False)
    # the operator's view: logs and metrics (stocks.logs, stocks.metrics)
    log_format: str = _env("STOCKS_LOG_FORMAT", default="auto")
    log_level: str = _env("STOCKS_LOG_LEVEL", default="INFO")
    metrics_dir: str = _env("STOCKS_METRICS_DIR", default="")
    # the queue-depth autoscaler (stocks autoscale)
    autoscale_min: int = _env("STOCKS_AUTOSCALE_MIN", default=1)
    autoscale_max: int = _env("STOCKS_AUTOSCALE_MAX", default=8)
    autoscale_jobs_per_worker: int = _env("STOCKS_AUTOSCALE_JOBS_PER_WORKER", default=4)
    autoscale_interval: float = _env("STOCKS_AUTOSCALE_INTERVAL", default=10.0)
    autoscale_scale_down_window: float = _env("STOCKS_AUTOSCALE_SCALE_DOWN_WINDOW", default=120.0)
    pod_namespace: str = _env("POD_NAMESPACE", default="")
    # the Yahoo loader
    yahoo_max_requests: int = _env("YAHOO_MAX_REQUESTS", default=4)
    yahoo_retries: int = _env("YAHOO_RETRIES", default=5)
    yahoo_retry_wait: float = _env("YAHOO_RETRY_WAIT", default=1.0)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, local_password: Path = LOCAL_PASSWORD_FILE
    ) -> Settings:
        """Settings from ``environ`` (default: this process's); unset or empty means default.

        Without REDIS_URL, the default local Redis comes with the password ``stocks run``
        keeps for the Redis it started (``local_password``), so that ``stocks status`` or
        ``stocks load`` in another terminal of the same folder reach it.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"], "")
            if raw.strip() != "":
                values[f.name] = _parse(f.name, f.type, raw)
        if "redis_url" not in values and local_password.is_file():
            password = quote(local_password.read_text().strip(), safe="")
            values["redis_url"] = cls.redis_url.replace("redis://", f"redis://:{password}@", 1)
        return cls(**values)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def redis(self, db: int, *, decode: bool = False, timeout: float | None = None) -> redis.Redis:
        """A pooled client for one logical DB of this Redis (``timeout``: see redis_client)."""
        return redis_client(self.redis_url, db, decode=decode, timeout=timeout)


def _parse(name: str, kind: str, raw: str):
    parsers = {
        "str": str,
        "int": int,
        "float": float,
        "Path": Path,
        "bool": lambda text: text.strip().lower() in ("1", "true", "yes", "on"),
        "tuple[str, ...]": lambda text: tuple(k.strip() for k in text.split(",") if k.strip()),
    }
    try:
        return parsers[kind](raw)
    except ValueError as e:
        raise SystemExit(f"setting {ENV_NAMES[name]}: {e}") from None


ENV_NAMES: dict[str, str] = {f.name: f.metadata["env"] for f in fields(Settings)}


# what stands between "scheme://user:" and "@" in a URL: its password
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` fit to print or log: the password of any URL in it becomes ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def export_metrics_dir(path: str) -> None:
    """The one write of the environment: prometheus_client's multiprocess mode reads
    PROMETHEUS_MULTIPROC_DIR itself (when each metric is made), and processes started
    from here (server workers, spawned chart workers) inherit both names."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ[ENV_NAMES["metrics_dir"]] = path


def child_environ(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``, for a child process to read."""
    return {**os.environ, **overrides}


@cache
def redis_client(
    url: str, db: int, *, decode: bool = False, timeout: float | None = None
) -> redis.Redis:
    """A client for one logical DB; cached per arguments so connection pools are shared.

    Without ``timeout`` (workers, the loader): long waits, a timed-out call retried once,
    since they would rather wait out a blip than fail. With it (the API): a call waits at
    most that long and a timeout is not retried, so a request answers 503 in about that
    time when Redis hangs, and the calls after it at once (``stocks.redis_outage``); a
    refused connection is retried once (a Redis that restarted).
    """
    if timeout is None:
        return redis.Redis.from_url(
            url,
            db=db,
            decode_responses=decode,
            socket_connect_timeout=5,
            socket_timeout=30,
            health_check_interval=30,
            retry_on_timeout=True,
        )
    pool = FailFastPool.from_url(
        url,
        db=db,
        decode_responses=decode,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        outage=redis_outage(url, timeout),
    )
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


@cache
def redis_outage(url: str, timeout: float) -> Outage:
    """Shared by the API's clients of one Redis: once a call times out, the others fail at
    once (see ``stocks.redis_outage``) while a thread tries Redis again every 0.5 s."""
    return Outage(retry_every=min(timeout, 0.5))


def reset_clients() -> None:
    """Forget cached clients, so no socket is shared with a parent after a fork."""
    redis_client.cache_clear()
    redis_outage.cache_clear()
