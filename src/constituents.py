"""Names and sectors of S&P 500 members from the shipped ``data/constituents.csv``.

The file (Symbol,Name,Sector) is the published list closest to the price data's period,
so every loaded ticker gets a name and a sector without a network call. The index itself
(``^GSPC``) is not a member but is loaded beside them so charts can compare with it.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

CONSTITUENTS_FILE = Path(__file__).resolve().parent / "data" / "constituents.csv"
INDEX_SYMBOL = "^GSPC"
INDEX_NAME = "S&P 500 Index"


@cache
def _rows() -> tuple[tuple[str, str, str], ...]:
    with CONSTITUENTS_FILE.open(newline="", encoding="utf-8") as fh:
        return tuple(
            (row["Symbol"].strip().upper(), row["Name"].strip(), row["Sector"].strip())
            for row in csv.DictReader(fh)
        )


@cache
def _table() -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {sym: (name, sector) for sym, name, sector in _rows()}
    out[INDEX_SYMBOL] = (INDEX_NAME, None)
    return out


def constituents() -> dict[str, tuple[str, str | None]]:
    """{symbol: (name, sector)} for every listed member plus the index (no sector)."""
    return dict(_table())


def sp500_symbols() -> list[str]:
    """Member symbols in file order (share classes with a dot: BRK.B); no index."""
    return [sym for sym, _, _ in _rows()]


def describe(symbol: str) -> tuple[str | None, str | None]:
    """(name, sector) of a symbol; (None, None) when the list does not know it."""
    return _table().get(symbol, (None, None))
