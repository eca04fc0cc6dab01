"""`stocks load --source csv`: exact values, defects kept or refused, atomic replacement."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocks import cli, loader, storage
from stocks.config import Settings
from stocks.sources.csv import CsvRejected, _check_header, _fast_parse, parse_csv

HEADER = "date,open,high,low,close,volume,Name\n"

pytestmark = pytest.mark.usefixtures("redis_env")


def write(directory: Path, symbol: str, body: str, header: str = HEADER) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{symbol}.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def rows(n: int, price: float = 10.0, start_day: int = 1) -> str:
    return "".join(
        f"2014-01-{d:02d},{price},{price + 1},{price - 1},{price + 0.5},{1000 + d},X\n"
        for d in range(start_day, start_day + n)
    )


def load(argv: list[str]) -> int:
    return cli.main(["load", *argv])


# --- values ----------------------------------------------------------------------------


def test_values_are_the_exact_source_numbers(r0, tmp_path):
    write(
        tmp_path,
        "AAPL",
        "2013-02-08,67.7142,68.4014,66.8928,67.8542,158168416,AAPL\n"
        "2013-02-11,0.1,0.30000000000000004,0.07,0.2,1,AAPL\n"
        "2013-02-12,,,1.5,2.25,0,AAPL\n",
    )
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 0
    meta, bars = storage.read_series(r0, "AAPL")
    assert bars["open"][0] == float("67.7142") and bars["close"][0] == float("67.8542")
    assert bars["high"][1] == float("0.30000000000000004")
    assert bars["volume"].tolist() == [158168416, 1, 0]
    assert bars["volume"].dtype == np.int64
    assert math.isnan(bars["open"][2]) and math.isnan(bars["high"][2])
    dicts = storage.bar_dicts(bars)
    assert dicts[2] == {
        "date": "2013-02-12",
        "open": None,
        "high": None,
        "low": 1.5,
        "close": 2.25,
        "volume": 0,
    }
    assert meta["source"] == "csv" and meta["rows"] == 3
    assert meta["name"] == "Apple Inc." and meta["sector"] == "Information Technology"
    assert meta["first_date"] == "2013-02-08" and meta["last_date"] == "2013-02-12"


def test_unknown_symbol_gets_no_name_and_missing_volume_is_minus_one(r0, tmp_path):
    write(tmp_path, "ZZZZ", "2014-01-02,1,2,0.5,1.5,,X\n")
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 0
    meta, bars = storage.read_series(r0, "ZZZZ")
    assert meta["name"] is None and meta["sector"] is None
    assert bars["volume"][0] == storage.MISSING_VOLUME
    assert storage.bar_dicts(bars)[0]["volume"] is None


def test_header_case_extra_columns_crlf_bom_quotes_and_blank_lines(tmp_path):
    path = tmp_path / "ODD.csv"
    path.write_bytes(
        b"\xef\xbb\xbfDate,Open,High,Low,Close,Volume,Name,Extra\r\n"
        b'2014-01-02,"1.25",2,1,1.5,10,ODD,x\r\n'
        b"\r\n"
        b"2014-01-03,1.5,2.5,1.25,2,20,ODD,y\r\n"
    )
    parsed = parse_csv(path)
    assert parsed.bars["date"].tolist() == [
        storage.to_day(dt.date(2014, 1, 2)),
        storage.to_day(dt.date(2014, 1, 3)),
    ]
    assert parsed.bars["open"].tolist() == [1.25, 1.5]
    assert parsed.bars["volume"].tolist() == [10, 20]
    assert parsed.warnings == []


def test_ohlc_violation_is_kept_and_reported_with_file_and_date(r0, tmp_path, capsys):
    write(tmp_path, "AOS", "2013-12-19,23.89,23.595,23.85,24.445,100,AOS\n" + rows(3))
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 warnings" in out
    assert "AOS.csv: 2013-12-19: low <= open, close <= high does not hold" in out
    bars = storage.read_bars(r0, "AOS")
    assert len(bars) == 4 and bars["high"][0] == 23.595


def test_empty_cells_are_warnings_too(tmp_path):
    path = write(tmp_path, "DHR", "2016-01-12,,,,50.5,0,DHR\n")
    parsed = parse_csv(path)
    assert [(w.date, w.kind) for w in parsed.warnings] == [("2016-01-12", "missing")]
    assert "empty open, high, low" in parsed.warnings[0].detail


# --- rejections ------------------------------------------------------------------------

GOOD = "2014-01-02,1,2,0.5,1.5,100,X\n"
REJECTIONS = [
    ("empty", "", "", 1, "empty file"),
    ("header_only", HEADER, "", 2, "no data rows"),
    ("bad_header", "date,open,high,low,close\n", GOOD, 1, "bad header"),
    ("wrong_order", "date,high,open,low,close,volume\n", GOOD, 1, "bad header"),
    ("non_numeric", HEADER, GOOD + "2014-01-03,1,abc,0.5,1.5,100,X\n", 3, "non-numeric high 'abc'"),
    ("nan_text", HEADER, GOOD + "2014-01-03,nan,2,0.5,1.5,100,X\n", 3, "non-numeric open 'nan'"),
    ("inf_text", HEADER, "2014-01-03,1,2,0.5,inf,100,X\n", 2, "non-numeric close 'inf'"),
    ("bad_volume", HEADER, GOOD + "2014-01-03,1,2,0.5,1.5,lots,X\n", 3, "non-numeric volume"),
    ("fraction_volume", HEADER, "2014-01-03,1,2,0.5,1.5,1.5,X\n", 2, "not a whole number"),
    ("bad_date", HEADER, GOOD + "2014/01/03,1,2,0.5,1.5,100,X\n", 3, "unparseable date"),
    ("no_such_day", HEADER, GOOD + "2014-02-30,1,2,0.5,1.5,100,X\n", 3, "unparseable date"),
    ("short_date", HEADER, GOOD + "2014-1-3,1,2,0.5,1.5,100,X\n", 3, "unparseable date"),
    (
        "duplicate",
        HEADER,
        GOOD + "2014-01-03,1,2,0.5,1.5,100,X\n2014-01-02,1,2,0.5,1.5,100,X\n",
        4,
        "duplicated date 2014-01-02 (first on line 2)",
    ),
    (
        "unsorted",
        HEADER,
        "2014-01-03,1,2,0.5,1.5,100,X\n" + GOOD,
        3,
        "unsorted dates: 2014-01-02 comes after 2014-01-03 on line 2",
    ),
    ("negative_price", HEADER, GOOD + "2014-01-03,1,2,-0.5,1.5,100,X\n", 3, "negative low"),
    ("negative_volume", HEADER, GOOD + "2014-01-03,1,2,0.5,1.5,-7,X\n", 3, "negative volume"),
    ("few_fields", HEADER, GOOD + "2014-01-03,1,2\n", 3, "expected at least 6 fields"),
]


@pytest.mark.parametrize(
    ("header", "body", "line", "reason"),
    [r[1:] for r in REJECTIONS],
    ids=[r[0] for r in REJECTIONS],
)
def test_bad_file_is_rejected_naming_file_line_and_reason(tmp_path, header, body, line, reason):
    path = write(tmp_path, "BAD", body, header=header)
    with pytest.raises(CsvRejected) as caught:
        parse_csv(path)
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"BAD.csv: line {line}: ")


def test_non_utf8_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "LATIN.csv"
    path.write_bytes(HEADER.encode() + GOOD.encode() + b"2014-01-03,1,2,0.5,1.5,100,Caf\xe9\n")
    with pytest.raises(CsvRejected) as caught:
        parse_csv(path)
    assert (caught.value.line, caught.value.reason) == (3, "not UTF-8 text")


def test_rejected_file_stores_nothing_and_keeps_old_data(r0, tmp_path, capsys):
    good, bad = tmp_path / "v1", tmp_path / "v2"
    write(good, "KEEP", rows(5, price=10.0))
    write(good, "NEW", rows(2))
    assert load(["--source", "csv", "--path", str(good)]) == 0
    before_meta, before_bars = storage.read_series(r0, "KEEP")
    before_bars = before_bars.copy()
    capsys.readouterr()

    write(bad, "KEEP", rows(3, price=20.0) + "2014-01-09,1,2,0.5,oops,100,X\n")
    write(bad, "FRESH", rows(2))
    assert load(["--source", "csv", "--path", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "rejected KEEP: KEEP.csv: line 5: non-numeric close 'oops'" in out
    assert "loaded 1 tickers" in out

    after_meta, after_bars = storage.read_series(r0, "KEEP")
    assert after_meta["version"] == before_meta["version"]
    assert after_bars.tobytes() == before_bars.tobytes()
    assert storage.read_bars(r0, "FRESH") is not None
    assert storage.list_symbols(r0) == ["FRESH", "KEEP", "NEW"]


def test_reload_replaces_the_whole_series(r0, tmp_path):
    write(tmp_path / "a", "SWAP", rows(9, price=10.0))
    write(tmp_path / "b", "SWAP", rows(3, price=30.0, start_day=20))
    assert load(["--source", "csv", "--path", str(tmp_path / "a")]) == 0
    v1 = storage.get_meta(r0, "SWAP")["version"]
    assert load(["--source", "csv", "--path", str(tmp_path / "b")]) == 0
    meta, bars = storage.read_series(r0, "SWAP")
    assert meta["rows"] == 3 and meta["version"] != v1
    assert bars["open"].tolist() == [30.0, 30.0, 30.0]
    assert meta["first_date"] == "2014-01-20"


def test_reader_sees_old_or_new_series_never_a_mix(r0, redis_url, tmp_path):
    """Reload two versions over and over while a reader checks each read is one of them."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_rows = "".join(
        f"{2010 + y}-0{m}-1{d},1,2,0.5,1.5,1,X\n"
        for y in range(6)
        for m in range(1, 4)
        for d in range(5)
    )
    new_rows = "".join(
        f"{2012 + y}-0{m}-1{d},3,4,2.5,3.5,2,X\n"
        for y in range(4)
        for m in range(4, 6)
        for d in range(5)
    )
    write(old_dir, "MIX", old_rows)
    write(new_dir, "MIX", new_rows)
    old_bars = parse_csv(old_dir / "MIX.csv").bars
    new_bars = parse_csv(new_dir / "MIX.csv").bars
    loader.load_csv(Settings(redis_url=redis_url), old_dir, workers=1)
    stop = threading.Event()
    seen: list[str] = []

    def read_loop() -> None:
        client = redis.Redis.from_url(redis_url, db=0)
        while not stop.is_set():
            meta, bars = storage.read_series(client, "MIX")
            if bars.tobytes() == old_bars.tobytes() and meta["rows"] == len(old_bars):
                seen.append("old")
            elif bars.tobytes() == new_bars.tobytes() and meta["rows"] == len(new_bars):
                seen.append("new")
            else:
                seen.append("mixed")

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(30):
            directory = new_dir if i % 2 == 0 else old_dir
            loader.load_csv(Settings(redis_url=redis_url), directory, workers=1, progress=False)
            reads = len(seen)
            deadline = time.monotonic() + 5
            while len(seen) == reads and time.monotonic() < deadline:
                time.sleep(0.001)  # let the reader see this version at least once
    finally:
        stop.set()
        reader.join()
    assert "mixed" not in seen
    assert {"old", "new"} <= set(seen)


# --- the fast path must give exactly float(text) ---------------------------------------

price_text = st.one_of(
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(min_value=0, max_value=100000, places=4, allow_nan=False).map(str),
    st.integers(min_value=0, max_value=10**15).map(str),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(price_text, price_text, price_text, price_text), min_size=1, max_size=40))
def test_fast_path_parses_every_number_exactly(tmp_path, cells):
    body = "".join(
        f"{2000 + i // 300}-{1 + (i // 25) % 12:02d}-{1 + i % 25:02d},{o},{h},{lo},{c},{i}\n"
        for i, (o, h, lo, c) in enumerate(cells)
    )
    path = tmp_path / "PROP.csv"
    path.write_text("date,open,high,low,close,volume\n" + body)
    data = path.read_bytes()
    fast = _fast_parse(path, data, _check_header(path, data))
    assert fast is not None, "a clean file must take the fast path"
    for name, column in zip(
        ("open", "high", "low", "close"), zip(*cells, strict=True), strict=True
    ):
        assert fast.bars[name].tolist() == [float(text) for text in column]
    assert fast.bars["volume"].tolist() == list(range(len(cells)))


# --- command line ----------------------------------------------------------------------


def test_tickers_subset_and_missing_ticker_is_named(r0, tmp_path, capsys):
    write(tmp_path, "AAA", rows(2))
    write(tmp_path, "BRK.B", rows(2))
    write(tmp_path, "CCC", rows(2))
    code = load(["--source", "csv", "--path", str(tmp_path), "--tickers", "aaa,BRK-B,NOPE"])
    assert code == 1
    out = capsys.readouterr().out
    assert "rejected NOPE: NOPE: no file NOPE.csv" in out
    assert storage.list_symbols(r0) == ["AAA", "BRK.B"]
    assert storage.resolve_symbol(r0, "brk-b") == "BRK.B"


def test_parallel_workers_and_json_summary(r0, tmp_path, capsys):
    for i in range(6):
        write(tmp_path, f"T{i}", rows(4 + i))
    write(tmp_path, "BROKEN", "2014-01-02,1,2,0.5,x,100,X\n")
    code = load(["--source", "csv", "--path", str(tmp_path), "--workers", "2", "--json"])
    assert code == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["loaded"] == 6 and summary["rows"] == sum(4 + i for i in range(6))
    assert summary["failures"] == [
        {"symbol": "BROKEN", "reason": "BROKEN.csv: line 2: non-numeric close 'x'"}
    ]
    assert storage.count_symbols(r0) == 6


def test_two_files_for_one_symbol_are_not_both_loaded(r0, tmp_path, capsys):
    write(tmp_path, "BF-B", rows(2))
    write(tmp_path, "BF.B", rows(3))
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 1
    assert "rejected BF.B.csv: BF.B.csv: same symbol as BF-B.csv" in capsys.readouterr().out
    assert storage.get_meta(r0, "BF.B")["rows"] == 2


def test_progress_bar_on_request(r0, tmp_path, capsys):
    write(tmp_path, "LOUD", rows(2))
    loader.load_csv(Settings.from_env(), tmp_path, workers=1, progress=True)
    assert "1/1" in capsys.readouterr().err


def test_no_progress_bar_when_stderr_is_not_a_terminal(r0, tmp_path, capsys):
    write(tmp_path, "QUIET", rows(2))
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 0
    assert "ticker/s" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "csv"], "needs --path"),
        (["--source", "csv", "--path", "/nonexistent/dir"], "not a directory"),
        (["--source", "csv", "--path", ".", "--period", "5y"], "--period does not apply"),
        (["--source", "csv", "--path", ".", "--workers", "0"], "--workers must be at least 1"),
        (["--source", "csv", "--path", ".", "--tickers", "A B"], "not a ticker symbol"),
    ],
)
def test_usage_errors_exit_2(redis_url, argv, message, capsys):
    assert load(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        load(["--source", "ftp"])
    assert caught.value.code == 2


def test_empty_directory_is_a_usage_error(redis_url, tmp_path, capsys):
    assert load(["--source", "csv", "--path", str(tmp_path)]) == 2
    assert "no .csv files" in capsys.readouterr().err


def test_unreachable_redis_exits_1(monkeypatch, tmp_path, capsys):
    from stocks.config import reset_clients
    from stocks.redis_server import free_port

    write(tmp_path, "AAA", rows(2))
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}")
    reset_clients()
    try:
        assert load(["--source", "csv", "--path", str(tmp_path)]) == 1
    finally:
        reset_clients()
    assert "cannot reach Redis" in capsys.readouterr().err
