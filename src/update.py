"""``stocks load --update``: append only what is newer than each ticker's stored last day.

Every ticker starts from its stored tail (meta and the bar on ``last_date``; all tickers
in one pipelined read). The source's bars from ``last_date`` on are fetched and the
overlap is checked: the source's bar for ``last_date`` must equal the stored one byte for
byte. If it differs or is gone, history was rewritten (a split or dividend adjustment, a
correction) and the ticker is reloaded whole; the summary says why. Otherwise the newer
bars go through ``storage.append_bars``: one MULTI/EXEC under WATCH, so a reader sees the
old series or the longer one and a concurrent write is never lost (the ticker is looked
at again instead). A ticker the source no longer knows keeps its stored data and is
reported as failed; one not stored yet is loaded whole.

Nothing new must cost next to nothing (505 tickers well under 2 s): for CSV the parent
reads each file's last line (a tail read) and compares it with the stored last bar, so
only files that changed are parsed, in worker processes as a full load does.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stocks import storage
from stocks.config import Settings, redis_client
from stocks.keys import STOCKS_DB
from stocks.loader import (
    Outcome,
    Summary,
    csv_jobs,
    default_workers,
    run_tasks,
    store_series,
)
from stocks.sources.csv import CsvRejected, import_parser, last_bar, parse_csv
from stocks.storage import SeriesTail

APPEND_TRIES = 3  # a concurrent write makes an append start again from the new tail
MAX_PRINTED_UPDATED = 20
KEPT = "stored data kept"


@dataclass
class UpdateSummary(Summary):
    """Per run: updated (rows added), already up to date, reloaded (why), new, failed."""

    updated: dict[str, int] = field(default_factory=dict)
    up_to_date: list[str] = field(default_factory=list)
    reloaded: dict[str, tuple[int, str]] = field(default_factory=dict)
    new: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def rows_added(self) -> int:
        return sum(self.updated.values())

    def add(self, outcome: Outcome) -> None:
        self.warnings.extend(outcome.warnings)
        if outcome.error is not None:
            self.failures[outcome.symbol] = outcome.error
        elif outcome.status == "updated":
            self.updated[outcome.symbol] = outcome.rows
        elif outcome.status == "current":
            self.up_to_date.append(outcome.symbol)
        elif outcome.status == "reloaded":
            self.reloaded[outcome.symbol] = (outcome.rows, outcome.reason or "")
        else:
            self.new[outcome.symbol] = (outcome.rows, outcome.reason or "")

    def counts(self) -> dict[str, int]:
        return {
            "updated": len(self.updated),
            "rows_added": self.rows_added,
            "up_to_date": len(self.up_to_date),
            "reloaded": len(self.reloaded),
            "new": len(self.new),
            "failed": len(self.failures),
        }

    def details(self) -> dict:
        def explained(found: dict[str, tuple[int, str]]) -> list[dict]:
            return [
                {"symbol": s, "rows": n, "reason": why} for s, (n, why) in sorted(found.items())
            ]

        added = [{"symbol": s, "rows_added": n} for s, n in sorted(self.updated.items())]
        return {
            "mode": "update",
            "tickers": {
                "updated": added,
                "up_to_date": sorted(self.up_to_date),
                "reloaded": explained(self.reloaded),
                "new": explained(self.new),
            },
        }

    def headline(self) -> str:
        return (
            f"updated {len(self.updated)} tickers (+{self.rows_added} rows), "
            f"{len(self.up_to_date)} already up to date, {len(self.reloaded)} reloaded, "
            f"{len(self.new)} new, {len(self.failures)} failed, from {self.source} "
            f"in {self.seconds:.1f} s; {len(self.warnings)} warnings"
        )

    def detail_lines(self) -> list[str]:
        out = []
        if self.updated:
            shown = sorted(self.updated.items())[:MAX_PRINTED_UPDATED]
            more = len(self.updated) - len(shown)
            tail = f", ... and {more} more (see --json)" if more else ""
            out.append("updated " + ", ".join(f"{s} +{n}" for s, n in shown) + tail)
        out += [f"reloaded {s} ({n} rows): {why}" for s, (n, why) in sorted(self.reloaded.items())]
        out += [f"new {s} ({n} rows): {why}" for s, (n, why) in sorted(self.new.items())]
        return out + [f"failed {s}: {why}" for s, why in sorted(self.failures.items())]


# --- the decision, the same for every source -------------------------------------------


def overlap_problem(tail: SeriesTail, recent: np.ndarray) -> str | None:
    """Why the source's bars cannot simply extend the stored ones (None: they can)."""
    date = tail.meta["last_date"]
    pos = int(np.searchsorted(recent["date"], tail.last_day))
    if pos == len(recent) or recent["date"][pos] != tail.last_day:
        ends = storage.from_day(recent["date"][-1]).isoformat() if len(recent) else "nowhere"
        return f"the source has no bar for the stored last day {date} (its data ends {ends})"
    theirs, ours = recent[pos : pos + 1], tail.last_bar
    if theirs.tobytes() == ours.tobytes():
        return None
    changed = [
        f"{name} {ours[name][0] if len(ours) else '?'} -> {theirs[name][0]}"
        for name in storage.BAR_DTYPE.names
        if len(ours) == 0 or theirs[name].tobytes() != ours[name].tobytes()
    ]
    return (
        f"the source's bar for {date} differs from the stored one ({', '.join(changed)}): "
        "history was rewritten (split or dividend adjustment, or a correction)"
    )


def apply_update(
    url: str,
    symbol: str,
    tail: SeriesTail | None,
    recent: Callable[[SeriesTail], np.ndarray],
    whole: Callable[[SeriesTail | None], np.ndarray],
    source: str,
) -> Outcome:
    """Append, reload or load ``symbol``; ``recent(tail)`` are the source's bars from the
    stored last day on (earlier ones are ignored), ``whole(tail)`` its complete series."""
    client = redis_client(url, STOCKS_DB)
    for _ in range(APPEND_TRIES):
        if tail is None:
            rows = store_series(url, symbol, whole(None), source)
            return Outcome(symbol, rows, status="new", reason="not stored yet: loaded whole")
        bars = recent(tail)
        why = overlap_problem(tail, bars)
        if why is not None:
            rows = store_series(url, symbol, whole(tail), source)
            return Outcome(symbol, rows, status="reloaded", reason=why)
        newer = bars[int(np.searchsorted(bars["date"], tail.last_day, side="right")) :]
        if len(newer) == 0:
            return Outcome(symbol, status="current")
        if storage.append_bars(client, symbol, newer, tail.version) is not None:
            return Outcome(symbol, len(newer), status="updated")
        tail = storage.read_tails(client, [symbol]).get(symbol)  # someone else wrote: again
    return Outcome(symbol, error=f"{symbol}: kept changing during the update; {KEPT}, run again")


def _failed(symbol: str, tail: SeriesTail | None, reason: str) -> Outcome:
    return Outcome(symbol, error=f"{reason}; {KEPT}" if tail is not None else reason)


# --- CSV ---------------------------------------------------------------------------------


def csv_update_task(url: str, symbol: str, path: str, tail: SeriesTail | None) -> Outcome:
    try:
        parsed = parse_csv(path)
        outcome = apply_update(
            url, symbol, tail, lambda _t: parsed.bars, lambda _t: parsed.bars, "csv"
        )
    except CsvRejected as exc:
        return _failed(symbol, tail, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad ticker must not stop the others
        return _failed(symbol, tail, f"{Path(path).name}: {type(exc).__name__}: {exc}")
    if outcome.status in ("new", "reloaded"):
        outcome.warnings = parsed.warnings
    elif outcome.status == "updated":  # only the appended rows' warnings are news
        first_new = storage.from_day(parsed.bars["date"][-outcome.rows]).isoformat()
        outcome.warnings = [w for w in parsed.warnings if w.date >= first_new]
    return outcome


def update_csv(
    settings: Settings,
    directory: Path | str,
    tickers: list[str] | None = None,
    workers: int | None = None,
    kind: str = "process",
    progress: bool | None = None,
) -> UpdateSummary:
    """Parse only the files whose last line is not the stored last bar, then append.

    Without ``tickers``, stored tickers loaded from CSV that have no file here any more
    are reported (their data stays).
    """
    started = time.perf_counter()
    jobs, failures = csv_jobs(settings.redis_url, directory, tickers)
    client = settings.redis(STOCKS_DB)
    symbols = [job[1] for job in jobs]
    stored = set(storage.list_symbols(client))
    gone = sorted(stored - set(symbols)) if tickers is None else []
    tails = storage.read_tails(client, [*symbols, *gone])
    summary = UpdateSummary("csv")
    work = []
    for url, symbol, path in jobs:
        tail = tails.get(symbol)
        if tail is not None and _same_bar(last_bar(path), tail.last_bar):
            summary.up_to_date.append(symbol)
        else:
            work.append((url, symbol, path, tail))
    for symbol in failures.keys() & stored:  # --tickers named a stored one without a file
        failures[symbol] += f"; {KEPT}"
    for symbol in gone:
        if tails.get(symbol) and tails[symbol].meta.get("source") == "csv":
            failures[symbol] = f"{symbol}: no {symbol}.csv in {directory} any more; {KEPT}"
    if work:
        import_parser()
    run_tasks("csv", csv_update_task, work, workers or default_workers(), kind, progress, summary)
    summary.failures.update(failures)
    summary.seconds = time.perf_counter() - started
    return summary


def _same_bar(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and a.tobytes() == b.tobytes()


# --- Yahoo -------------------------------------------------------------------------------


def yahoo_update_task(
    url: str, symbol: str, tail: SeriesTail | None, session, policy, full_span
) -> Outcome:
    from stocks.sources import yahoo  # noqa: PLC0415 - yfinance is slow to import

    def recent(t: SeriesTail) -> np.ndarray:
        since = dt.date.fromisoformat(t.meta["last_date"])  # the overlap bar is asked too
        return yahoo.fetch(symbol, yahoo.HistorySpan(start=since), session, policy)

    def whole(t: SeriesTail | None) -> np.ndarray:
        span = full_span if t is None else yahoo.HistorySpan(start=t.first_date)
        return yahoo.fetch(symbol, span, session, policy)

    try:
        return apply_update(url, symbol, tail, recent, whole, "yahoo")
    except yahoo.YahooFailure as exc:
        return _failed(symbol, tail, str(exc))
    except Exception as exc:  # noqa: BLE001
        return _failed(symbol, tail, f"{symbol}: {type(exc).__name__}: {exc}")


def update_yahoo(
    settings: Settings,
    symbols: list[str],
    workers: int | None = None,
    session=None,
    policy=None,
    progress: bool | None = None,
) -> UpdateSummary:
    """Ask Yahoo for each ticker from its stored last day on; new tickers get five years."""
    from stocks.loader import yahoo_policy  # noqa: PLC0415
    from stocks.sources import yahoo  # noqa: PLC0415

    started = time.perf_counter()
    tails = storage.read_tails(settings.redis(STOCKS_DB), symbols)
    policy = policy or yahoo_policy(settings)
    full = yahoo.HistorySpan(period="5y")
    jobs = [(settings.redis_url, s, tails.get(s), session, policy, full) for s in symbols]
    summary = UpdateSummary("yahoo")
    workers = workers or settings.yahoo_max_requests
    run_tasks("yahoo", yahoo_update_task, jobs, workers, "thread", progress, summary)
    summary.seconds = time.perf_counter() - started
    return summary


# --- synthetic ---------------------------------------------------------------------------


def synthetic_update_task(
    url: str, symbol: str, tail: SeriesTail | None, seed: int, end: dt.date | None
) -> Outcome:
    from stocks.sources import synthetic  # noqa: PLC0415

    def whole(t: SeriesTail | None) -> np.ndarray:
        # The walk from the stored first day: extending it only adds rows (same seed).
        return synthetic.random_walk(symbol, seed, end=end, start=t.first_date if t else None)

    try:
        return apply_update(url, symbol, tail, whole, whole, "synthetic")
    except Exception as exc:  # noqa: BLE001
        return _failed(symbol, tail, f"{symbol}: {type(exc).__name__}: {exc}")


def update_synthetic(
    settings: Settings,
    symbols: list[str],
    seed: int = 0,
    end: dt.date | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> UpdateSummary:
    """Extend each stored walk to ``end`` (default: the synthetic source's fixed last day)."""
    started = time.perf_counter()
    tails = storage.read_tails(settings.redis(STOCKS_DB), symbols)
    jobs = [(settings.redis_url, s, tails.get(s), seed, end) for s in symbols]
    summary = UpdateSummary("synthetic")
    workers = workers or default_workers()
    run_tasks("synthetic", synthetic_update_task, jobs, workers, "thread", progress, summary)
    summary.seconds = time.perf_counter() - started
    return summary
