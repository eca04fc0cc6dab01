"""The DB-0 format: exact values, range cuts, atomic replacement, single-bar writes."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest
from conftest import business_days, random_bars

from stocks import storage

SPAN = business_days("2013-02-08", "2018-02-07")


def test_roundtrip_is_exact_and_missing_cells_are_null(r0):
    bars = random_bars(SPAN, 1)
    bars["open"][3] = np.nan
    bars["volume"][5] = storage.MISSING_VOLUME
    bars["close"][7] = 0.1 + 0.2  # not representable in float32 or with rounding
    storage.replace_series(r0, "AAPL", bars, {"name": "Apple", "sector": "IT", "source": "csv"})

    meta, got = storage.read_series(r0, "AAPL")
    assert meta["rows"] == len(bars)
    assert meta["first_date"] == "2013-02-08" and meta["last_date"] == "2018-02-07"
    assert got.tobytes() == bars.tobytes()
    rows = storage.bar_dicts(got)
    assert rows[3]["open"] is None and rows[5]["volume"] is None
    assert rows[7]["close"] == 0.1 + 0.2
    assert "adj_close" not in rows[0]


def test_range_cut_is_inclusive_and_reads_only_touched_years(r0):
    bars = random_bars(SPAN, 1)
    storage.replace_series(r0, "X", bars, {"source": "csv"})
    _, got = storage.read_series(r0, "X", dt.date(2014, 12, 31), dt.date(2015, 1, 2))
    assert storage.days_to_iso(got["date"]) == ["2014-12-31", "2015-01-01", "2015-01-02"]
    _, month = storage.read_series(r0, "X", dt.date(2016, 3, 1), dt.date(2016, 3, 31))
    assert len(month) == 23
    _, none = storage.read_series(r0, "X", dt.date(2030, 1, 1), dt.date(2030, 2, 1))
    assert len(none) == 0
    assert storage.read_series(r0, "NOPE") is None


def test_memory_per_row_is_close_to_raw_size(r0):
    before = r0.info("memory")["used_memory"]
    total = 0
    for i in range(20):
        bars = random_bars(SPAN, i)
        total += len(bars)
        storage.replace_series(r0, f"T{i}", bars, {"source": "csv"})
    per_row = (r0.info("memory")["used_memory"] - before) / total
    assert per_row <= 64, per_row


def test_symbols_resolve_case_insensitively_and_share_class_dash(r0):
    storage.replace_series(r0, "BRK.B", random_bars(SPAN, 1), {"source": "csv"})
    assert storage.resolve_symbol(r0, "brk.b") == "BRK.B"
    assert storage.resolve_symbol(r0, "BRK-B") == "BRK.B"
    assert storage.resolve_symbol(r0, "BRK") is None
    assert storage.resolve_symbol(r0, "bad\x00sym") is None
    assert storage.list_symbols(r0) == ["BRK.B"]


def test_canonical_symbol_is_upper_case_with_a_share_class_dot():
    assert storage.canonical_symbol(" brk-b ") == "BRK.B"
    assert storage.canonical_symbol("bf.b") == "BF.B"
    assert storage.canonical_symbol("^gspc") == "^GSPC"
    assert storage.canonical_symbol("bad sym") is None
    assert storage.canonical_symbol("") is None


def test_resolve_symbols_answers_each_and_versions_every_spelling_tried(r0):
    brk = storage.replace_series(r0, "BRK.B", random_bars(SPAN, 1), {"source": "csv"})
    aapl = storage.replace_series(r0, "AAPL", random_bars(SPAN, 2), {"source": "csv"})
    stored, found = storage.resolve_symbols(r0, ["brk-b", "aapl", "NOPE", "bad\x00sym", "AAPL"])
    assert stored == ["BRK.B", "AAPL", None, None, "AAPL"]
    assert found == {
        "BRK-B": None,
        "BRK.B": brk["version"],
        "AAPL": aapl["version"],
        "NOPE": None,
    }
    assert storage.resolve_symbols(r0, []) == ([], {})
    assert storage.resolve_symbols(r0, ["bad\x00sym"]) == ([None], {})


def test_resolve_prefers_the_spelling_as_typed(r0):
    storage.replace_series(r0, "AB-C", random_bars(SPAN, 1), {"source": "csv"})
    storage.replace_series(r0, "AB.C", random_bars(SPAN, 2), {"source": "csv"})
    assert storage.resolve_symbol(r0, "ab-c") == "AB-C"
    assert storage.resolve_symbol(r0, "ab.c") == "AB.C"
    storage.delete_series(r0, "AB-C")
    assert storage.resolve_symbol(r0, "ab-c") == "AB.C"


def test_date_slice_is_inclusive_and_open_ended():
    days = np.array([storage.to_day(dt.date(2020, 1, d)) for d in (2, 3, 6, 7, 8)])

    def picked(start, end) -> list[int]:
        return [storage.from_day(d).day for d in days[storage.date_slice(days, start, end)]]

    assert picked(None, None) == [2, 3, 6, 7, 8]
    assert picked(dt.date(2020, 1, 3), dt.date(2020, 1, 7)) == [3, 6, 7]
    assert picked(dt.date(2020, 1, 4), dt.date(2020, 1, 5)) == []  # a weekend
    assert picked(dt.date(2020, 1, 7), None) == [7, 8]
    assert picked(None, dt.date(2020, 1, 2)) == [2]
    assert picked(dt.date(2019, 1, 1), dt.date(2030, 1, 1)) == [2, 3, 6, 7, 8]
    assert picked(dt.date(2021, 1, 1), None) == []
    backwards = storage.date_slice(days, dt.date(2020, 1, 7), dt.date(2020, 1, 3))
    assert backwards.stop == backwards.start  # empty, never a negative length
    assert storage.date_slice(days[:0], dt.date(2020, 1, 1), None) == slice(0, 0)


def test_cut_takes_the_rows_date_slice_names():
    bars = random_bars(SPAN, 1)
    start, end = dt.date(2014, 12, 31), dt.date(2015, 1, 2)
    got = storage.cut(bars, start, end)
    assert storage.days_to_iso(got["date"]) == ["2014-12-31", "2015-01-01", "2015-01-02"]
    assert got.tobytes() == bars[storage.date_slice(bars["date"], start, end)].tobytes()


def test_replace_is_atomic_for_readers(r0):
    """A reader never sees one load's meta with another's bars, nor a half-written series."""
    old, new = random_bars(SPAN, 1), random_bars(business_days("2015-01-01", "2018-02-07"), 2)
    storage.replace_series(r0, "X", old, {"source": "old"})
    stop = threading.Event()
    seen: list[tuple[str, int, float]] = []

    def read() -> None:
        while not stop.is_set():
            meta, bars = storage.read_series(r0, "X")
            seen.append((meta["source"], len(bars), float(bars["close"][0])))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        bars, source = (new, "new") if i % 2 == 0 else (old, "old")
        storage.replace_series(r0, "X", bars, {"source": source})
    stop.set()
    reader.join()
    expected = {
        "old": (len(old), float(old["close"][0])),
        "new": (len(new), float(new["close"][0])),
    }
    assert seen
    for source, rows, first_close in seen:
        assert (rows, first_close) == expected[source]


def test_upsert_and_delete_keep_order_and_meta_true(r0):
    bars = random_bars(business_days("2016-01-04", "2016-01-29"))
    storage.replace_series(r0, "X", bars, {"source": "csv"})
    version = storage.get_meta(r0, "X")["version"]

    weekend = storage.make_bars([dt.date(2016, 1, 9)], [1.0], [2.0], [0.5], [1.5], [10])
    meta, created = storage.upsert_bar(r0, "X", weekend)
    assert created and meta["rows"] == len(bars) + 1 and meta["version"] != version
    dates = storage.read_bars(r0, "X")["date"]
    assert np.all(np.diff(dates) > 0)

    later = storage.make_bars([dt.date(2017, 6, 1)], [1.0], [2.0], [0.5], [1.5], [None])
    meta, created = storage.upsert_bar(r0, "X", later)
    assert created and meta["last_date"] == "2017-06-01"
    meta, created = storage.upsert_bar(r0, "X", later)
    assert not created and meta["rows"] == len(bars) + 2

    meta, deleted = storage.delete_bar(r0, "X", dt.date(2017, 6, 1))
    assert deleted and meta["last_date"] == "2016-01-29"
    _, deleted = storage.delete_bar(r0, "X", dt.date(2017, 6, 1))
    assert not deleted
    assert storage.upsert_bar(r0, "NOPE", later) is None


def test_concurrent_upserts_lose_nothing(r0):
    bars = random_bars(business_days("2016-01-04", "2016-01-08"))
    storage.replace_series(r0, "X", bars, {"source": "csv"})
    new_days = business_days("2016-02-01", "2016-04-29")

    def write(days: np.ndarray) -> None:
        for day in days:
            storage.upsert_bar(r0, "X", storage.make_bars([day], [1.0], [2.0], [0.5], [1.5], [1]))

    threads = [threading.Thread(target=write, args=(new_days[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta, got = storage.read_series(r0, "X")
    assert meta["rows"] == len(bars) + len(new_days) == len(got)
    assert np.all(np.diff(got["date"]) > 0)
    assert meta["last_date"] == "2016-04-29"


def test_replace_refuses_unsorted_or_duplicate_dates(r0):
    bars = random_bars(business_days("2016-01-04", "2016-01-08"))
    storage.replace_series(r0, "X", bars, {"source": "csv"})
    broken = bars.copy()
    broken["date"][2] = broken["date"][1]
    with pytest.raises(ValueError):
        storage.replace_series(r0, "X", broken, {"source": "csv"})
    assert storage.read_bars(r0, "X").tobytes() == bars.tobytes()


def test_read_many_matches_read_series_and_skips_absent(r0):
    storage.replace_series(r0, "A", random_bars(SPAN, 1), {"source": "csv"})
    storage.replace_series(
        r0, "B", random_bars(business_days("2016-01-04", "2018-02-07"), 2), {"source": "csv"}
    )
    start, end = dt.date(2015, 6, 1), dt.date(2016, 6, 30)
    many = storage.read_many(r0, ["A", "NOPE", "B"], start, end)
    assert list(many) == ["A", "B"]
    for sym, (meta, bars) in many.items():
        one_meta, one_bars = storage.read_series(r0, sym, start, end)
        assert meta == one_meta and bars.tobytes() == one_bars.tobytes()
    assert storage.days_to_iso(many["B"][1]["date"][:1]) == ["2016-01-04"]
