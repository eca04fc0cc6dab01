"""The ``stocks`` command: one entry point whose subcommands start each part."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from stocks.config import Settings


def bounded_int(low: int, high: int | None, rule: str) -> Callable[[str], int]:
    """An argparse type: an int in [low, high] (``rule`` says so in words), so that a bad
    number is a usage error (exit 2), not a traceback from a socket or a silent default."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value}: must be {rule}")
        return value

    return parse


PORT = bounded_int(1, 65535, "a port from 1 to 65535")
PORT_OR_OFF = bounded_int(0, 65535, "a port from 1 to 65535, or 0 (off)")
COUNT = bounded_int(1, None, "at least 1")


def build_parser() -> argparse.ArgumentParser:
    from stocks import loader  # noqa: PLC0415 - keep `stocks --help` light

    parser = argparse.ArgumentParser(prog="stocks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API (granian; STOCKS_WORKER_CLASS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=PORT, default=5000, help="1-65535")
    serve.add_argument("--workers", type=COUNT, default=None, help="default: cores + 1")

    worker = sub.add_parser("worker", help="run chart workers")
    worker.add_argument("--concurrency", type=COUNT, default=1, help="worker processes (>= 1)")
    worker.add_argument(
        "--health-port",
        "--metrics-port",
        dest="health_port",
        type=PORT_OR_OFF,
        default=None,
        help="serve GET /health and GET /metrics on this port (0: off)",
    )

    load = sub.add_parser("load", help="load prices into Redis DB 0")
    loader.add_arguments(load)

    autoscale = sub.add_parser("autoscale", help="scale the worker Deployment on queue depth")
    autoscale.add_argument("--deployment", default="stocks-worker")
    autoscale.add_argument("--namespace", default=None, help="default: the pod's own")
    autoscale.add_argument(
        "--health-port", type=PORT_OR_OFF, default=None, help="serve GET /health here (0: off)"
    )

    run = sub.add_parser("run", help="Redis if needed, data if empty, API and a worker")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=PORT, default=5000, help="the API's, 1-65535")

    status = sub.add_parser("status", help="what Redis, the data, the queue and workers are doing")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    return parser


def main(argv: list[str] | None = None) -> int:
    from stocks import logs, metrics  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()  # the one read of the environment
    logs.setup(settings)
    if args.command == "serve":
        # before the server starts its processes: they share the folder's counters
        settings = metrics.prepare_dir(settings, "api")
        from stocks.api.server import serve  # noqa: PLC0415

        return serve(settings, args.host, args.port, args.workers)
    if args.command == "worker":
        settings = metrics.prepare_dir(settings, "worker")
        from stocks.worker.main import run_workers  # noqa: PLC0415

        return run_workers(settings, args.concurrency, args.health_port)
    if args.command == "autoscale":
        from stocks import autoscale  # noqa: PLC0415 - the kubernetes client is heavy

        return autoscale.main(settings, args.deployment, args.namespace, args.health_port)
    if args.command == "load":
        from stocks import loader  # noqa: PLC0415

        return loader.run(args, settings)
    if args.command == "status":
        from stocks import status  # noqa: PLC0415

        return status.main(settings, as_json=args.json)
    if args.command == "run":
        from stocks import devrun  # noqa: PLC0415

        return devrun.run(settings, args.host, args.port)
    return 2


if __name__ == "__main__":
    sys.exit(main())
