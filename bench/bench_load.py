"""Benchmark: load all 505 real CSV files into a fresh redis-server.

Measures wall time and rows/s of ``stocks.loader.load_csv`` serially and with two
workers (processes that parse and write, threads that parse and write, and processes
that only parse while the parent writes: the design alternatives), the whole
``stocks load`` command as a user runs it, and Redis memory per stored row from
``INFO memory`` before and after the load. Then ``stocks load --update`` beside a full
load: with nothing new (the target: 505 tickers in one pass, no series rewritten, under
2 s) and after every file lost its last rows (truncated copies in a temporary folder).
Run: ``.venv/bin/python -m bench.bench_load``.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import redis

from bench.common import private_redis
from stocks import loader, storage, update
from stocks.config import Settings
from stocks.keys import STOCKS_DB
from stocks.sources.csv import import_parser, parse_csv

ROOT = Path(__file__).resolve().parents[1]
SP500_DIR = ROOT.parent / "shared" / "data" / "sp500_daily"
REPEATS = 3
EXPECTED_ROWS = 619_040
TICKERS = 505
CUT_ROWS = 5  # rows each file loses for the "update after truncation" row


def _parse_only(path: str):
    return Path(path).stem, parse_csv(path).bars


def parent_writes(settings: Settings, directory: Path, workers: int) -> int:
    """Alternative design: processes parse, the parent alone writes to Redis."""
    paths = sorted(str(p) for p in directory.glob("*.csv"))
    client = settings.redis(STOCKS_DB)
    rows = 0
    import_parser()  # as load_csv does: forked workers inherit pandas
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for symbol, bars in pool.map(_parse_only, paths, chunksize=8):
            storage.replace_series(client, symbol, bars, {"source": "csv"})
            rows += len(bars)
    return rows


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(client: redis.Redis, load) -> tuple[float, int, int, float]:
    """(seconds, rows, used_memory growth, client CPU seconds) of one load into an empty DB."""
    client.flushall()
    before = client.info("memory")["used_memory"]
    cpu = _cpu_seconds()
    started = time.perf_counter()
    rows = load()
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    after = client.info("memory")["used_memory"]
    if rows != EXPECTED_ROWS:
        raise RuntimeError(f"loaded {rows} rows, expected {EXPECTED_ROWS}")
    return seconds, rows, after - before, cpu


def _cli_load(url: str, workers: int, *extra: str) -> int:
    env = {**os.environ, "REDIS_URL": url}
    command = [sys.executable, "-m", "stocks.cli", "load", "--source", "csv"]
    command += ["--path", str(SP500_DIR), "--workers", str(workers), *extra]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return EXPECTED_ROWS


def _truncated_copies(directory: Path) -> Path:
    for path in SP500_DIR.glob("*.csv"):
        lines = path.read_bytes().splitlines(keepends=True)
        (directory / path.name).write_bytes(b"".join(lines[:-CUT_ROWS]))
    return directory


def _timed(prepare, act, check) -> tuple[float, float]:
    """(best, median) wall seconds of ``act`` over REPEATS, each after ``prepare``."""
    walls = []
    for _ in range(REPEATS):
        prepare()
        started = time.perf_counter()
        outcome = act()
        walls.append(time.perf_counter() - started)
        check(outcome)
    return min(walls), statistics.median(walls)


def _expect(what: str, ok: bool) -> None:
    if not ok:
        raise RuntimeError(f"unexpected outcome: {what}")


def update_cases(url: str, client: redis.Redis, settings: Settings) -> dict[str, tuple]:
    """Full load vs --update with nothing new vs --update after truncation, same server."""

    def load(directory: Path):
        return lambda: loader.load_csv(settings, directory, workers=2, progress=False)

    def run_update():
        return update.update_csv(settings, SP500_DIR, workers=2, progress=False)

    def fresh(directory: Path):
        return lambda: (client.flushall(), load(directory)())

    def unchanged(before: dict):
        def check(summary) -> None:
            _expect("nothing new", len(summary.up_to_date) == TICKERS and not summary.updated)
            _expect("no series rewritten", storage.get_metas(client, before) == before)

        return check

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cut = _truncated_copies(Path(tmp))
        results["full load (library call, 2 processes)"] = _timed(
            client.flushall,
            load(SP500_DIR),
            lambda s: _expect("full load", s.rows == EXPECTED_ROWS),
        )
        fresh(SP500_DIR)()
        before = storage.get_metas(client, storage.list_symbols(client))
        results["--update, nothing new (library call)"] = _timed(
            lambda: None, run_update, unchanged(before)
        )
        results["`stocks load --update` command, nothing new"] = _timed(
            lambda: None, lambda: _cli_load(url, 2, "--update"), lambda _rows: None
        )
        _expect("command wrote nothing", storage.get_metas(client, before) == before)
        results[f"--update after cutting {CUT_ROWS} rows from every file (library call)"] = _timed(
            fresh(cut),
            run_update,
            lambda s: _expect("appended", s.rows_added == CUT_ROWS * TICKERS and not s.failures),
        )
    return results


def run() -> str:
    if not SP500_DIR.is_dir():
        return "## Load 505 CSV files\n\nSkipped: ../shared/data/sp500_daily is absent.\n"
    with private_redis(appendonly=False) as server:
        client = redis.Redis.from_url(server.url, db=STOCKS_DB)
        settings = Settings(redis_url=server.url)
        cases = [
            (
                "serial (--workers 1)",
                lambda: loader.load_csv(settings, SP500_DIR, workers=1, progress=False).rows,
            ),
            (
                "2 processes, each writes (default)",
                lambda: (
                    loader.load_csv(
                        settings, SP500_DIR, workers=2, kind="process", progress=False
                    ).rows
                ),
            ),
            (
                "2 threads, each writes",
                lambda: (
                    loader.load_csv(
                        settings, SP500_DIR, workers=2, kind="thread", progress=False
                    ).rows
                ),
            ),
            ("2 processes parse, parent writes", lambda: parent_writes(settings, SP500_DIR, 2)),
            ("`stocks load` command, --workers 2", lambda: _cli_load(server.url, 2)),
        ]
        results = {}
        load_before = os.getloadavg()[0]
        for name, load in cases:
            runs = [_measure(client, load) for _ in range(REPEATS)]
            results[name] = (
                min(r[0] for r in runs),
                statistics.median(r[0] for r in runs),
                runs[-1][1],
                statistics.median(r[2] for r in runs),
                statistics.median(r[3] for r in runs),
            )
        updates = update_cases(server.url, client, settings)
        load_after = os.getloadavg()[0]
    return _report(results, (load_before, load_after)) + "\n" + _update_report(updates)


def _update_report(results: dict[str, tuple[float, float]]) -> str:
    full = results["full load (library call, 2 processes)"][0]
    command = results["`stocks load --update` command, nothing new"][0]
    lines = [
        "### `stocks load --update` beside a full load",
        "",
        f"Same server, best and median of {REPEATS} runs. Nothing new: all {TICKERS} "
        "files are already stored (the run reads every meta and last bar in one pipelined "
        "round trip and each file's last line, and must leave every version untouched: "
        f"checked). After truncation: each file was stored without its last {CUT_ROWS} "
        "rows, so every file is parsed and 5 rows appended per ticker.",
        "",
        "| Case | Wall best (s) | Wall median (s) | vs full load |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, (best, median) in results.items():
        lines.append(f"| {name} | {best:.3f} | {median:.3f} | {best / full:.2f}x |")
    lines += [
        "",
        f"- Target: `--update` of {TICKERS} tickers with nothing new under 2 s: the whole "
        f"command took {command:.2f} s at best (interpreter start and imports included): "
        f"{'met' if command < 2 else 'NOT met'}.",
        "",
        "Command: `.venv/bin/python -m bench.bench_load` (the update itself: "
        "`stocks load --source csv --path ../shared/data/sp500_daily --update`).",
        "",
    ]
    return "\n".join(lines)


def _report(results: dict[str, tuple], loadavg: tuple[float, float]) -> str:
    default_name = "2 processes, each writes (default)"
    cli_name = "`stocks load` command, --workers 2"
    serial = results["serial (--workers 1)"][0]
    lines = [
        "## Load 505 CSV files (619,040 rows) into Redis",
        "",
        f"Best and median of {REPEATS} runs each into an emptied DB 0 of a fresh redis-server "
        f"(AOF off), {os.cpu_count()} CPUs, 1-minute load average {loadavg[0]:.1f} before "
        f"and {loadavg[1]:.1f} after (other work on the machine inflates wall times; "
        "CPU seconds are the loader's own work, worker processes included).",
        "",
        "| Case | Wall best (s) | Wall median (s) | CPU (s) | Rows/s (best) | vs serial "
        "| Redis B/row |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (best, median, rows, grown, cpu) in results.items():
        lines.append(
            f"| {name} | {best:.2f} | {median:.2f} | {cpu:.2f} | {rows / best:,.0f} | "
            f"{serial / best:.2f}x | {grown / rows:.1f} |"
        )
    per_row = results[default_name][3] / results[default_name][2]
    cli = results[cli_name][0]
    lines += [
        "",
        f"- Target <= 5 s wall on 2 cores: the whole command took {cli:.2f} s at best "
        f"(interpreter start and imports included): {'met' if cli <= 5 else 'NOT met'}.",
        f"- Target <= 64 B per stored row: {per_row:.1f} B (`INFO memory` used_memory after "
        f"minus before; a packed bar is 52 B): {'met' if per_row <= 64 else 'NOT met'}.",
        f"- `--workers 2` vs `--workers 1` (library call, best wall): "
        f"{serial / results[default_name][0]:.2f}x.",
        "",
        "Command: `.venv/bin/python -m bench.bench_load` (the load itself: "
        "`stocks load --source csv --path ../shared/data/sp500_daily --workers 2`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
