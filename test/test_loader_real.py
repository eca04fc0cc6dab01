"""Loading all 505 real S&P 500 files: exact counts and every defect the data README lists."""

from __future__ import annotations

import csv

import pytest
import redis
from conftest import SP500_DIR, needs_shared

from stocks import cli, loader, storage
from stocks.config import Settings, reset_clients
from stocks.redis_server import RedisServer

pytestmark = [needs_shared, pytest.mark.slow]

EMPTY_CELL_ROWS = {
    ("BHF", "2017-07-26"),
    ("DHR", "2015-07-17"),
    ("DHR", "2016-01-12"),
    ("ES", "2015-07-17"),
    ("FTV", "2016-07-01"),
    ("O", "2015-07-17"),
    ("O", "2016-01-12"),
    ("REGN", "2015-06-09"),
    ("UA", "2016-04-07"),
    ("VRTX", "2015-05-12"),
    ("WRK", "2015-06-26"),
}
OHLC_ROWS = {
    ("AOS", "2014-05-19"),
    ("BBY", "2016-03-14"),
    ("CHD", "2014-05-19"),
    ("CHK", "2014-06-30"),
    ("DHR", "2014-11-06"),
    ("IP", "2014-07-01"),
    ("LNT", "2016-05-19"),
    ("O", "2014-08-27"),
    ("O", "2014-11-06"),
    ("SPG", "2014-05-28"),
    ("UA", "2016-06-10"),
    ("WRK", "2016-05-13"),
}
LATE_STARTS = {"APTV": (44, "2017-12-05"), "DWDP": (109, "2017-09-01"), "GOOG": (975, "2014-03-27")}
GAPS = {"DHR": 16, "O": 16, "ES": 10, "ICE": 5, "BMY": 2, "ORCL": 2}
FULL_DAYS = 1259


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One full load shared by the read-only tests here, on a private server that no
    other test flushes (also under pytest-xdist)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-real"), appendonly=False).start()
    try:
        settings = Settings(redis_url=server.url)
        summary = loader.load_csv(settings, SP500_DIR, workers=2, progress=False)
        yield redis.Redis.from_url(server.url, db=0), summary
    finally:
        server.stop()
        reset_clients()


def test_all_505_files_load_with_the_documented_defects(loaded):
    r0, summary = loaded
    assert summary.failures == {}
    assert len(summary.loaded) == 505 and summary.rows == 619_040
    assert storage.count_symbols(r0) == 505
    metas = storage.get_metas(r0, storage.list_symbols(r0))
    assert sum(m["rows"] for m in metas.values()) == 619_040
    assert sum(1 for m in metas.values() if m["rows"] == FULL_DAYS) == 470

    found = {(w.file.removesuffix(".csv"), w.date) for w in summary.warnings if w.kind == "ohlc"}
    assert found == OHLC_ROWS
    missing = {
        (w.file.removesuffix(".csv"), w.date) for w in summary.warnings if w.kind == "missing"
    }
    assert missing == EMPTY_CELL_ROWS
    assert len(summary.warnings) == 23

    for symbol, (rows, first) in LATE_STARTS.items():
        assert (metas[symbol]["rows"], metas[symbol]["first_date"]) == (rows, first)
    for symbol, gap in GAPS.items():
        assert metas[symbol]["rows"] == FULL_DAYS - gap
        assert metas[symbol]["first_date"] == "2013-02-08"
    assert metas["DHR"]["rows"] == 1243
    assert {m["last_date"] for m in metas.values()} == {"2018-02-07"}
    assert min(m["first_date"] for m in metas.values()) == "2013-02-08"
    assert metas["AAPL"]["source"] == "csv" and metas["AAPL"]["name"] == "Apple Inc."


def test_empty_cells_are_missing_and_share_classes_resolve(loaded):
    r0, _ = loaded
    dhr = {d["date"]: d for d in storage.bar_dicts(storage.read_bars(r0, "DHR"))}
    assert dhr["2016-01-12"]["open"] is None and dhr["2016-01-12"]["high"] is None
    assert dhr["2016-01-12"]["low"] is None and dhr["2016-01-12"]["volume"] == 0
    assert dhr["2015-07-17"]["open"] is None and dhr["2015-07-17"]["close"] is not None
    assert len(dhr) == 1243
    # Gaps are just absent days: no placeholder rows, neighbours untouched.
    assert {"2013-04-26", "2013-09-10", "2015-03-16", "2016-04-04"}.isdisjoint(dhr)
    assert {"2013-04-25", "2013-04-29", "2015-03-06", "2015-03-23"} <= set(dhr)
    orcl = storage.days_to_iso(storage.read_bars(r0, "ORCL")["date"])
    assert "2013-07-15" not in orcl and "2013-07-12" in orcl and "2013-07-17" in orcl

    for symbol, day in EMPTY_CELL_ROWS:
        row = next(d for d in storage.bar_dicts(storage.read_bars(r0, symbol)) if d["date"] == day)
        assert row["open"] is None and isinstance(row["close"], float)

    assert storage.resolve_symbol(r0, "brk-b") == "BRK.B"
    assert storage.resolve_symbol(r0, "bf.b") == "BF.B"
    aapl = storage.read_bars(r0, "AAPL")
    assert aapl["close"][0] == 67.8542 and storage.bar_dicts(aapl[:1])[0]["date"] == "2013-02-08"


def test_every_stored_value_is_float_of_the_source_text(loaded):
    r0, _ = loaded
    checked = 0
    for path in sorted(SP500_DIR.glob("*.csv")):
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        bars = storage.read_bars(r0, path.stem)
        assert len(bars) == len(rows), path.name
        assert storage.days_to_iso(bars["date"]) == [r[0] for r in rows], path.name
        for i, name in enumerate(("open", "high", "low", "close"), start=1):
            expected = [float(r[i]) if r[i] != "" else None for r in rows]
            stored = [None if v != v else v for v in bars[name].tolist()]
            assert stored == expected, (path.name, name)
        assert bars["volume"].tolist() == [int(r[5]) for r in rows], path.name
        checked += len(rows)
    assert checked == 619_040


def test_cli_loads_everything_with_exit_0(r0, redis_env, capsys):
    code = cli.main(["load", "--source", "csv", "--path", str(SP500_DIR), "--workers", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("loaded 505 tickers (619040 rows) from csv in ")
    assert "0 rejected; 23 warnings" in out
    assert "... and 3 more warnings" in out
