"""``stocks load``: fill Redis DB 0 from CSV files, Yahoo or synthetic random walks.

Each symbol is one task: get its bars (parse a file, ask Yahoo, draw a walk) and store
them with ``storage.replace_series``, which swaps the whole series atomically. A task
that fails stores nothing, so a ticker whose new data is refused keeps its old data.
Tasks run in parallel (``concurrent.futures``): CSV files in forked processes, so the
Python-level part of each parse runs in parallel too (threads, which pandas' tokenizer
lets overlap, come close: bench/bench_load.py measures both); Yahoo requests and random
walks in threads. Each worker writes its own series (measured faster than shipping bars
back for the parent to write), so the parent only collects small outcomes.
The end is a summary (loaded, rejected with reason, warnings) and an exit code:
0 all loaded, 1 some failed (named), 2 usage error. ``--update`` (``stocks.update``)
appends only what is newer than each stored ticker's last day, with the same exit codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import orjson
import redis
from tqdm import tqdm

from stocks import constituents, storage
from stocks.config import Settings, mask_url, redis_client, reset_clients
from stocks.keys import STOCKS_DB
from stocks.sources.csv import CsvRejected, RowWarning, import_parser, parse_csv

SOURCES = ("csv", "yahoo", "synthetic")
PERIOD_RE = re.compile(r"^(\d{1,3}(d|wk|mo|y)|ytd|max)$")
MAX_PRINTED_WARNINGS = 20
UPDATE_SPAN = ("--start", "--end", "--period")


class UsageError(Exception):
    """The command line asks for something impossible: exit code 2."""


@dataclass
class Outcome:
    """What happened to one symbol (small, so it crosses process boundaries cheaply)."""

    symbol: str
    rows: int = 0
    error: str | None = None
    warnings: list[RowWarning] = field(default_factory=list)
    status: str = "loaded"  # an update's: updated, current, reloaded, new (stocks.update)
    reason: str | None = None  # why a ticker was reloaded or loaded whole


@dataclass
class Summary:
    source: str
    loaded: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[RowWarning] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.loaded.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def add(self, outcome: Outcome) -> None:
        if outcome.error is None:
            self.loaded[outcome.symbol] = outcome.rows
        else:
            self.failures[outcome.symbol] = outcome.error
        self.warnings.extend(outcome.warnings)

    def counts(self) -> dict[str, int]:
        return {"loaded": len(self.loaded), "rows": self.rows, "rejected": len(self.failures)}

    def details(self) -> dict:
        """What a kind of run adds to the JSON summary after the counts."""
        return {}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            **self.counts(),
            "seconds": round(self.seconds, 3),
            **self.details(),
            "failures": self.failure_dicts(),
            "warnings": self.warning_dicts(),
        }

    def headline(self) -> str:
        return (
            f"loaded {len(self.loaded)} tickers ({self.rows} rows) from {self.source} "
            f"in {self.seconds:.1f} s; {len(self.failures)} rejected; "
            f"{len(self.warnings)} warnings"
        )

    def detail_lines(self) -> list[str]:
        return [f"rejected {sym}: {reason}" for sym, reason in sorted(self.failures.items())]

    def lines(self, max_warnings: int = MAX_PRINTED_WARNINGS) -> list[str]:
        return [self.headline(), *self.detail_lines(), *self.warning_lines(max_warnings)]

    def warning_lines(self, max_warnings: int = MAX_PRINTED_WARNINGS) -> list[str]:
        shown = sorted(self.warnings, key=lambda w: (w.file, w.date))[:max_warnings]
        out = [f"warning {w}" for w in shown]
        if len(self.warnings) > len(shown):
            out.append(f"... and {len(self.warnings) - len(shown)} more warnings (see --json)")
        return out

    def failure_dicts(self) -> list[dict]:
        return [{"symbol": s, "reason": r} for s, r in sorted(self.failures.items())]

    def warning_dicts(self) -> list[dict]:
        return [
            {"file": w.file, "date": w.date, "kind": w.kind, "detail": w.detail}
            for w in self.warnings
        ]


# --- the tasks (module level so a process pool can run them) ---------------------------


def _meta(symbol: str, source: str) -> dict:
    name, sector = constituents.describe(symbol)
    return {"name": name, "sector": sector, "source": source}


def store_series(url: str, symbol: str, bars, source: str) -> int:
    storage.replace_series(redis_client(url, STOCKS_DB), symbol, bars, _meta(symbol, source))
    return len(bars)


def csv_task(url: str, symbol: str, path: str) -> Outcome:
    try:
        parsed = parse_csv(path)
        rows = store_series(url, symbol, parsed.bars, "csv")
        return Outcome(symbol, rows, warnings=parsed.warnings)
    except CsvRejected as exc:
        return Outcome(symbol, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad ticker must not stop the others
        return Outcome(symbol, error=f"{Path(path).name}: {type(exc).__name__}: {exc}")


def yahoo_task(url: str, symbol: str, span, session, policy) -> Outcome:
    from stocks.sources import yahoo  # noqa: PLC0415 - yfinance is slow to import

    try:
        bars = yahoo.fetch(symbol, span, session=session, policy=policy)
        return Outcome(symbol, store_series(url, symbol, bars, "yahoo"))
    except yahoo.YahooFailure as exc:
        return Outcome(symbol, error=str(exc))
    except Exception as exc:  # noqa: BLE001
        return Outcome(symbol, error=f"{symbol}: {type(exc).__name__}: {exc}")


def synthetic_task(
    url: str, symbol: str, seed: int, start: dt.date | None, end: dt.date | None
) -> Outcome:
    from stocks.sources import synthetic  # noqa: PLC0415

    try:
        bars = synthetic.random_walk(symbol, seed, end=end, start=start)
        return Outcome(symbol, store_series(url, symbol, bars, "synthetic"))
    except Exception as exc:  # noqa: BLE001
        return Outcome(symbol, error=f"{symbol}: {type(exc).__name__}: {exc}")


# --- running them ----------------------------------------------------------------------


def _worker_init() -> None:
    reset_clients()  # a forked child must not share the parent's sockets


def _executor(kind: str, workers: int) -> Executor:
    if kind == "process":
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
    return ThreadPoolExecutor(workers, thread_name_prefix="load")


def run_tasks(
    source: str,
    task: Callable[..., Outcome],
    jobs: Iterable[tuple],
    workers: int,
    kind: str = "thread",
    progress: bool | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Run ``task(*job)`` for every job, ``workers`` at a time, and sum up the outcomes."""
    jobs = list(jobs)
    summary = summary or Summary(source)
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(jobs), unit="ticker", disable=not show, file=sys.stderr) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                summary.add(task(*job))
                bar.update()
        else:
            with _executor(kind, min(workers, len(jobs))) as pool:
                futures = [pool.submit(task, *job) for job in jobs]
                for future in as_completed(futures):
                    summary.add(future.result())
                    bar.update()
    summary.seconds = time.perf_counter() - started
    return summary


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def csv_jobs(
    url: str, directory: Path | str, tickers: list[str] | None
) -> tuple[list[tuple], dict[str, str]]:
    """(jobs, failures): one job per file to load; a ticker without a file is a failure."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--path {directory}: not a directory")
    jobs, failures = _csv_files(url, directory, tickers)
    if not jobs and not failures:
        raise UsageError(f"--path {directory}: no .csv files in it")
    return jobs, failures


def _csv_files(
    url: str, directory: Path, tickers: list[str] | None
) -> tuple[list[tuple], dict[str, str]]:
    jobs: list[tuple] = []
    failures: dict[str, str] = {}
    if tickers is None:
        owner: dict[str, str] = {}
        for path in sorted(p for p in directory.iterdir() if p.suffix.lower() == ".csv"):
            symbol = storage.canonical_symbol(path.stem)
            if symbol is None:
                failures[path.name] = f"{path.name}: file name is not a ticker symbol"
            elif symbol in owner:
                failures[path.name] = f"{path.name}: same symbol as {owner[symbol]}; not loaded"
            else:
                owner[symbol] = path.name
                jobs.append((url, symbol, str(path)))
        return jobs, failures
    for raw in dict.fromkeys(tickers):
        names = dict.fromkeys([raw, *storage.symbol_candidates(raw)])
        path = next(
            (directory / f"{n}.csv" for n in names if (directory / f"{n}.csv").is_file()), None
        )
        symbol = storage.canonical_symbol(raw)
        if path is None:
            failures[symbol] = f"{raw}: no file {raw}.csv in {directory}"
        else:
            jobs.append((url, symbol, str(path)))
    return jobs, failures


def load_csv(
    settings: Settings,
    directory: Path | str,
    tickers: list[str] | None = None,
    workers: int | None = None,
    kind: str = "process",
    progress: bool | None = None,
) -> Summary:
    jobs, failures = csv_jobs(settings.redis_url, directory, tickers)
    import_parser()
    summary = run_tasks("csv", csv_task, jobs, workers or default_workers(), kind, progress)
    summary.failures.update(failures)
    return summary


def yahoo_policy(settings: Settings):
    """One load's retry policy; its request slots are shared by all the load's threads."""
    from stocks.sources import yahoo  # noqa: PLC0415

    return yahoo.RetryPolicy(
        settings.yahoo_retries,
        settings.yahoo_retry_wait,
        slots=threading.BoundedSemaphore(settings.yahoo_max_requests),
    )


def load_yahoo(
    settings: Settings,
    symbols: list[str],
    span=None,
    workers: int | None = None,
    session=None,
    policy=None,
    progress: bool | None = None,
) -> Summary:
    """Fetch and store each symbol from Yahoo; ``session`` goes to yfinance (tests replay)."""
    from stocks.sources import yahoo  # noqa: PLC0415

    span = span or yahoo.HistorySpan(period="5y")
    policy = policy or yahoo_policy(settings)
    workers = workers or settings.yahoo_max_requests
    jobs = [(settings.redis_url, sym, span, session, policy) for sym in symbols]
    return run_tasks("yahoo", yahoo_task, jobs, workers, "thread", progress)


def load_synthetic(
    settings: Settings,
    symbols: list[str],
    seed: int = 0,
    start: dt.date | None = None,
    end: dt.date | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> Summary:
    jobs = [(settings.redis_url, sym, seed, start, end) for sym in symbols]
    return run_tasks(
        "synthetic", synthetic_task, jobs, workers or default_workers(), "thread", progress
    )


# --- command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, required=True, help="where prices come from")
    parser.add_argument("--path", help="csv: directory of <SYMBOL>.csv files")
    parser.add_argument("--tickers", help="comma-separated symbols (default: all available)")
    parser.add_argument(
        "--sp500", action="store_true", help="yahoo, synthetic: the S&P 500 list plus ^GSPC"
    )
    parser.add_argument("--start", help="first day, YYYY-MM-DD (with --end)")
    parser.add_argument("--end", help="last day, YYYY-MM-DD, inclusive")
    parser.add_argument("--period", help="yahoo: a period such as 5y, 6mo, max (default 5y)")
    parser.add_argument("--count", type=int, help="synthetic: how many symbols")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed (default 0)")
    parser.add_argument("--workers", type=int, help="parallel tasks (default: cores; yahoo: 4)")
    parser.add_argument(
        "--update",
        action="store_true",
        help="only fetch and append what is newer than each ticker's stored last day",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _date(flag: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not a date (YYYY-MM-DD)") from None


def _tickers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    out = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        if storage.normalize_symbol(raw) is None:
            raise UsageError(f"--tickers: {raw!r} is not a ticker symbol")
        out.append(raw)
    if not out:
        raise UsageError("--tickers: no symbols given")
    return out


def _canonical_symbols(tickers: list[str]) -> list[str]:
    """Stored forms of the checked --tickers, first spelling first, each once."""
    return list(dict.fromkeys(storage.canonical_symbol(t) for t in tickers))


def _refuse(args: argparse.Namespace, source: str, flags: Iterable[str]) -> None:
    for flag in flags:
        value = getattr(args, flag.strip("-").replace("-", "_"))
        if value not in (None, False):
            raise UsageError(f"{flag} does not apply to --source {source}")


def _start_end(args: argparse.Namespace):
    start, end = _date("--start", args.start), _date("--end", args.end)
    if (start is None) != (end is None):
        raise UsageError("--start and --end go together")
    if start and end and start > end:
        raise UsageError(f"--start {start} is after --end {end}")
    return start, end


def plan(args: argparse.Namespace, settings: Settings, session=None) -> Callable[[], Summary]:
    """Check the arguments (UsageError, before anything runs) and return the load to run."""
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    tickers = _tickers(args.tickers)
    updating = getattr(args, "update", False)
    if updating:
        from stocks import update  # noqa: PLC0415 - it imports this module
    if args.source == "csv":
        _refuse(args, "csv", ("--sp500", "--start", "--end", "--period", "--count"))
        if not args.path:
            raise UsageError("--source csv needs --path DIR")
        if not Path(args.path).is_dir():
            raise UsageError(f"--path {args.path}: not a directory")
        if updating:
            return partial(update.update_csv, settings, args.path, tickers, args.workers)
        return partial(load_csv, settings, args.path, tickers, args.workers)
    if args.source == "yahoo":
        from stocks.sources import yahoo  # noqa: PLC0415

        _refuse(args, "yahoo", ("--path", "--count"))
        if (tickers is None) == (not args.sp500):
            raise UsageError("--source yahoo needs --tickers A,B,... or --sp500 (one of them)")
        if tickers is None:
            symbols = [*constituents.sp500_symbols(), constituents.INDEX_SYMBOL]
        else:
            symbols = _canonical_symbols(tickers)
        if updating:
            _refuse(args, "yahoo --update (it asks from each last day to today)", UPDATE_SPAN)
            return partial(update.update_yahoo, settings, symbols, args.workers, session)
        start, end = _start_end(args)
        if args.period and start:
            raise UsageError("--period and --start/--end exclude each other")
        if args.period and not PERIOD_RE.match(args.period):
            raise UsageError(f"--period {args.period!r}: use e.g. 5y, 6mo, 30d, ytd or max")
        span = (
            yahoo.HistorySpan(start, end)
            if start
            else yahoo.HistorySpan(period=args.period or "5y")
        )
        return partial(load_yahoo, settings, symbols, span, args.workers, session)
    from stocks.sources import synthetic  # noqa: PLC0415

    _refuse(args, "synthetic", ("--path", "--period"))
    if updating:
        _refuse(args, "synthetic --update (it extends each walk to --end)", ("--start",))
        end, start = _date("--end", args.end), None
    else:
        start, end = _start_end(args)
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if tickers is not None and (args.count is not None or args.sp500):
        raise UsageError("--tickers excludes --count and --sp500")
    if tickers is not None:
        symbols = _canonical_symbols(tickers)
    else:
        symbols = synthetic.symbols(None if args.sp500 else args.count)
    if updating:
        return partial(update.update_synthetic, settings, symbols, args.seed, end, args.workers)
    return partial(load_synthetic, settings, symbols, args.seed, start, end, args.workers)


def run(args: argparse.Namespace, settings: Settings, session=None) -> int:
    """The ``stocks load`` command: exit 0 all loaded, 1 some failed, 2 usage error.

    With ``--update`` the same codes: 0 every ticker updated, current, reloaded or new.
    """
    try:
        load = plan(args, settings, session=session)
    except UsageError as exc:
        print(f"stocks load: error: {exc}", file=sys.stderr)
        return 2
    try:
        # Short timeouts for this first word only: a Redis that hangs fails the load in
        # seconds. The tasks keep the patient client (config.redis_client): once Redis
        # answered, a big write that waits out a blip beats a half-done load.
        settings.redis(STOCKS_DB, timeout=settings.redis_timeout).ping()
    except (redis.RedisError, OSError) as exc:
        where = mask_url(settings.redis_url)
        print(f"stocks load: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1
    try:
        summary = load()
    except UsageError as exc:
        print(f"stocks load: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(
            orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        print("\n".join(summary.lines()))
    return summary.exit_code
