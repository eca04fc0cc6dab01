"""``stocks serve``: the API under granian (default) or gunicorn, started from Python.

Default (STOCKS_WORKER_CLASS=granian): granian's Rust HTTP server, one process per core
+ 1, each running the Flask app through ``BufferedWsgi`` (RSGI): headers are read by
granian under a timeout, the body by its event loop under a size limit and a deadline,
and only a complete request takes one of the worker's threads; a cached answer the
version watch vouches for is given by the event loop with no thread at all. A slow, idle
or stalled client therefore holds a socket, never a thread. Measured on 2 busy cores
(bench/RESULTS.md, section api): 1.8x-2.0x (5 years) and 2.3x-2.7x (one month) the
requests per second of the same app on gunicorn gthread in the same runs, 2.2x-2.6x and
3.0x-3.3x the app of the day issue 12 was filed on its gunicorn, and normal GETs keep
answering while 50 slow sockets are open, where gunicorn's fail. granian's own WSGI mode
(``granian-wsgi``, kept for the benchmark, no body or time limits of ours) is about as
fast but hands a request to a thread before its body is read.

gunicorn (``gthread`` or ``sync``) stays selectable: cores + 1 pre-forked processes,
the app built once in the master and forked (``reset_clients`` in ``post_fork``).

Knobs (``Settings``): worker_class (granian|granian-wsgi|gthread|sync), threads (per
worker, 4), timeout (per-request limit, seconds), header_timeout and body_timeout (seconds
a client may take to send its headers and its body), access_log (log requests).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from functools import partial

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from stocks.api.buffered_wsgi import BufferedWsgi, Limits
from stocks.api.errors import error_body, http_error_code
from stocks.config import Settings, reset_clients
from stocks.lifetime import end_with_parent, exit_after_parent

GRANIAN_CLASSES = ("granian", "granian-wsgi")
GRANIAN_LOGGERS = ("_granian", "granian.access")
GRACEFUL_SECONDS = 10


def default_workers() -> int:
    return (os.cpu_count() or 1) + 1


def _post_fork(server, worker) -> None:
    reset_clients()


def gunicorn_options(settings: Settings, host: str, port: int, workers: int | None = None) -> dict:
    """gunicorn's settings (both the real server and the benchmark's peers run with them)."""
    options = {
        "bind": f"{host}:{port}",
        "workers": workers or default_workers(),
        "worker_class": settings.worker_class,
        "timeout": round(settings.timeout),
        "graceful_timeout": GRACEFUL_SECONDS,
        "keepalive": 5,
        # gunicorn's largest request line: longer ones get a 414 from gunicorn itself
        # (in the API's JSON shape: write_json_error)
        "limit_request_line": 8190,
        "preload_app": True,
        # gunicorn 25+ opens a runtime control socket under $HOME by default: unused here,
        # shared by every instance on a host, and not writable on a read-only root
        "control_socket_disable": True,
        "post_fork": _post_fork,
        "accesslog": "-" if settings.access_log else None,
        "errorlog": "-",
        "logger_class": RootLogs,
        "loglevel": "info",
        "proc_name": "stocks-api",
    }
    if settings.worker_class == "gthread":
        options["threads"] = settings.threads
    return options


class RootLogs(GunicornLogger):
    """gunicorn's own lines (start-up, workers, access) through the root logger that
    ``stocks.logs`` set up, so they are the same JSON (or text) lines as the app's."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse, in the API's JSON error shape.

    gunicorn refuses some requests before the app sees them (a request line over 8 KB,
    oversized headers, a malformed line) and by default answers with an HTML page; this
    replaces its ``util.write_error``. Its 500 for a crash outside the app carries no
    detail, as before.
    """
    message = f"{reason}: {mesg[:300]}" if mesg else reason
    body = error_body(status_int, http_error_code(status_int), message)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class WsgiServer(BaseApplication):
    """gunicorn with options from a dict and the app from a factory."""

    def __init__(self, app_factory: Callable[[], object], options: dict):
        self.app_factory = app_factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        return self.app_factory()


def buffered_front(app_factory: Callable[[], object], settings: Settings) -> BufferedWsgi:
    """Built in each granian worker process: its own app, Redis clients and thread pool."""
    from stocks.api.app import MAX_BODY_BYTES  # noqa: PLC0415 - the app's own limit

    limits = Limits(
        threads=settings.threads,
        body_timeout=settings.body_timeout,
        request_timeout=settings.timeout,
        max_body=MAX_BODY_BYTES,
    )
    app = app_factory()
    # an app with answers at hand (create_app's: cached answers the watch vouches for)
    # has them given by the event loop itself
    return BufferedWsgi(app, limits, answer_now=getattr(app, "answer_now", None))


def in_worker(build: Callable[[], object], master_pid: int) -> object:
    """Build the app in a new granian worker, tied to its master's life.

    The worker is forked with the master's signal handlers, which only flag the master;
    until granian installs the worker's own, a SIGTERM would be lost and the worker
    killed 10 s later. Nothing is in flight yet: the default action (exit) is right.
    A granian worker does not notice its master's death by itself (gunicorn's do): a
    master killed with SIGKILL would leave workers serving the port, so the kernel is
    asked to send the worker SIGTERM when its parent dies.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    end_with_parent(master_pid)
    exit_after_parent(master_pid, grace=GRACEFUL_SECONDS)  # should that SIGTERM stall
    return build()


def run_granian(
    settings: Settings,
    app_factory: Callable[[], object],
    host: str,
    port: int,
    workers: int | None = None,
) -> None:
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415 - only when chosen
    from granian.http import HTTP1Settings  # noqa: PLC0415
    from granian.server import MPServer  # noqa: PLC0415

    native = settings.worker_class == "granian-wsgi"
    server = MPServer(
        "stocks",  # names the processes only: the app comes from the loader below
        address=host,
        port=port,
        interface=Interfaces.WSGI if native else Interfaces.RSGI,
        workers=workers or default_workers(),
        blocking_threads=settings.threads if native else 1,
        http=HTTPModes.http1,
        loop=Loops.uvloop,  # measured: ~10-30% more req/s than asyncio's own loop
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_timeout * 1000)),
        log_access=settings.access_log,
        # granian's own lines (start-up, workers, access) go to the root logger, which
        # stocks.logs set up: the same JSON (or text) lines as the app's
        log_dictconfig={
            "loggers": {name: {"handlers": [], "propagate": True} for name in GRANIAN_LOGGERS}
        },
        workers_kill_timeout=GRACEFUL_SECONDS,
    )
    build = app_factory if native else partial(buffered_front, app_factory, settings)
    server.serve(target_loader=partial(in_worker, build, os.getpid()), wrap_loader=False)


def run_gunicorn(
    settings: Settings,
    app_factory: Callable[[], object],
    host: str,
    port: int,
    workers: int | None = None,
) -> None:
    gunicorn_util.write_error = write_json_error  # workers fork from this process
    WsgiServer(app_factory, gunicorn_options(settings, host, port, workers)).run()


def run_wsgi(
    settings: Settings,
    app_factory: Callable[[], object],
    host: str,
    port: int,
    workers: int | None = None,
) -> int:
    """Serve ``app_factory()`` until SIGINT/SIGTERM; returns the exit status."""
    run = run_granian if settings.worker_class in GRANIAN_CLASSES else run_gunicorn
    try:
        run(settings, app_factory, host, port, workers)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 5000, workers: int | None = None
) -> int:
    from stocks.api.app import create_app  # noqa: PLC0415 - the master imports it once

    return run_wsgi(settings, partial(create_app, settings), host, port, workers)
