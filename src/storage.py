"""Price storage in Redis DB 0: the binary bar format lives here only.

Key layout (DB 0): ``stocks.keys`` (symbols set, meta and bars hashes, write locks).

Bar record: 52 bytes, little-endian, ``BAR_DTYPE``
    date int32 (days since 1970-01-01), open, high, low, close, adj_close float64
    (NaN = missing cell), volume int64 (-1 = missing cell).

Why this shape: a 5-year series is ~6 hash fields, so it comes back in one round trip
with no per-row keys, costs ~52 B per row (the raw numbers plus a few bytes per year),
and a range read fetches only the years it touches. ``np.frombuffer`` turns the bytes
into columns without a parse. Year chunks, meta and the symbol set change together in
MULTI/EXEC, so a reader sees the old series or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import redis

from stocks.keys import META_PREFIX, SYMBOLS_KEY, bars_key, lock_key, meta_key

BAR_DTYPE = np.dtype(
    [
        ("date", "<i4"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("adj_close", "<f8"),
        ("volume", "<i8"),
    ]
)
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
MISSING_VOLUME = -1
# Bounds on what a write may store: a volume below VOLUME_MAX keeps any sum of a year's
# bars far inside int64; prices below PRICE_MAX keep products and sums finite.
VOLUME_MAX = 10**15
PRICE_MAX = 1e9
FIRST_TRADING_DAY = dt.date(1900, 1, 1)
EPOCH = dt.date(1970, 1, 1)

SYMBOL_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-]{0,14}$")
META_INT_FIELDS = ("rows",)
WRITE_RETRIES = 50
WRITE_LOCK_TTL = 10.0  # seconds a crashed writer can hold a symbol's lock
WRITE_LOCK_WAIT = 10.0  # seconds a writer waits for it before giving up


class SeriesMissing(Exception):
    """A symbol's metadata says it has bars, but they are gone from Redis (lost or evicted).

    Never answered as an empty series: the data is damaged and must be loaded again.
    """

    def __init__(self, symbol: str):
        super().__init__(f"the stored bars of {symbol} are missing; load it again")
        self.symbol = symbol


def missing_series(r: redis.Redis) -> list[str]:
    """Listed symbols whose metadata or bars are gone (one pipelined round trip)."""
    symbols = list_symbols(r)
    pipe = r.pipeline(transaction=False)
    for sym in symbols:
        pipe.exists(meta_key(sym))
        pipe.exists(bars_key(sym))
    found = pipe.execute()
    return [s for i, s in enumerate(symbols) if not (found[2 * i] and found[2 * i + 1])]


class WriteContention(Exception):
    """A single-bar write could not get its turn on a symbol in time (retry later)."""


# --- dates -----------------------------------------------------------------------------


def to_day(day: dt.date) -> int:
    return (day - EPOCH).days


def from_day(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


# ISO strings of every day from 1900 to 2099, built on first use (~30 ms, a few MB): one
# fancy-index turns a date column into strings without a per-row call.
_ISO_FIRST = -25567  # 1900-01-01
_ISO_DAYS = 73049  # through 2099-12-31
_iso_table: list[np.ndarray] = []


def days_to_iso(days: np.ndarray) -> list[str]:
    """ISO strings for day numbers (days since 1970-01-01)."""
    if not _iso_table:
        span = np.arange(_ISO_FIRST, _ISO_FIRST + _ISO_DAYS).astype("datetime64[D]")
        _iso_table.append(np.datetime_as_string(span).astype(object))
    idx = np.asarray(days).astype(np.int64) - _ISO_FIRST
    if len(idx) and (idx.min() < 0 or idx.max() >= _ISO_DAYS):
        return np.datetime_as_string(np.asarray(days).astype("datetime64[D]")).tolist()
    return _iso_table[0][idx].tolist()


# --- symbols ---------------------------------------------------------------------------


def normalize_symbol(raw: str) -> str | None:
    """Upper-case form of a well-formed symbol, or None when it cannot be one."""
    sym = raw.strip().upper()
    return sym if SYMBOL_RE.match(sym) else None


def canonical_symbol(raw: str) -> str | None:
    """The form a loader stores a symbol under: upper case, share class with a dot.

    Yahoo and some file names spell BRK.B as BRK-B; storing one spelling lets every
    reader find it. None when ``raw`` cannot be a symbol.
    """
    sym = normalize_symbol(raw)
    return sym.replace("-", ".") if sym else None


def symbol_candidates(raw: str) -> list[str]:
    """Stored forms to try: as given, then Yahoo's dash form read as a share class dot."""
    sym = normalize_symbol(raw)
    if sym is None:
        return []
    out = [sym]
    if "-" in sym:
        out.append(sym.replace("-", "."))
    return out


def resolve_symbols(
    r: redis.Redis, raws: Iterable[str]
) -> tuple[list[str | None], dict[str, str | None]]:
    """The stored symbol for each user-typed one (None: no data), in one round trip.

    Case-insensitive, and BRK-B finds BRK.B. Also returns the data version of every
    stored form tried (None: absent): everything an answer built from these symbols
    depends on, so a cache that rechecks them all also sees a spelling appear.
    """
    candidates = [symbol_candidates(raw) for raw in raws]
    tried = [sym for forms in candidates for sym in forms]
    found = versions(r, tried) if tried else {}
    stored = [next((s for s in forms if found[s] is not None), None) for forms in candidates]
    return stored, found


def resolve_symbol(r: redis.Redis, raw: str) -> str | None:
    """The stored symbol for one user-typed symbol, or None when it has no data."""
    return resolve_symbols(r, [raw])[0][0]


def list_symbols(r: redis.Redis) -> list[str]:
    return sorted(s.decode() for s in r.smembers(SYMBOLS_KEY))


def count_symbols(r: redis.Redis) -> int:
    return int(r.scard(SYMBOLS_KEY))


# --- metadata --------------------------------------------------------------------------


def _decode_meta(raw: dict) -> dict:
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    for field in META_INT_FIELDS:
        if field in meta:
            meta[field] = int(meta[field])
    for field in ("name", "sector"):
        if meta.get(field) == "":
            meta[field] = None
    return meta


def get_meta(r: redis.Redis, symbol: str) -> dict | None:
    raw = r.hgetall(meta_key(symbol))
    return _decode_meta(raw) if raw else None


def get_metas(r: redis.Redis, symbols: Iterable[str]) -> dict[str, dict]:
    """Metadata for many symbols in one round trip; symbols without data are left out."""
    symbols = list(symbols)
    pipe = r.pipeline(transaction=False)
    for sym in symbols:
        pipe.hgetall(meta_key(sym))
    return {sym: _decode_meta(raw) for sym, raw in zip(symbols, pipe.execute(), strict=True) if raw}


def versions(r: redis.Redis, symbols: Iterable[str]) -> dict[str, str | None]:
    """Data version of each symbol: it changes whenever the symbol's bars change."""
    symbols = list(symbols)
    if len(symbols) == 1:  # the common case, on the API's hot path: skip the pipeline
        found = [r.hget(meta_key(symbols[0]), "version")]
    else:
        pipe = r.pipeline(transaction=False)
        for sym in symbols:
            pipe.hget(meta_key(sym), "version")
        found = pipe.execute()
    return {
        sym: (v.decode() if v is not None else None) for sym, v in zip(symbols, found, strict=True)
    }


# --- reading bars ----------------------------------------------------------------------

# Meta and the year chunks overlapping [lo, hi] in one atomic round trip. Years are
# four-digit strings, so string comparison orders them.
_READ_LUA = """
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return false end
local years = redis.call('HKEYS', KEYS[2])
table.sort(years)
local wanted = {}
for _, y in ipairs(years) do
  if (ARGV[1] == '' or y >= ARGV[1]) and (ARGV[2] == '' or y <= ARGV[2]) then
    wanted[#wanted + 1] = y
  end
end
local out = {meta, #years}
if #wanted > 0 then
  local chunks = redis.call('HMGET', KEYS[2], unpack(wanted))
  for i = 1, #chunks do out[#out + 1] = chunks[i] end
end
return out
"""

_scripts: dict[int, object] = {}


def _read_script(r: redis.Redis):
    key = id(r)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = r.register_script(_READ_LUA)
    return script


def empty_bars() -> np.ndarray:
    return np.empty(0, dtype=BAR_DTYPE)


def decode_chunks(chunks: Iterable[bytes]) -> np.ndarray:
    data = b"".join(c for c in chunks if c)
    return np.frombuffer(data, dtype=BAR_DTYPE) if data else empty_bars()


def date_slice(days: np.ndarray, start: dt.date | None, end: dt.date | None) -> slice:
    """Where start <= day <= end in sorted day numbers (both inclusive; None: unbounded).

    A slice rather than the rows, so columns computed alongside the bars (an indicator,
    an index level) are cut at the same places. ``stop`` is never below ``start``.
    """
    lo = 0 if start is None else int(np.searchsorted(days, to_day(start), side="left"))
    hi = len(days) if end is None else int(np.searchsorted(days, to_day(end), side="right"))
    return slice(lo, max(lo, hi))


def cut(bars: np.ndarray, start: dt.date | None, end: dt.date | None) -> np.ndarray:
    """Bars with start <= date <= end (both inclusive); bars must be sorted by date."""
    return bars[date_slice(bars["date"], start, end)]


def _year_bounds(start: dt.date | None, end: dt.date | None) -> list[str]:
    return [f"{start.year:04d}" if start else "", f"{end.year:04d}" if end else ""]


def _decode_reply(
    symbol: str, reply: list | None, start: dt.date | None, end: dt.date | None
) -> tuple[dict, np.ndarray] | None:
    if not reply:
        return None
    flat = reply[0]
    meta = _decode_meta(dict(zip(flat[::2], flat[1::2], strict=True)))
    if reply[1] == 0 and meta.get("rows"):
        raise SeriesMissing(symbol)
    bars = decode_chunks(reply[2:])
    if start is not None or end is not None:
        bars = cut(bars, start, end)
    return meta, bars


def read_series(
    r: redis.Redis, symbol: str, start: dt.date | None = None, end: dt.date | None = None
) -> tuple[dict, np.ndarray] | None:
    """(meta, bars in [start, end]) for a stored symbol, None when it has no data.

    The returned array is read-only (it views the Redis reply); copy before changing it.
    """
    keys = [meta_key(symbol), bars_key(symbol)]
    reply = _read_script(r)(keys=keys, args=_year_bounds(start, end))
    return _decode_reply(symbol, reply, start, end)


def read_many(
    r: redis.Redis,
    symbols: Iterable[str],
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> dict[str, tuple[dict, np.ndarray]]:
    """``read_series`` for many symbols in one pipelined round trip; absent ones left out.

    Each symbol is read atomically; the set of them is not one snapshot.
    """
    symbols = list(symbols)
    script = _read_script(r)
    pipe = r.pipeline(transaction=False)
    bounds = _year_bounds(start, end)
    for sym in symbols:
        script(keys=[meta_key(sym), bars_key(sym)], args=bounds, client=pipe)
    out = {}
    for sym, reply in zip(symbols, pipe.execute(), strict=True):
        series = _decode_reply(sym, reply, start, end)
        if series is not None:
            out[sym] = series
    return out


def read_bars(
    r: redis.Redis, symbol: str, start: dt.date | None = None, end: dt.date | None = None
) -> np.ndarray | None:
    series = read_series(r, symbol, start, end)
    return None if series is None else series[1]


# --- writing ---------------------------------------------------------------------------


def new_version() -> str:
    return uuid.uuid4().hex


def _chunks_by_year(bars: np.ndarray) -> dict[str, bytes]:
    """Split sorted bars into {year: packed bytes}."""
    if len(bars) == 0:
        return {}
    years = bars["date"].astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    bounds = np.flatnonzero(np.diff(years)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(bars)]))
    return {f"{years[s]:04d}": bars[s:e].tobytes() for s, e in zip(starts, ends, strict=True)}


def _series_meta(bars: np.ndarray, meta: dict) -> dict[str, str]:
    out = {k: ("" if v is None else str(v)) for k, v in meta.items()}
    out["rows"] = str(len(bars))
    out["first_date"] = from_day(bars["date"][0]).isoformat()
    out["last_date"] = from_day(bars["date"][-1]).isoformat()
    out["version"] = new_version()
    out.setdefault("loaded_at", utc_now_iso())
    return out


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_bars(bars: np.ndarray) -> None:
    """Refuse anything that would break the format's invariants (sorted, unique dates)."""
    if bars.dtype != BAR_DTYPE:
        raise ValueError(f"bars must have dtype BAR_DTYPE, not {bars.dtype}")
    if len(bars) == 0:
        raise ValueError("a series needs at least one bar")
    if np.any(np.diff(bars["date"]) <= 0):
        raise ValueError("bar dates must be strictly increasing")


def replace_series(r: redis.Redis, symbol: str, bars: np.ndarray, meta: dict) -> dict:
    """Store a whole series in place of any old one, atomically.

    ``meta`` carries name, sector, source (and optionally loaded_at); rows, dates and
    version are derived from the bars. Returns the stored metadata.
    """
    check_bars(bars)
    stored = _series_meta(bars, meta)
    pipe = r.pipeline(transaction=True)
    pipe.delete(bars_key(symbol), meta_key(symbol))
    pipe.hset(bars_key(symbol), mapping=_chunks_by_year(bars))
    pipe.hset(meta_key(symbol), mapping=stored)
    pipe.sadd(SYMBOLS_KEY, symbol)
    pipe.execute()
    return _decode_meta({k.encode(): v.encode() for k, v in stored.items()})


# --- incremental updates ---------------------------------------------------------------

# Meta and the last stored bar (the tail of the last year's chunk) of one symbol, so an
# update can check its overlap without reading the whole series.
_TAIL_LUA = """
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return false end
local last = ''
for i = 1, #meta, 2 do
  if meta[i] == 'last_date' then last = meta[i + 1] end
end
local chunk = redis.call('HGET', KEYS[2], string.sub(last, 1, 4))
local size = tonumber(ARGV[1])
if not chunk or #chunk < size then return {meta, ''} end
return {meta, string.sub(chunk, -size)}
"""

_tail_scripts: dict[int, object] = {}


@dataclass(frozen=True)
class SeriesTail:
    """What an update starts from: the stored meta and the stored bar on ``last_date``."""

    meta: dict
    last_bar: np.ndarray  # one BAR_DTYPE record (empty when the chunk is damaged)

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def last_day(self) -> int:
        return to_day(dt.date.fromisoformat(self.meta["last_date"]))

    @property
    def first_date(self) -> dt.date:
        return dt.date.fromisoformat(self.meta["first_date"])


def read_tails(r: redis.Redis, symbols: Iterable[str]) -> dict[str, SeriesTail]:
    """``SeriesTail`` of many symbols in one pipelined round trip; absent ones left out.

    An update of 505 tickers with nothing new needs only this and no series read.
    """
    symbols = list(symbols)
    script = _tail_scripts.get(id(r))
    if script is None:
        script = _tail_scripts[id(r)] = r.register_script(_TAIL_LUA)
    pipe = r.pipeline(transaction=False)
    for sym in symbols:
        script(keys=[meta_key(sym), bars_key(sym)], args=[BAR_DTYPE.itemsize], client=pipe)
    out = {}
    for sym, reply in zip(symbols, pipe.execute(), strict=True):
        if reply:
            flat, last = reply
            meta = _decode_meta(dict(zip(flat[::2], flat[1::2], strict=True)))
            out[sym] = SeriesTail(meta, decode_chunks([last]))
    return out


def append_bars(r: redis.Redis, symbol: str, bars: np.ndarray, version: str) -> dict | None:
    """Append bars after the stored ones, atomically, if the series is still at ``version``.

    Only the year chunks the new bars fall in are written (the last stored year is
    extended, later years created); meta gets the new ``last_date``, ``rows``,
    ``loaded_at`` and a new ``version``. WATCH on meta and bars makes a concurrent load,
    update or single-bar write win: then nothing is written and the answer is None (the
    caller starts again from what is stored now). Returns the stored metadata.
    """
    check_bars(bars)
    mkey, bkey = meta_key(symbol), bars_key(symbol)
    chunks = _chunks_by_year(bars)
    with r.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(mkey, bkey)
            raw = pipe.hgetall(mkey)
            if not raw or raw.get(b"version", b"").decode() != version:
                return None
            meta = _decode_meta(raw)
            if to_day(dt.date.fromisoformat(meta["last_date"])) >= int(bars["date"][0]):
                raise ValueError(f"{symbol}: appended bars must start after {meta['last_date']}")
            first_year = next(iter(chunks))
            chunks[first_year] = (pipe.hget(bkey, first_year) or b"") + chunks[first_year]
            stored = {
                "rows": str(meta["rows"] + len(bars)),
                "last_date": from_day(bars["date"][-1]).isoformat(),
                "version": new_version(),
                "loaded_at": utc_now_iso(),
            }
            pipe.multi()
            pipe.hset(bkey, mapping=chunks)
            pipe.hset(mkey, mapping=stored)
            pipe.sadd(SYMBOLS_KEY, symbol)
            pipe.execute()
        except redis.WatchError:
            return None
    meta.update(stored, rows=int(stored["rows"]))
    return meta


def delete_series(r: redis.Redis, symbol: str) -> bool:
    pipe = r.pipeline(transaction=True)
    pipe.delete(bars_key(symbol), meta_key(symbol))
    pipe.srem(SYMBOLS_KEY, symbol)
    return bool(pipe.execute()[0])


def _rewrite_year(r: redis.Redis, symbol: str, day: int, change) -> tuple[dict, bool] | None:
    """Apply ``change(year_bars) -> (new_year_bars, changed)`` under WATCH, retrying on races.

    Only the touched year is rewritten; meta is recomputed from the full series so it
    stays true. Returns (meta, changed), or None when the symbol has no data.

    Writers of one symbol take turns on a lock, so they do not starve each other's
    optimistic transactions; WATCH still guards against a loader replacing the series.
    """
    year = f"{from_day(day).year:04d}"
    mkey, bkey = meta_key(symbol), bars_key(symbol)
    lock = r.lock(
        lock_key(symbol), timeout=WRITE_LOCK_TTL, sleep=0.002, blocking_timeout=WRITE_LOCK_WAIT
    )
    if not lock.acquire():
        raise WriteContention(f"{symbol} is busy with other writes; retry")
    try:
        return _rewrite_year_locked(r, symbol, year, mkey, bkey, change)
    finally:
        # An expired lock is fine: the write itself was still guarded by WATCH.
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _rewrite_year_locked(
    r: redis.Redis, symbol: str, year: str, mkey: str, bkey: str, change
) -> tuple[dict, bool] | None:
    for _ in range(WRITE_RETRIES):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(mkey, bkey)
                raw_meta = pipe.hgetall(mkey)
                if not raw_meta:
                    return None
                chunks = pipe.hgetall(bkey)
                old_year = decode_chunks([chunks.get(year.encode(), b"")])
                new_year, changed = change(old_year)
                if not changed:
                    pipe.unwatch()
                    return _decode_meta(raw_meta), False
                if len(new_year):
                    chunks[year.encode()] = new_year.tobytes()
                else:
                    chunks.pop(year.encode(), None)
                meta = _decode_meta(raw_meta)
                pipe.multi()
                if chunks:
                    everything = decode_chunks(chunks[k] for k in sorted(chunks))
                    stored = _series_meta(everything, meta)
                    if len(new_year):
                        pipe.hset(bkey, year, new_year.tobytes())
                    else:
                        pipe.hdel(bkey, year)
                    pipe.hset(mkey, mapping=stored)
                else:
                    # The last bar went away: the symbol goes with it.
                    stored = None
                    pipe.delete(bkey, mkey)
                    pipe.srem(SYMBOLS_KEY, symbol)
                pipe.execute()
                if stored is None:
                    return {}, True
                return _decode_meta({k.encode(): v.encode() for k, v in stored.items()}), True
            except redis.WatchError:
                continue
    raise WriteContention(f"too much write contention on {symbol}")


def upsert_bar(r: redis.Redis, symbol: str, bar: np.void | np.ndarray) -> tuple[dict, bool] | None:
    """Insert or replace the bar for its date. Returns (meta, created) or None if unknown."""
    bar = np.asarray(bar, dtype=BAR_DTYPE).reshape(1)
    day = int(bar["date"][0])
    created = {"value": False}

    def change(year_bars: np.ndarray) -> tuple[np.ndarray, bool]:
        pos = int(np.searchsorted(year_bars["date"], day))
        exists = pos < len(year_bars) and year_bars["date"][pos] == day
        created["value"] = not exists
        if exists:
            out = year_bars.copy()
            out[pos] = bar[0]
            return out, True
        return np.concatenate((year_bars[:pos], bar, year_bars[pos:])), True

    result = _rewrite_year(r, symbol, day, change)
    if result is None:
        return None
    return result[0], created["value"]


def delete_bar(r: redis.Redis, symbol: str, day: dt.date) -> tuple[dict, bool] | None:
    """Remove the bar on ``day``. Returns (meta, deleted) or None if the symbol is unknown."""
    d = to_day(day)

    def change(year_bars: np.ndarray) -> tuple[np.ndarray, bool]:
        keep = year_bars["date"] != d
        if keep.all():
            return year_bars, False
        return year_bars[keep], True

    return _rewrite_year(r, symbol, d, change)


def make_bars(
    dates: Iterable[dt.date] | np.ndarray,
    open_: Iterable[float],
    high: Iterable[float],
    low: Iterable[float],
    close: Iterable[float],
    volume: Iterable[int | None],
    adj_close: Iterable[float] | None = None,
) -> np.ndarray:
    """Build a BAR_DTYPE array from columns; None/NaN become the missing markers."""
    dates = np.asarray(dates)
    if dates.dtype.kind == "M":
        days = dates.astype("datetime64[D]").astype(np.int64)
    elif dates.dtype.kind in "iu":
        days = dates.astype(np.int64)
    else:
        days = np.array([to_day(d) for d in dates], dtype=np.int64)
    out = np.empty(len(days), dtype=BAR_DTYPE)
    out["date"] = days
    for name, col in (("open", open_), ("high", high), ("low", low), ("close", close)):
        out[name] = np.asarray(col, dtype=np.float64)
    out["adj_close"] = np.nan if adj_close is None else np.asarray(adj_close, dtype=np.float64)
    vol = np.asarray(volume, dtype=np.float64)
    out["volume"] = np.where(np.isnan(vol), MISSING_VOLUME, np.nan_to_num(vol)).astype(np.int64)
    return out


def volumes_as_float(bars: np.ndarray) -> np.ndarray:
    """Volume column with missing cells as NaN, for arithmetic."""
    vol = bars["volume"].astype(np.float64)
    vol[bars["volume"] == MISSING_VOLUME] = np.nan
    return vol


DEFAULT_COLUMNS = ("open", "high", "low", "close", "volume")


def columns_for(bars: np.ndarray, fields: Iterable[str] | None = None) -> tuple[str, ...]:
    """Requested columns, or the default set plus adj_close when the series has one."""
    if fields is not None:
        return tuple(fields)
    if len(bars) and not np.isnan(bars["adj_close"]).all():
        return (*DEFAULT_COLUMNS, "adj_close")
    return DEFAULT_COLUMNS


def _json_column(bars: np.ndarray, name: str) -> list:
    col = bars[name]
    values = col.tolist()
    if name == "volume":
        if (col == MISSING_VOLUME).any():
            values = [None if v == MISSING_VOLUME else v for v in values]
    elif np.isnan(col).any():
        values = [None if v != v else v for v in values]
    return values


def bar_dicts(bars: np.ndarray, fields: Iterable[str] | None = None) -> list[dict]:
    """JSON-ready rows: ISO dates, exact float64, int volume, None for missing cells.

    Without ``fields``: open, high, low, close, volume, and adj_close when the series has
    one. This is the API's hot path, hence the dict literal for the default columns.
    """
    columns = columns_for(bars, fields)
    dates = days_to_iso(bars["date"])
    if columns == DEFAULT_COLUMNS:
        o, h, lo, c, v = (_json_column(bars, n) for n in DEFAULT_COLUMNS)
        return [
            {"date": a, "open": b, "high": d, "low": e, "close": f, "volume": g}
            for a, b, d, e, f, g in zip(dates, o, h, lo, c, v, strict=True)
        ]
    keys = ("date", *columns)
    cols = [_json_column(bars, n) for n in columns]
    return [dict(zip(keys, row, strict=True)) for row in zip(dates, *cols, strict=True)]


# --- the whole market at once ----------------------------------------------------------

# A dependency name (never a symbol: SYMBOL_RE refuses it) standing for the set of stored
# symbols, so an answer over "every ticker" goes stale when a ticker comes or goes.
ALL_SYMBOLS = "*"


def members_digest(symbols: Iterable[str]) -> str:
    """A short fingerprint of a set of symbols (order does not matter)."""
    joined = "\n".join(sorted(symbols)).encode()
    return hashlib.blake2b(joined, digest_size=12).hexdigest()


# Every key a dependency version is read from starts with one of these (version_watch).
VERSION_KEY_PREFIXES = (META_PREFIX, SYMBOLS_KEY)


def dependency_name(key: str) -> str | None:
    """The dependency name whose version ``key`` holds (inverse of the reads below)."""
    if key == SYMBOLS_KEY:
        return ALL_SYMBOLS
    return key.removeprefix(META_PREFIX) if key.startswith(META_PREFIX) else None


def dependency_versions(r: redis.Redis, names: Iterable[str]) -> dict[str, str | None]:
    """``versions``, where the name ``ALL_SYMBOLS`` reads as the digest of the symbol set.

    One round trip either way: what the answer cache re-reads before serving a repeat.
    """
    names = list(names)
    if ALL_SYMBOLS not in names:
        return versions(r, names)
    pipe = r.pipeline(transaction=False)
    for name in names:
        if name == ALL_SYMBOLS:
            pipe.smembers(SYMBOLS_KEY)
        else:
            pipe.hget(meta_key(name), "version")
    out: dict[str, str | None] = {}
    for name, value in zip(names, pipe.execute(), strict=True):
        if name == ALL_SYMBOLS:
            out[name] = members_digest(s.decode() for s in value)
        else:
            out[name] = value.decode() if value is not None else None
    return out


class MarketSlice(NamedTuple):
    """Some bars of every stored ticker, read by one script (so as one snapshot).

    ``bars`` holds all tickers one after the other (each sorted by date);
    ``bounds[i]:bounds[i + 1]`` are the rows of ``symbols[i]``. ``depends`` maps
    ``ALL_SYMBOLS`` and every symbol to the version the answer is built from.
    """

    symbols: list[str]
    meta: dict[str, list[str | None]]  # field -> one value per symbol
    bars: np.ndarray
    bounds: np.ndarray
    depends: dict[str, str | None]

    def rows_of(self, i: int) -> np.ndarray:
        return self.bars[self.bounds[i] : self.bounds[i + 1]]


def _market_slice(
    symbols: list[str], fields: list[str], replies: Iterable[tuple[list, bytes]]
) -> MarketSlice:
    """A MarketSlice from (meta values in ``fields`` order, packed bars) per symbol.

    Column-wise on purpose: this runs for 505 tickers on every market answer.
    """
    replies = list(replies)
    raw_meta = zip(*(meta for meta, _ in replies), strict=True) if replies else [[]] * len(fields)
    meta = {
        f: [None if v is None else v.decode() for v in col]
        for f, col in zip(fields, raw_meta, strict=True)
    }
    versions = meta["version"]
    depends: dict[str, str | None] = {ALL_SYMBOLS: members_digest(symbols)}
    depends.update(zip(symbols, versions, strict=True))
    datas = [data for _, data in replies]
    if None in versions:  # deleted since the set was read
        keep = [i for i, v in enumerate(versions) if v is not None]
        symbols = [symbols[i] for i in keep]
        meta = {f: [col[i] for i in keep] for f, col in meta.items()}
        datas = [datas[i] for i in keep]
    counts = [len(data) // BAR_DTYPE.itemsize for data in datas]
    bounds = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    return MarketSlice(list(symbols), meta, decode_chunks(datas), bounds, depends)


# Per ticker: the meta fields asked for, then the packed bars from the last bar with a
# close on or before ARGV[1] (lo) through the last bar on or before ARGV[2] (hi). Each
# year chunk is sorted, so a binary search finds hi and a short walk back finds lo; older
# chunks are looked at only when that walk runs off the start of a year. Record layout as
# BAR_DTYPE: date int32 at byte 1, close float64 at byte 29 (Lua counts from 1).
_WINDOW_LUA = """
local lo, hi, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hi_year, nfields = ARGV[4], tonumber(ARGV[5])
local fields = {}
for f = 1, nfields do fields[f] = ARGV[5 + f] end
local unpack_bytes, sub, floor, call = struct.unpack, string.sub, math.floor, redis.call
local function date_at(data, j) return unpack_bytes('<i4', data, j * size + 1) end
local function has_close(data, j)
  local c = unpack_bytes('<d', data, j * size + 29)
  return c == c
end
-- Index of the last bar on or before hi (-1: none), by binary search.
local function last_upto(data, n)
  local a, b = 0, n
  while a < b do
    local m = floor((a + b) / 2)
    if date_at(data, m) <= hi then a = m + 1 else b = m end
  end
  return a - 1
end
-- Walk back from the last bar <= hi in data; returns the kept piece and whether lo was met.
local function piece(data)
  local last = last_upto(data, #data / size)
  for j = last, 0, -1 do
    if date_at(data, j) <= lo and has_close(data, j) then
      return sub(data, j * size + 1, (last + 1) * size), true
    end
  end
  return sub(data, 1, (last + 1) * size), false
end
local out = {}
for i = 1, #KEYS, 2 do
  local row = call('HMGET', KEYS[i], unpack(fields))
  local pieces, done = {}, false
  local data = call('HGET', KEYS[i + 1], hi_year)
  if data then
    local got
    got, done = piece(data)
    pieces[1] = got
  end
  if not done then
    local years = call('HKEYS', KEYS[i + 1])
    table.sort(years)
    for y = #years, 1, -1 do
      if years[y] < hi_year then
        local got
        got, done = piece(call('HGET', KEYS[i + 1], years[y]))
        table.insert(pieces, 1, got)
        if done then break end
      end
    end
  end
  row[#row + 1] = table.concat(pieces)
  out[#out + 1] = row
end
return out
"""


_window_scripts: dict[int, object] = {}


def read_market_window(
    r: redis.Redis, lo: dt.date, hi: dt.date, meta_fields: Iterable[str] = ("version",)
) -> MarketSlice:
    """Every ticker's bars from its last bar with a close on or before ``lo`` through its
    last bar on or before ``hi``, with some meta fields, as one snapshot.

    Those bars are all that "the last close on or before a day" needs for both days (a
    bar after ``lo`` without a close is kept, one before it is not needed), so
    ``analytics.change(bars, period, hi)`` with ``lo = hi − period`` gives what it gives on
    the whole series. ``lo = hi = day`` keeps at most the day's bar and the one before.

    Two round trips whatever the number of tickers: the symbol set, then one script
    that picks the bars inside Redis, so a few bars per ticker cross the wire instead of
    whole year chunks (505 tickers: ~30 kB rather than ~6 MB per year read).
    """
    symbols = list_symbols(r)
    fields = ["version", *(f for f in meta_fields if f != "version")]
    if not symbols:
        return _market_slice([], fields, [])
    keys = [k for sym in symbols for k in (meta_key(sym), bars_key(sym))]
    args = [to_day(lo), to_day(hi), BAR_DTYPE.itemsize, f"{hi.year:04d}", len(fields), *fields]
    script = _window_scripts.get(id(r))
    if script is None:
        script = _window_scripts[id(r)] = r.register_script(_WINDOW_LUA)
    replies = script(keys=keys, args=args)
    return _market_slice(symbols, fields, ((row[:-1], row[-1] or b"") for row in replies))


# Per bars key: the date of its first bar after ARGV[1] (a day number), or false.
_NEXT_DAY_LUA = """
local day, size, year = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local unpack_bytes, floor, call = struct.unpack, math.floor, redis.call
local function first_after(data)
  local a, b = 0, #data / size
  while a < b do
    local m = floor((a + b) / 2)
    if unpack_bytes('<i4', data, m * size + 1) <= day then a = m + 1 else b = m end
  end
  if a < #data / size then return unpack_bytes('<i4', data, a * size + 1) end
  return false
end
local out = {}
for i, key in ipairs(KEYS) do
  local found = false
  local data = call('HGET', key, year)
  if data then found = first_after(data) end
  if not found then
    local years = call('HKEYS', key)
    table.sort(years)
    for _, y in ipairs(years) do
      if y > year then
        found = first_after(call('HGET', key, y))
        if found then break end
      end
    end
  end
  out[i] = found
end
return out
"""
_next_day_scripts: dict[int, object] = {}


def next_market_day(r: redis.Redis, symbols: list[str], day: dt.date) -> dt.date | None:
    """The first day after ``day`` on which any of ``symbols`` has a bar (one round trip)."""
    if not symbols:
        return None
    script = _next_day_scripts.get(id(r))
    if script is None:
        script = _next_day_scripts[id(r)] = r.register_script(_NEXT_DAY_LUA)
    args = [to_day(day), BAR_DTYPE.itemsize, f"{day.year:04d}"]
    found = [d for d in script(keys=[bars_key(s) for s in symbols], args=args) if d]
    return from_day(min(found)) if found else None


def bars_on(market: MarketSlice, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """(index into ``market.symbols``, bar) of every ticker with a bar on ``day``."""
    rows = np.flatnonzero(market.bars["date"] == to_day(day))
    owners = np.searchsorted(market.bounds, rows, side="right") - 1
    return owners, market.bars[rows]


def latest_stored_day(r: redis.Redis) -> dt.date | None:
    """The last day any stored ticker has a bar (one pipelined round trip)."""
    symbols = list_symbols(r)
    pipe = r.pipeline(transaction=False)
    for sym in symbols:
        pipe.hget(meta_key(sym), "last_date")
    days = [d.decode() for d in (pipe.execute() if symbols else []) if d]
    return dt.date.fromisoformat(max(days)) if days else None
