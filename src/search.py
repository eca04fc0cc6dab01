"""Ticker search by symbol and company name: the ranking rule, in one place.

Case-insensitive; the query's spaces are squeezed. A ticker matches when, best first:
    0  its symbol is the query (BRK-B finds BRK.B, as everywhere in the API),
    1  its symbol starts with the query,
    2  a word of its name starts with the query ("app" finds "Apple Inc."; a query of
       several words must match consecutive words: "general el" finds General Electric),
    3  the query is anywhere in its name ("soft" finds Microsoft).
Ties are broken by symbol, so the order is stable. No match at all: left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EXACT_SYMBOL, SYMBOL_PREFIX, NAME_WORD, NAME_TEXT = range(4)
_WORD_START = re.compile(r"(?:^|(?<=[^0-9a-z]))(?=[0-9a-z])")


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def match_rank(query: str, symbol: str, name: str | None) -> int | None:
    """How well ``symbol``/``name`` match ``query`` (lower is better), None for no match."""
    q = _fold(query)
    if not q:
        return None
    sym = symbol.casefold()
    dotted = q.replace("-", ".")
    if sym in (q, dotted):
        return EXACT_SYMBOL
    if sym.startswith(q) or sym.startswith(dotted):
        return SYMBOL_PREFIX
    text = _fold(name or "")
    if not text or q not in text:
        return None
    if any(text.startswith(q, m.start()) for m in _WORD_START.finditer(text)):
        return NAME_WORD
    return NAME_TEXT


def rank(query: str, candidates: Iterable[tuple[str, str | None]]) -> list[str]:
    """Symbols of ``(symbol, name)`` candidates that match, best match first."""
    scored = []
    for symbol, name in candidates:
        score = match_rank(query, symbol, name)
        if score is not None:
            scored.append((score, symbol))
    return [symbol for _, symbol in sorted(scored)]
