"""`stocks load --update`: appends what is new, atomically, and equals a full load byte for byte.

Real Redis; the CSV cases copy real files from ../shared into the test's temp folder
(truncated or edited there, never into the project) and skip cleanly without them.
The Yahoo cases live in test_loader_yahoo.py beside its replay fixtures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import SP500_DIR, needs_shared

from stocks import cli, loader, storage, update
from stocks.keys import bars_key, meta_key
from stocks.sources import synthetic
from stocks.sources.csv import last_bar, parse_csv

pytestmark = pytest.mark.usefixtures("redis_env")

VOLATILE_META = ("loaded_at", "version")
# Gaps, empty cells, odd rows, late starts, share classes: the files worth a close look.
PICKED = ["AAPL", "APTV", "BHF", "BRK.B", "DHR", "ES", "FTV", "GOOG", "O", "UA", "WRK", "ZTS"]


def snapshot(r) -> dict[str, tuple[dict, dict]]:
    """Every stored symbol's raw bar chunks and meta (minus what must differ)."""
    out = {}
    for sym in storage.list_symbols(r):
        meta = {k: v for k, v in r.hgetall(meta_key(sym)).items()}
        for name in VOLATILE_META:
            meta.pop(name.encode())
        out[sym] = (r.hgetall(bars_key(sym)), meta)
    return out


def truncate(src: Path, dst: Path, rows: int) -> None:
    """Copy ``src`` without its last ``rows`` data rows."""
    lines = src.read_bytes().splitlines(keepends=True)
    dst.write_bytes(b"".join(lines[: len(lines) - rows] if rows else lines))


def copy_files(symbols: list[str], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for sym in symbols:
        shutil.copy(SP500_DIR / f"{sym}.csv", dst / f"{sym}.csv")
    return dst


def run_update(*argv: str) -> int:
    return cli.main(["load", *argv, "--update"])


def csv_update(settings, path: Path, workers: int = 2, tickers=None) -> update.UpdateSummary:
    return update.update_csv(settings, path, tickers, workers=workers, progress=False)


# --- CSV -------------------------------------------------------------------------------


@needs_shared
@pytest.mark.slow
def test_update_from_truncated_files_equals_a_full_load_byte_for_byte(tmp_path, settings, r0):
    """All 505 files cut by 0, 10, 20 or 30 rows (30 reaches back into 2017, so one year
    chunk is extended and the next created), then updated from the real ones."""
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    cuts = {}
    for i, path in enumerate(sorted(SP500_DIR.glob("*.csv"))):
        cuts[path.stem] = (i % 4) * 10
        truncate(path, cut_dir / path.name, cuts[path.stem])
    assert loader.load_csv(settings, cut_dir, workers=2, progress=False).failures == {}

    summary = csv_update(settings, SP500_DIR)
    assert summary.failures == {} and summary.reloaded == {} and summary.new == {}
    assert summary.updated == {s: n for s, n in cuts.items() if n}
    assert sorted(summary.up_to_date) == sorted(s for s, n in cuts.items() if not n)
    assert summary.rows_added == sum(cuts.values())
    # Warnings are about appended rows only: none of the listed odd rows is that recent.
    assert summary.warnings == []
    updated = snapshot(r0)

    r0.flushdb()
    assert loader.load_csv(settings, SP500_DIR, workers=2, progress=False).failures == {}
    assert updated == snapshot(r0)

    again = csv_update(settings, SP500_DIR)
    assert len(again.up_to_date) == 505 and again.counts()["rows_added"] == 0


@needs_shared
def test_nothing_new_parses_no_file_and_writes_nothing(tmp_path, settings, r0, monkeypatch):
    src = copy_files(PICKED, tmp_path / "csv")
    loader.load_csv(settings, src, workers=1, progress=False)
    before = storage.get_metas(r0, PICKED)

    def no_parse(path):
        raise AssertionError(f"{path} was parsed although nothing is new")

    monkeypatch.setattr(update, "parse_csv", no_parse)
    summary = csv_update(settings, src, workers=1)
    assert sorted(summary.up_to_date) == sorted(PICKED) and summary.updated == {}
    assert storage.get_metas(r0, PICKED) == before  # versions and loaded_at untouched


@needs_shared
def test_update_appends_bumps_the_version_and_keeps_the_old_rows(tmp_path, settings, r0):
    cut = tmp_path / "cut"
    cut.mkdir()
    truncate(SP500_DIR / "AAPL.csv", cut / "AAPL.csv", 3)
    loader.load_csv(settings, cut, workers=1, progress=False)
    old_meta, old_bars = storage.read_series(r0, "AAPL")

    summary = csv_update(settings, copy_files(["AAPL"], tmp_path / "full"), workers=1)
    assert summary.updated == {"AAPL": 3}
    meta, bars = storage.read_series(r0, "AAPL")
    assert meta["version"] != old_meta["version"]
    assert meta["rows"] == old_meta["rows"] + 3 and meta["last_date"] == "2018-02-07"
    assert meta["first_date"] == old_meta["first_date"]
    assert bars[: len(old_bars)].tobytes() == old_bars.tobytes()
    assert bars.tobytes() == parse_csv(SP500_DIR / "AAPL.csv").bars.tobytes()


@needs_shared
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("close", "differs from the stored one (close 160.5 -> 1.5)"),
        ("drop", "has no bar for the stored last day 2018-02-02"),
    ],
)
def test_overlap_mismatch_reloads_the_ticker_whole(tmp_path, settings, r0, edit, expected):
    cut = tmp_path / "cut"
    cut.mkdir()
    truncate(SP500_DIR / "AAPL.csv", cut / "AAPL.csv", 3)  # stored last day 2018-02-02
    loader.load_csv(settings, cut, workers=1, progress=False)
    old_version = storage.get_meta(r0, "AAPL")["version"]

    source = tmp_path / "source"
    source.mkdir()
    lines = (SP500_DIR / "AAPL.csv").read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("2018-02-02,"))
    if edit == "close":  # a correction (or an adjustment) rewrote the overlapping bar
        cells = lines[at].split(",")
        cells[4] = "1.5"
        lines[at] = ",".join(cells)
    else:  # the source lost the day
        del lines[at]
    (source / "AAPL.csv").write_text("".join(lines))

    summary = csv_update(settings, source, workers=1)
    assert list(summary.reloaded) == ["AAPL"] and summary.updated == {}
    rows, why = summary.reloaded["AAPL"]
    assert expected in why
    bars = storage.read_bars(r0, "AAPL")
    assert bars.tobytes() == parse_csv(source / "AAPL.csv").bars.tobytes() and rows == len(bars)
    assert storage.get_meta(r0, "AAPL")["version"] != old_version


@needs_shared
def test_a_ticker_gone_from_the_source_keeps_its_data_and_a_new_one_is_loaded_whole(
    tmp_path, settings, r0, capsys
):
    first = copy_files(["AAPL", "ZTS"], tmp_path / "first")
    loader.load_csv(settings, first, workers=1, progress=False)
    zts = storage.get_meta(r0, "ZTS")

    second = copy_files(["AAPL", "MSFT"], tmp_path / "second")
    code = run_update("--source", "csv", "--path", str(second), "--json")
    assert code == 1  # as for `stocks load`: some ticker failed
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "update" and out["source"] == "csv"
    assert out["tickers"]["up_to_date"] == ["AAPL"]
    assert out["tickers"]["new"] == [
        {"symbol": "MSFT", "rows": 1259, "reason": "not stored yet: loaded whole"}
    ]
    assert out["failures"] == [
        {"symbol": "ZTS", "reason": f"ZTS: no ZTS.csv in {second} any more; stored data kept"}
    ]
    assert storage.get_meta(r0, "ZTS") == zts
    assert storage.list_symbols(r0) == ["AAPL", "MSFT", "ZTS"]

    summary = csv_update(settings, second, tickers=["zts", "MSFT"])
    assert summary.up_to_date == ["MSFT"]
    assert summary.failures == {"ZTS": f"zts: no file zts.csv in {second}; stored data kept"}
    assert storage.get_meta(r0, "ZTS") == zts


@needs_shared
def test_json_and_human_summaries_name_every_outcome(tmp_path, settings, r0, capsys):
    cut = tmp_path / "cut"
    cut.mkdir()
    for sym, rows in (("AAPL", 2), ("ZTS", 0), ("GOOG", 1)):
        truncate(SP500_DIR / f"{sym}.csv", cut / f"{sym}.csv", rows)
    loader.load_csv(settings, cut, workers=1, progress=False)
    source = copy_files(["AAPL", "ZTS", "GOOG", "MSFT"], tmp_path / "source")
    lines = (source / "GOOG.csv").read_text().splitlines(keepends=True)
    lines[-2] = lines[-2].replace(",GOOG", "0,GOOG")  # the overlap bar's volume changed
    (source / "GOOG.csv").write_text("".join(lines))
    (source / "BAD.csv").write_text("date,open,high,low,close,volume\nnot-a-date,1,1,1,1,1\n")

    assert run_update("--source", "csv", "--path", str(source), "--json") == 1
    out = json.loads(capsys.readouterr().out)
    counts = {k: out[k] for k in ("updated", "rows_added", "up_to_date", "reloaded", "new")}
    assert counts == {"updated": 1, "rows_added": 2, "up_to_date": 1, "reloaded": 1, "new": 1}
    assert out["failed"] == 1 and out["failures"][0]["symbol"] == "BAD"
    assert "unparseable date" in out["failures"][0]["reason"]
    assert out["tickers"]["updated"] == [{"symbol": "AAPL", "rows_added": 2}]
    assert out["tickers"]["up_to_date"] == ["ZTS"]
    (reloaded,) = out["tickers"]["reloaded"]
    assert reloaded["symbol"] == "GOOG" and reloaded["rows"] == 975
    assert "volume" in reloaded["reason"] and "history was rewritten" in reloaded["reason"]
    assert isinstance(out["seconds"], float) and out["warnings"] == []

    assert run_update("--source", "csv", "--path", str(source)) == 1
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(
        "updated 0 tickers (+0 rows), 4 already up to date, 0 reloaded, 0 new, 1 failed, from csv"
    )
    assert text[1].startswith("failed BAD: BAD.csv: line 2: unparseable date")


@needs_shared
def test_all_fine_exits_0_and_usage_errors_exit_2(tmp_path, capsys):
    src = copy_files(["AAPL"], tmp_path / "csv")
    assert run_update("--source", "csv", "--path", str(src)) == 0
    assert "0 already up to date, 0 reloaded, 1 new" in capsys.readouterr().out
    assert run_update("--source", "csv", "--path", str(src)) == 0
    assert run_update("--source", "synthetic", "--start", "2020-01-01") == 2
    assert "--start does not apply to --source synthetic --update" in capsys.readouterr().err


def test_a_concurrent_write_is_not_lost(settings, r0):
    """An append prepared against an old version is refused; the update starts again."""
    start = dt.date(2020, 1, 1)
    loader.load_synthetic(settings, ["AAPL"], 3, start, dt.date(2020, 6, 30), 1, False)
    tail = storage.read_tails(r0, ["AAPL"])["AAPL"]
    later = synthetic.random_walk("AAPL", 3, end=dt.date(2020, 7, 10), start=start)
    newer = later[later["date"] > tail.last_day]
    extra = newer[:1].copy()
    extra["close"] = 99.0
    extra["high"] = 99.5
    storage.upsert_bar(r0, "AAPL", extra)  # someone writes between read and append
    assert storage.append_bars(r0, "AAPL", newer, tail.version) is None
    assert storage.get_meta(r0, "AAPL")["last_date"] == "2020-07-01"

    outcome = update.apply_update(
        settings.redis_url, "AAPL", tail, lambda _t: later, lambda _t: later, "synthetic"
    )
    # The update saw the written bar (not the source's) on the new last day: reload.
    assert outcome.status == "reloaded" and "close 99.0 -> " in outcome.reason
    assert storage.read_bars(r0, "AAPL").tobytes() == later.tobytes()


def test_readers_see_the_old_series_or_the_longer_one(settings, r0):
    start = dt.date(2015, 1, 1)
    whole = synthetic.random_walk("AAPL", 1, start=start, end=dt.date(2020, 12, 31))
    cut_at = int(np.searchsorted(whole["date"], storage.to_day(dt.date(2019, 6, 28)), "right"))
    storage.replace_series(r0, "AAPL", whole[:cut_at], {"source": "synthetic"})
    tail = storage.read_tails(r0, ["AAPL"])["AAPL"]
    seen: set[int] = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            meta, bars = storage.read_series(r0, "AAPL")
            assert meta["rows"] == len(bars)
            assert bars.tobytes() == whole[: len(bars)].tobytes()
            seen.add(len(bars))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert storage.append_bars(r0, "AAPL", whole[cut_at:], tail.version) is not None
    finally:
        stop.set()
        reader.join()
    assert storage.read_bars(r0, "AAPL").tobytes() == whole.tobytes()
    assert seen <= {cut_at, len(whole)}


def test_append_refuses_bars_that_do_not_come_after_the_stored_ones(settings, r0):
    bars = synthetic.random_walk("AAPL", 1, start=dt.date(2020, 1, 1), end=dt.date(2020, 3, 1))
    storage.replace_series(r0, "AAPL", bars, {"source": "synthetic"})
    version = storage.get_meta(r0, "AAPL")["version"]
    with pytest.raises(ValueError, match="must start after 2020-02-28"):
        storage.append_bars(r0, "AAPL", bars[-2:], version)
    assert storage.read_bars(r0, "AAPL").tobytes() == bars.tobytes()


# --- synthetic -------------------------------------------------------------------------


def test_synthetic_extension_equals_a_one_shot_load(settings, r0, capsys):
    symbols = "AAPL,MSFT,^GSPC"
    base = ["--source", "synthetic", "--tickers", symbols, "--seed", "5"]
    assert cli.main(["load", *base, "--start", "2020-01-01", "--end", "2021-11-30"]) == 0
    versions = storage.versions(r0, symbols.split(","))
    capsys.readouterr()
    assert run_update(*base, "--end", "2022-03-15", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["updated"] == 3 and out["rows_added"] == 3 * 75
    assert all(versions[s] != v for s, v in storage.versions(r0, symbols.split(",")).items())
    extended = snapshot(r0)

    r0.flushdb()
    assert cli.main(["load", *base, "--start", "2020-01-01", "--end", "2022-03-15"]) == 0
    assert extended == snapshot(r0)
    capsys.readouterr()

    assert run_update(*base, "--end", "2022-03-15", "--json") == 0  # nothing new
    assert json.loads(capsys.readouterr().out)["up_to_date"] == 3


def test_synthetic_update_with_another_seed_reloads(settings, r0):
    loader.load_synthetic(settings, ["AAPL"], 1, dt.date(2020, 1, 1), dt.date(2020, 6, 30))
    summary = update.update_synthetic(settings, ["AAPL"], seed=2, end=dt.date(2020, 7, 31))
    assert list(summary.reloaded) == ["AAPL"]
    expected = synthetic.random_walk("AAPL", 2, start=dt.date(2020, 1, 1), end=dt.date(2020, 7, 31))
    assert storage.read_bars(r0, "AAPL").tobytes() == expected.tobytes()


# --- the cheap check -----------------------------------------------------------------


@needs_shared
def test_tail_read_matches_the_full_parse_for_every_real_file():
    for path in sorted(SP500_DIR.glob("*.csv")):
        assert last_bar(path).tobytes() == parse_csv(path).bars[-1:].tobytes(), path.name


@pytest.mark.parametrize(
    "text",
    [
        "date,open,high,low,close,volume\n",
        "date,open,high,low,close,volume\n2020-01-02,1,,1,1,5\n",
        'date,open,high,low,close,volume\n"2020-01-02",1,1,1,1,5\n',
        "date,open,high,low,close,volume\n2020-01-02,1,1,1,1,5.5\n",
    ],
)
def test_an_unusual_tail_means_a_full_parse(tmp_path, text):
    path = tmp_path / "X.csv"
    path.write_text(text)
    assert last_bar(path) is None


# --- the Kubernetes CronJob ----------------------------------------------------------


def test_the_update_cronjob_is_valid_and_runs_like_the_load_job():
    yaml = pytest.importorskip("yaml")
    kv = pytest.importorskip("kubernetes_validate")
    k8s = Path(__file__).resolve().parents[1] / "kubernetes"
    cron = yaml.safe_load((k8s / "update-cronjob.yaml").read_text())
    kv.validate(cron, kv.utils.latest_version(), strict=True)
    spec = cron["spec"]
    assert spec["schedule"] == "30 18 * * 1-5" and spec["timeZone"] == "America/New_York"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    assert 0 < spec["successfulJobsHistoryLimit"] <= 5 and 0 < spec["failedJobsHistoryLimit"] <= 5

    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    job = yaml.safe_load((k8s / "load" / "job.yaml").read_text())
    load_pod = job["spec"]["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "restartPolicy", "volumes"):
        assert pod[key] == load_pod[key], key
    (container,) = pod["containers"]
    (load_container,) = load_pod["containers"]
    for key in ("image", "securityContext", "resources", "envFrom", "volumeMounts"):
        assert container[key] == load_container[key], key

    command, *argv = container["args"]
    assert command == "stocks" and argv[0] == "load"
    parser = argparse.ArgumentParser()
    loader.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    assert (args.source, args.sp500, args.update) == ("yahoo", True, True)


def test_the_api_sees_an_update_at_once(settings, client):
    """Cached answers are keyed by data version: an append gives a new one."""
    start, end = dt.date(2020, 1, 1), dt.date(2020, 3, 31)
    loader.load_synthetic(settings, ["AAPL"], 4, start, end, 1, False)
    path = "/tickers/AAPL/prices"
    first = client.get(path).get_json()["prices"]
    assert client.get(path).get_json()["prices"] == first  # served again, maybe from cache
    summary = update.update_synthetic(settings, ["AAPL"], 4, dt.date(2020, 4, 30), 1, False)
    assert summary.updated == {"AAPL": 22}
    after = client.get(path).get_json()["prices"]
    assert after[: len(first)] == first and len(after) == len(first) + 22
    assert after[-1]["date"] == "2020-04-30"


@needs_shared
def test_only_the_appended_rows_warnings_are_reported(tmp_path, settings, r0):
    cut = tmp_path / "cut"
    cut.mkdir()
    for sym in ("AAPL", "O"):  # O has empty cells and odd rows in 2014-2016
        truncate(SP500_DIR / f"{sym}.csv", cut / f"{sym}.csv", 3)
    assert len(loader.load_csv(settings, cut, workers=1, progress=False).warnings) == 4
    source = copy_files(["AAPL", "O"], tmp_path / "source")
    lines = (source / "AAPL.csv").read_text().splitlines(keepends=True)
    cells = lines[-1].split(",")
    cells[1] = ""  # the newest row's open is missing
    lines[-1] = ",".join(cells)
    (source / "AAPL.csv").write_text("".join(lines))

    summary = csv_update(settings, source, workers=1)
    assert summary.updated == {"AAPL": 3, "O": 3}
    assert [(w.file, w.date, w.kind) for w in summary.warnings] == [
        ("AAPL.csv", "2018-02-07", "missing")
    ]
    assert np.isnan(storage.read_bars(r0, "AAPL")["open"][-1])
