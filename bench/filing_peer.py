"""The API as it was when issue 12 was filed (commit c600f7e), served for bench_api.

Issue 12's speed target is ">= 2x today's gunicorn figure": today's gunicorn option runs
today's app, so the day's own figure needs the day's own code. That commit's ``src/`` is
extracted from git as a package ``stocks`` in a temporary folder and run by this module
(``python -m bench.filing_peer serve|load ...`` with that folder on PYTHONPATH): its own
``stocks serve`` (gunicorn gthread, cores + 1 workers x 4 threads) and its own DB-0
layout, which today's code cannot read, so it gets a redis-server of its own.

This module runs under either package, so it imports ``stocks`` only inside functions
and uses only what both share (``storage.make_bars``, ``storage.replace_series``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import redis

FILING_COMMIT = "c600f7e"
META = {"source": "bench"}


# --- the data both sides serve ---------------------------------------------------------


def synthetic_series(seed: int) -> np.ndarray:
    from stocks import storage  # noqa: PLC0415 - whichever package runs this

    days = np.arange(np.datetime64("2013-02-08"), np.datetime64("2018-02-08"))
    days = days[np.is_busday(days)]
    rng = np.random.default_rng(seed)
    close = np.round(50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days)))), 4)
    return storage.make_bars(
        days, close, close * 1.01, close * 0.99, close, rng.integers(10**5, 10**8, len(days))
    )


def bench_series(sp500_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """All 505 real tickers when ../shared is there, else 100 synthetic ones."""
    if sp500_dir.is_dir():
        try:  # the CSV parser's module at filing, then today's
            from stocks.csv_source import parse_csv  # noqa: PLC0415
        except ImportError:
            from stocks.sources.csv import parse_csv  # noqa: PLC0415

        series = {p.stem: parse_csv(p).bars for p in sorted(sp500_dir.glob("*.csv"))}
        return series, f"{len(series)} real tickers (../shared/data/sp500_daily)"
    series = {f"SYN{i:03d}": synthetic_series(i) for i in range(100)}
    return series, f"{len(series)} synthetic tickers (5 years of business days)"


# --- run from bench_api (today's package) ----------------------------------------------


def extract(root: Path, into: Path) -> Path | str:
    """The folder to put on PYTHONPATH for the old package, or why it cannot be had."""
    git = ["git", "-C", str(root)]
    try:
        found = subprocess.run(
            [*git, "cat-file", "-e", f"{FILING_COMMIT}^{{commit}}"], capture_output=True
        )
        if found.returncode:
            return f"commit {FILING_COMMIT} is not in the git history here (shallow clone?)"
        tar = subprocess.run(
            [*git, "archive", "--format=tar", "--prefix=stocks/", f"{FILING_COMMIT}:src"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"git could not extract {FILING_COMMIT}: {exc}"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def python_path(pkg: Path, root: Path) -> str:
    return os.pathsep.join([str(pkg), str(root)])


def load(pkg: Path, root: Path, redis_url: str, sp500_dir: Path) -> subprocess.Popen:
    """Start filling the old layout with the same bars (runs alongside today's load)."""
    env = {**os.environ, "PYTHONPATH": python_path(pkg, root)}
    cmd = [sys.executable, "-m", "bench.filing_peer", "load", redis_url, str(sp500_dir)]
    return subprocess.Popen(
        cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.filing_peer", "serve", str(port)]


# --- run under the old package ---------------------------------------------------------


def _old_package_only() -> None:
    """Drop setuptools' editable finder: it would hand out today's module for any name
    missing from the old package, mixing the two. Then check which package is found."""
    sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", "")]
    import stocks  # noqa: PLC0415

    folder = Path(stocks.__file__).resolve().parents[1]
    if folder not in {Path(p).resolve() for p in os.environ["PYTHONPATH"].split(os.pathsep)}:
        raise SystemExit(f"stocks imported from {stocks.__file__}, not from PYTHONPATH")


def main(argv: list[str]) -> int:
    _old_package_only()
    if argv[0] == "load":
        from stocks import storage  # noqa: PLC0415

        r = redis.Redis.from_url(argv[1], db=0)  # DB 0: prices, then as now
        for symbol, bars in bench_series(Path(argv[2]))[0].items():
            storage.replace_series(r, symbol, bars, META)
        return 0
    from stocks.cli import main as stocks_main  # noqa: PLC0415

    for name in ("STOCKS_WORKER_CLASS", "STOCKS_THREADS", "STOCKS_TIMEOUT"):
        os.environ.pop(name, None)  # its own defaults: gunicorn gthread, 4 threads
    return stocks_main(["serve", "--port", argv[1]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
