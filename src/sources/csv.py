"""Parse and validate one price CSV file into bars, or reject it with file, line and reason.

Format: a header starting with ``date,open,high,low,close,volume`` (any case; further
columns such as ``Name`` are ignored), then one row per trading day, dates ascending.

Two paths give the same answer. The fast path (pandas' C parser, which since pandas 3.1
parses every float exactly as ``float(text)`` does) accepts only files with nothing odd
in them. Anything odd (an empty cell, a bad value, a parser error) sends the file to the
slow path, a plain ``csv`` walk that knows each row's line number, so a rejection can
name the line and empty cells are told apart from ``nan`` text. Warnings (missing cells,
rows breaking low <= open, close <= high) are kept rows that a person may want to see.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stocks.storage import BAR_DTYPE, MISSING_VOLUME, from_day, to_day

COLUMNS = ("date", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TAIL_BYTES = 1024  # more than any sane last line; a longer one takes the full parse
F8 = np.dtype(np.float64)
I8 = np.dtype(np.int64)


class CsvRejected(Exception):
    """The whole file is refused; nothing of it may be stored."""

    def __init__(self, path: Path | str, line: int, reason: str):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path.name}: line {line}: {reason}")


@dataclass(frozen=True)
class RowWarning:
    """A row kept and stored, but worth a look: kind is "missing" or "ohlc"."""

    file: str
    date: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.date}: {self.detail}"


@dataclass
class ParsedCsv:
    bars: np.ndarray
    warnings: list[RowWarning] = field(default_factory=list)


def import_parser() -> None:
    """Import pandas now, before forking parse workers: each inherits it (~0.6 s saved each)."""
    import pandas  # noqa: F401, PLC0415


def parse_csv(path: Path | str) -> ParsedCsv:
    """Bars of one CSV file plus warnings; raises CsvRejected when the file is unusable."""
    path = Path(path)
    data = path.read_bytes()
    header = _check_header(path, data)
    parsed = _fast_parse(path, data, header)
    return parsed if parsed is not None else _slow_parse(path, data)


def last_bar(path: Path | str) -> np.ndarray | None:
    """The file's last row as one bar, read from its end without parsing the rest.

    An update compares it with the stored last bar: when they are equal, nothing is new
    and the file is never parsed. None when the tail is anything but a plain row (a
    header only, quotes, empty cells, odd numbers): the full parse then decides.
    Numbers are read with ``float``, exactly as both parse paths read them.
    """
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - TAIL_BYTES))
        tail = f.read()
    lines = tail.rstrip(b"\r\n").rsplit(b"\n", 1)
    if len(lines) < 2:
        return None  # no newline in the tail: a lone header, or a huge line
    cells = lines[1].rstrip(b"\r").split(b",")
    if len(cells) < len(COLUMNS) or not DATE_RE.match(cells[0].decode("ascii", "replace")):
        return None
    try:
        day = to_day(dt.date.fromisoformat(cells[0].decode()))
        prices = [float(c) for c in cells[1:5]]
        volume = int(cells[5])
    except ValueError:
        return None
    if not all(math.isfinite(v) and v >= 0 for v in prices) or volume < 0:
        return None
    return np.array([(day, *prices, math.nan, volume)], dtype=BAR_DTYPE)


# --- shared checks ---------------------------------------------------------------------


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvRejected(path, line, "not UTF-8 text") from None


def _check_header(path: Path, data: bytes) -> list[str]:
    """The header's cells; the first six must name the columns in order."""
    if not data.strip():
        raise CsvRejected(path, 1, "empty file")
    text = _decode(path, data.split(b"\n", 1)[0])
    first = next(csv.reader(io.StringIO(text)), [])
    names = [c.strip().lower() for c in first[: len(COLUMNS)]]
    if tuple(names) != COLUMNS:
        shown = ",".join(first)[:80]
        raise CsvRejected(path, 1, f"bad header {shown!r}: it must start with {','.join(COLUMNS)}")
    return first


def _ohlc_warnings(path: Path, bars: np.ndarray) -> list[RowWarning]:
    """Rows kept as published although low <= open, close <= high does not hold."""
    o, h, lo, c = (bars[k] for k in PRICES)
    with np.errstate(invalid="ignore"):
        bad = (lo > o) | (lo > c) | (o > h) | (c > h) | (lo > h)
    out = []
    for i in np.flatnonzero(bad):
        values = ", ".join(f"{k} {float(bars[k][i])}" for k in PRICES)
        detail = f"low <= open, close <= high does not hold ({values}); kept as published"
        out.append(RowWarning(path.name, from_day(bars["date"][i]).isoformat(), "ohlc", detail))
    return out


# --- fast path -------------------------------------------------------------------------


def _fast_parse(path: Path, data: bytes, header: list[str]) -> ParsedCsv | None:
    """Columns via pandas, or None when anything needs the line-by-line walk."""
    import pandas as pd  # noqa: PLC0415 - ~0.6 s to import; an update with nothing new never parses

    names = header[: len(COLUMNS)]
    dtypes = dict(zip(names[1:], (F8, F8, F8, F8, I8), strict=True))
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=0,
            usecols=range(1, len(COLUMNS)),
            dtype=dtypes,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",
            engine="c",
        )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    days = _fast_days(data, len(frame))
    if days is None:
        return None
    bars = np.empty(len(frame), dtype=BAR_DTYPE)
    bars["date"] = days
    for col, name in zip(PRICES, names[1:5], strict=True):
        values = frame[name].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all() or (values < 0).any():
            return None
        bars[col] = values
    bars["adj_close"] = np.nan
    volume = frame[names[5]].to_numpy(dtype=np.int64)
    if (volume < 0).any():
        return None
    bars["volume"] = volume
    return ParsedCsv(bars, _ohlc_warnings(path, bars))


def _fast_days(data: bytes, rows: int) -> np.ndarray | None:
    """Day numbers of lines that each start with ``YYYY-MM-DD,``, strictly ascending.

    Reads the ten bytes after each newline instead of making a string per row, which
    costs more than parsing the numbers. Anything unusual (blank or quoted lines, a bad
    or unsorted date) returns None and the slow path explains it.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero(buf == ord("\n")) + 1
    starts = starts[starts < len(buf)]
    if rows == 0 or len(starts) != rows or starts[-1] + 11 > len(buf):
        return None
    chars = buf[starts[:, None] + np.arange(11)]
    digits = (chars[:, [0, 1, 2, 3, 5, 6, 8, 9]] - ord("0")).astype(np.int64)
    if (digits > 9).any() or (digits < 0).any():
        return None
    if not (
        (chars[:, 4] == ord("-")) & (chars[:, 7] == ord("-")) & (chars[:, 10] == ord(","))
    ).all():
        return None
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    if (month < 1).any() or (month > 12).any() or (day < 1).any():
        return None
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (day - 1)
    if (days.astype("datetime64[M]") != months).any():  # e.g. 2014-02-30
        return None
    ints = days.astype(np.int64)
    if (np.diff(ints) <= 0).any():
        return None
    return ints


# --- slow path -------------------------------------------------------------------------


def _number(path: Path, line: int, name: str, text: str) -> float:
    """A price cell: exact float of the text, NaN when empty."""
    cell = text.strip()
    if cell == "":
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CsvRejected(path, line, f"non-numeric {name} {text!r}")
    if value < 0:
        raise CsvRejected(path, line, f"negative {name} {text!r}")
    return value


def _volume(path: Path, line: int, text: str) -> int:
    cell = text.strip()
    if cell == "":
        return MISSING_VOLUME
    try:
        value = int(cell)
    except ValueError:
        try:
            as_float = float(cell)
        except ValueError:
            raise CsvRejected(path, line, f"non-numeric volume {text!r}") from None
        if not math.isfinite(as_float):
            raise CsvRejected(path, line, f"non-numeric volume {text!r}") from None
        if not as_float.is_integer():
            raise CsvRejected(path, line, f"volume {text!r} is not a whole number") from None
        value = int(as_float)
    if value < 0:
        raise CsvRejected(path, line, f"negative volume {text!r}")
    return value


def _date(path: Path, line: int, text: str) -> int:
    if DATE_RE.match(text):
        try:
            return to_day(dt.date.fromisoformat(text))
        except ValueError:
            pass
    raise CsvRejected(path, line, f"unparseable date {text!r} (expected YYYY-MM-DD)")


def _slow_parse(path: Path, data: bytes) -> ParsedCsv:
    """Row by row with line numbers: the authority on why a file is refused."""
    reader = csv.reader(io.StringIO(_decode(path, data), newline=""))
    next(reader)  # header, already checked
    rows: list[tuple] = []
    lines: list[int] = []
    texts: list[str] = []
    seen: dict[int, int] = {}
    warnings: list[RowWarning] = []
    for cells in reader:
        line = reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        if len(cells) < len(COLUMNS):
            raise CsvRejected(
                path, line, f"expected at least {len(COLUMNS)} fields, found {len(cells)}"
            )
        day = _date(path, line, cells[0])
        if day in seen:
            raise CsvRejected(path, line, f"duplicated date {cells[0]} (first on line {seen[day]})")
        if rows and day < rows[-1][0]:
            raise CsvRejected(
                path,
                line,
                f"unsorted dates: {cells[0]} comes after {texts[-1]} on line {lines[-1]}",
            )
        prices = [_number(path, line, name, cells[i + 1]) for i, name in enumerate(PRICES)]
        volume = _volume(path, line, cells[5])
        missing = [name for name, v in zip(PRICES, prices, strict=True) if math.isnan(v)]
        if volume == MISSING_VOLUME:
            missing.append("volume")
        if missing:
            detail = f"empty {', '.join(missing)} stored as missing"
            warnings.append(RowWarning(path.name, cells[0], "missing", detail))
        seen[day] = line
        rows.append((day, *prices, math.nan, volume))
        lines.append(line)
        texts.append(cells[0])
    if not rows:
        raise CsvRejected(path, 2, "no data rows after the header")
    bars = np.array(rows, dtype=BAR_DTYPE)
    return ParsedCsv(bars, warnings + _ohlc_warnings(path, bars))
