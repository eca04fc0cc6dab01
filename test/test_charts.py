"""Chart drawing: image sizes, data assembly per kind, and the series arithmetic."""

from __future__ import annotations

import datetime as dt
import io
import re
import struct

import numpy as np
import pytest
from conftest import SP500_DIR, business_days, needs_shared, random_bars, store, weekdays
from PIL import Image

from stocks import storage
from stocks.worker import chart_data, charts
from stocks.worker.chart_data import ChartDataError, draw_job

START = "2020-01-01"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def svg_size(data: bytes) -> tuple[str, str]:
    m = re.search(rb'<svg[^>]*?width="([^"]+)" height="([^"]+)"', data)
    assert m, "no <svg width=.. height=..>"
    return m.group(1).decode(), m.group(2).decode()


@pytest.fixture
def loaded(r0):
    """Three tickers over 300 business days from 2020-01-01 (no ^GSPC)."""
    for i, sym in enumerate(("AAA", "BBB", "CCC")):
        store(r0, sym, random_bars(300, i, start=START))
    return r0


PARAMS = {
    "line": ["AAA", "BBB"],
    "candlestick": ["AAA"],
    "compare": ["AAA", "BBB", "CCC"],
    "benchmark": ["AAA"],
}


@pytest.mark.parametrize("kind", sorted(PARAMS))
@pytest.mark.parametrize("size", [(1200, 700), (640, 333)])
def test_every_kind_png_has_exact_size(r0, loaded, kind, size):
    options = {"width": size[0], "height": size[1], "format": "png", "volume": True}
    if kind == "candlestick":
        options["moving_averages"] = [5, 20]
    image, ctype = draw_job(
        r0, kind, {"symbols": PARAMS[kind], "start": "2020-02-01", "end": None, "options": options}
    )
    assert ctype == "image/png"
    assert png_size(image) == size
    with Image.open(io.BytesIO(image)) as img:
        img.load()  # a decoder accepts the hand-written PNG
        assert img.size == size
        # Not a blank canvas: something was drawn in several colours.
        assert len(img.getcolors(1 << 20)) > 10


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_every_kind_svg_declares_pixel_size(r0, loaded, kind):
    image, ctype = draw_job(
        r0,
        kind,
        {"symbols": PARAMS[kind], "options": {"width": 800, "height": 500, "format": "svg"}},
    )
    assert ctype == "image/svg+xml"
    assert svg_size(image) == ("800px", "500px")
    assert b"viewBox" in image and image.rstrip().endswith(b"</svg>")


def test_missing_options_get_defaults(r0, loaded):
    image, ctype = draw_job(r0, "line", {"symbols": ["AAA"]})
    assert ctype == "image/png"
    assert png_size(image) == (1200, 700)


def test_default_title_and_custom_title_are_drawn(r0, loaded):
    svg, _ = draw_job(r0, "line", {"symbols": ["AAA"], "options": {"format": "svg"}})
    assert b"AAA daily close 2020-01-01" in svg
    assert b"Price (USD)" in svg and b"Date" in svg
    svg, _ = draw_job(
        r0, "line", {"symbols": ["AAA"], "options": {"format": "svg", "title": "Mine"}}
    )
    assert b">Mine<" in svg


def test_legend_only_with_several_series(r0, loaded):
    one, _ = draw_job(r0, "line", {"symbols": ["AAA"], "options": {"format": "svg"}})
    two, _ = draw_job(r0, "line", {"symbols": ["AAA", "BBB"], "options": {"format": "svg"}})
    assert b'id="legend' not in one
    assert b'id="legend' in two


def test_unknown_symbol_fails_deterministically(r0, loaded):
    with pytest.raises(ChartDataError, match="ZZZ is not loaded"):
        draw_job(r0, "line", {"symbols": ["AAA", "ZZZ"]})


def test_no_data_in_range(r0, loaded):
    with pytest.raises(ChartDataError, match="no prices for AAA between 2030-01-01"):
        draw_job(
            r0, "candlestick", {"symbols": ["AAA"], "start": "2030-01-01", "end": "2030-12-31"}
        )


def test_compare_without_shared_dates(r0):
    store(r0, "OLD", random_bars(20, 1, start="2019-01-01"))
    store(r0, "NEW", random_bars(20, 2, start="2021-01-01"))
    with pytest.raises(ChartDataError, match="share no trading dates"):
        draw_job(r0, "compare", {"symbols": ["OLD", "NEW"]})


def test_bad_kind_count_and_dates_are_deterministic(r0, loaded):
    with pytest.raises(ChartDataError, match="unknown chart kind"):
        draw_job(r0, "pie", {"symbols": ["AAA"]})
    with pytest.raises(ChartDataError, match="takes 2 to 10 symbols"):
        draw_job(r0, "compare", {"symbols": ["AAA"]})
    with pytest.raises(ChartDataError, match="after end"):
        draw_job(r0, "line", {"symbols": ["AAA"], "start": "2020-05-01", "end": "2020-04-01"})


def test_missing_cells_do_not_crash(r0):
    bars = random_bars(120, 7, start=START).copy()
    bars["open"][[0, 5, 6, 50]] = np.nan
    bars["high"][[5, 60]] = np.nan
    bars["low"][[6, 61]] = np.nan
    bars["volume"][[10, 11]] = storage.MISSING_VOLUME
    bars["open"][70] = bars["close"][70]  # a doji
    store(r0, "GAP", bars)
    for kind in ("line", "candlestick", "benchmark"):
        image, _ = draw_job(r0, kind, {"symbols": ["GAP"], "options": {"moving_averages": [3]}})
        assert png_size(image) == (1200, 700)
    # Every open missing: candles have no bodies, the chart still draws.
    bars["open"] = np.nan
    store(r0, "NOOPEN", bars)
    image, _ = draw_job(r0, "candlestick", {"symbols": ["NOOPEN"]})
    assert png_size(image) == (1200, 700)


def test_candlestick_moving_average_uses_history_before_range(r0, loaded, monkeypatch):
    seen = {}

    def fake_chart(dates, open_, high, low, close, volume, averages, **kw):
        seen.update(dates=dates, averages=averages, volume=volume, title=kw["title"])
        return b"png"

    monkeypatch.setattr(charts, "candlestick_chart", fake_chart)
    draw_job(
        r0,
        "candlestick",
        {
            "symbols": ["AAA"],
            "start": "2020-06-01",
            "options": {"moving_averages": [20, 50], "volume": False},
        },
    )
    assert storage.from_day(seen["dates"][0]) == dt.date(2020, 6, 1)
    assert seen["volume"] is None
    full = storage.read_bars(loaded, "AAA")
    lo = int(np.searchsorted(full["date"], storage.to_day(dt.date(2020, 6, 1))))
    (label20, ma20), (label50, ma50) = seen["averages"]
    assert (label20, label50) == ("MA 20", "MA 50")
    assert not np.isnan(ma50[0])  # filled from the first day of the range
    assert ma20[0] == pytest.approx(full["close"][lo - 19 : lo + 1].mean())
    assert seen["title"].startswith("AAA daily OHLC 2020-06-01")


# --- benchmark -------------------------------------------------------------------------


def test_benchmark_uses_gspc_when_loaded(r0, loaded):
    label, _, _ = chart_data.benchmark_reference(loaded, "AAA")
    assert label == "Equal-weight index of 3 loaded tickers"
    store(loaded, "^GSPC", random_bars(300, 99, start=START))
    label, days, values = chart_data.benchmark_reference(loaded, "AAA")
    assert label == "S&P 500 (^GSPC)"
    assert np.array_equal(values, storage.read_bars(loaded, "^GSPC")["close"])
    svg, _ = draw_job(r0, "benchmark", {"symbols": ["AAA"], "options": {"format": "svg"}})
    assert b"S&amp;P 500 (^GSPC)" in svg and b"Equal-weight" not in svg


def test_benchmark_equal_weight_label_in_chart(r0, loaded):
    svg, _ = draw_job(r0, "benchmark", {"symbols": ["BBB"], "options": {"format": "svg"}})
    assert b"Equal-weight index of 3 loaded tickers" in svg
    assert b"Change (%)" in svg


def test_equal_weight_cache_follows_data_versions(loaded):
    _, _, before = chart_data.benchmark_reference(loaded, "AAA")
    store(loaded, "BBB", random_bars(300, 42, start=START))  # new version of one member
    _, _, after = chart_data.benchmark_reference(loaded, "AAA")
    full = [storage.read_bars(loaded, s) for s in ("AAA", "BBB", "CCC")]
    _, expected = reference_equal_weight([(b["date"], b["close"]) for b in full])
    assert np.allclose(after, expected)
    assert not np.allclose(before, after)


def reference_equal_weight(series):
    """Independent, slow definition: loop over dates and tickers in plain Python."""
    per_ticker = [
        {int(d): float(c) for d, c in zip(days, closes, strict=True) if c == c}
        for days, closes in series
    ]
    grid = sorted({d for prices in per_ticker for d in prices})
    level, out = 1.0, []
    for i, day in enumerate(grid):
        rets = []
        for prices in per_ticker:
            if i == 0 or day not in prices:
                continue
            earlier = [d for d in prices if d < day]
            if earlier:
                rets.append(prices[day] / prices[max(earlier)] - 1.0)
        if rets:
            level *= 1.0 + sum(rets) / len(rets)
        out.append(level)
    return np.array(grid), np.array(out)


def test_equal_weight_index_matches_independent_computation():
    rng = np.random.default_rng(3)
    series = []
    for k in range(5):
        days = np.sort(rng.choice(np.arange(18000, 18060), size=40 - 3 * k, replace=False))
        closes = 50 + rng.random(len(days)) * 10
        closes[rng.integers(0, len(days))] = np.nan  # a missing close
        series.append((days.astype(np.int32), closes))
    days, index = chart_data.equal_weight_index(series)
    ref_days, ref_index = reference_equal_weight(series)
    assert np.array_equal(days, ref_days)
    assert index[0] == 1.0
    assert np.allclose(index, ref_index, rtol=1e-12)


# --- pure helpers ----------------------------------------------------------------------


def test_align_on_common_dates_keeps_only_shared_finite_dates():
    a = (np.array([1, 2, 3, 5, 8]), np.array([10.0, 20.0, 30.0, 50.0, 80.0]))
    b = (np.array([2, 3, 4, 5, 8]), np.array([2.0, np.nan, 4.0, 5.0, 8.0]))
    c = (np.array([0, 2, 5, 8, 9]), np.array([0.0, 0.2, 0.5, 0.8, 0.9]))
    days, matrix = chart_data.align_on_common_dates([a, b, c])
    assert days.tolist() == [2, 5, 8]
    assert matrix.tolist() == [[20.0, 2.0, 0.2], [50.0, 5.0, 0.5], [80.0, 8.0, 0.8]]
    pct = chart_data.percent_change(matrix)
    assert pct[0].tolist() == [0.0, 0.0, 0.0]
    assert pct[:, 0] == pytest.approx([0.0, 150.0, 300.0])


def test_moving_average_against_naive_loop():
    values = np.array([1.0, 2, 3, 4, np.nan, 6, 7, 8, 9, 10])
    got = chart_data.moving_average(values, 3)
    for i in range(len(values)):
        window = values[max(0, i - 2) : i + 1]
        if i < 2 or np.isnan(window).any():
            assert np.isnan(got[i])
        else:
            assert got[i] == pytest.approx(window.mean())
    assert np.isnan(chart_data.moving_average(values[:2], 3)).all()


def test_png_encoder_round_trips_pixels():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    data = charts.encode_png(rgb)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "RGB"
        assert np.array_equal(np.asarray(img), rgb)


def test_chart_functions_accept_datetime64_dates():
    dates = weekdays(30, START)
    close = np.linspace(10, 20, 30)
    png = charts.line_chart([("X", dates, close)], title="t", width=300, height=200)
    assert png_size(png) == (300, 200)
    png = charts.candlestick_chart(
        dates, close, close + 1, close - 1, close, None, title="t", width=300, height=200
    )
    assert png_size(png) == (300, 200)


def test_reused_canvas_leaks_nothing_between_charts():
    """Canvases are reused per size: a chart drawn again comes out byte-identical."""
    dates = weekdays(60, START)
    a = np.linspace(10, 20, 60)

    def first():
        return charts.line_chart([("A", dates, a)], title="first", width=500, height=300)

    before = first()
    charts.candlestick_chart(
        dates, a, a + 2, a - 2, a + 1, a * 1e5, [("MA 5", a)], title="x", width=500, height=300
    )
    charts.line_chart([("B", dates, -a)], title="other size", width=400, height=250)
    assert first() == before


def test_dollar_signs_in_title_are_text(r0, loaded):
    svg, _ = draw_job(
        r0, "line", {"symbols": ["AAA"], "options": {"format": "svg", "title": "From $5 to $10"}}
    )
    assert b">From $5 to $10</text>" in svg  # one text element, not mathtext pieces


def test_candlestick_range_before_any_data(r0, loaded):
    with pytest.raises(ChartDataError, match="no prices for AAA up to 2019-06-30"):
        draw_job(r0, "candlestick", {"symbols": ["AAA"], "end": "2019-06-30"})
    with pytest.raises(ChartDataError, match="ZZZ is not loaded"):
        draw_job(r0, "candlestick", {"symbols": ["ZZZ"]})


@pytest.mark.parametrize("n", [1, 2, 5])
def test_very_short_ranges_render(r0, n):
    store(r0, "FEW", random_bars(n, 5, start=START))
    for kind in ("line", "candlestick"):
        image, _ = draw_job(r0, kind, {"symbols": ["FEW"], "options": {"moving_averages": [3]}})
        assert png_size(image) == (1200, 700)


def real_bars(symbol: str) -> np.ndarray:
    """Bars from ../shared/data/sp500_daily/<symbol>.csv (empty cells become NaN)."""
    rows = (SP500_DIR / f"{symbol}.csv").read_text().splitlines()[1:]
    cells = [row.split(",") for row in rows]
    dates = np.array([c[0] for c in cells], dtype="datetime64[D]")

    def column(i: int) -> list[float]:
        return [float(c[i]) if c[i] else np.nan for c in cells]

    return storage.make_bars(dates, column(1), column(2), column(3), column(4), column(5))


@needs_shared
def test_real_series_with_missing_cells_render(r0):
    """DHR, O and UA have rows with empty open/high/low in the real data."""
    for sym in ("DHR", "O", "UA", "AAPL"):
        store(r0, sym, real_bars(sym))
    bars = storage.read_bars(r0, "DHR")
    assert np.isnan(bars["open"]).any()  # the data really has the gaps this test is about
    for kind, symbols in (
        ("candlestick", ["DHR"]),
        ("candlestick", ["UA"]),
        ("line", ["DHR", "O", "UA"]),
        ("compare", ["AAPL", "UA"]),
        ("benchmark", ["O"]),
    ):
        options = {"moving_averages": [20, 50]} if kind == "candlestick" else {}
        image, _ = draw_job(r0, kind, {"symbols": symbols, "options": options})
        assert png_size(image) == (1200, 700)


def test_default_title_says_when_prices_are_synthetic(r0, monkeypatch):
    r = r0
    titles = []
    real_line_chart = charts.line_chart

    def spy(series, *, title, **kwargs):
        titles.append(title)
        return real_line_chart(series, title=title, **kwargs)

    monkeypatch.setattr(charts, "line_chart", spy)
    bars = random_bars(business_days("2017-01-02", "2017-02-28"))
    storage.replace_series(r, "REAL", bars, {"source": "csv"})
    storage.replace_series(r, "FAKE", bars, {"source": "synthetic"})
    chart_data.draw_job(r0, "line", {"symbols": ["REAL"], "options": {"width": 300, "height": 200}})
    chart_data.draw_job(r0, "line", {"symbols": ["FAKE"], "options": {"width": 300, "height": 200}})
    mine = {"symbols": ["FAKE"], "options": {"width": 300, "height": 200, "title": "Mine"}}
    chart_data.draw_job(r0, "line", mine)
    assert not titles[0].endswith("(synthetic data)")
    assert titles[1].endswith("(synthetic data)")
    assert titles[2] == "Mine"


# --- prepared figures: reuse must not change or leak anything --------------------------


def candle_a() -> bytes:
    bars = random_bars(200, 1, start=START, start_price=50)
    close = bars["close"]
    averages = [("MA 5", chart_data.moving_average(close, 5)), ("MA 20", close * 0.99)]
    return charts.candlestick_chart(
        bars["date"].astype("datetime64[D]"),
        bars["open"],
        bars["high"],
        bars["low"],
        close,
        bars["volume"],
        averages,
        title="A candles",
        width=600,
        height=400,
    )


def candle_b() -> bytes:
    """Another range, price scale and title; no moving averages (so no legend)."""
    dates = weekdays(40, "2015-03-02")
    close = np.linspace(900, 1200, 40)
    return charts.candlestick_chart(
        dates,
        close + 5,
        close + 20,
        close - 20,
        close,
        close * 1e6,
        title="B",
        width=600,
        height=400,
    )


def line_a() -> bytes:
    dates = weekdays(300, START)
    return charts.line_chart(
        [("A", dates, np.linspace(10, 30, 300))], title="A line", width=600, height=400
    )


def line_b() -> bytes:
    """Several series (a legend), a zero line, another y label and range."""
    dates = weekdays(80, "2019-06-03")
    series = [(f"S{i}", dates, np.sin(np.arange(80) / (5 + i)) * 40) for i in range(3)]
    return charts.line_chart(
        series, title="B line", ylabel="Change (%)", zero_line=True, width=600, height=400
    )


@pytest.mark.parametrize("render_a, render_b", [(candle_a, candle_b), (line_a, line_b)])
def test_prepared_figure_reuse_is_identical_and_leaks_nothing(render_a, render_b):
    """A, B, A on one prepared figure: each image equals the one a fresh figure draws."""
    charts.drop_prepared()
    fresh_a = render_a()
    charts.drop_prepared()
    fresh_b = render_b()
    charts.drop_prepared()
    first_a = render_a()
    assert render_a() == first_a  # the same input twice: the same bytes
    b_after_a = render_b()
    a_after_b = render_a()
    assert b_after_a == fresh_b  # nothing of A (legend, lines, title, limits) left in B
    assert a_after_b == first_a == fresh_a
    assert b_after_a != first_a


def test_prepared_figures_stay_bounded_and_keep_no_old_artists():
    charts.drop_prepared()
    for width in range(300, 300 + 10 * (charts.MAX_PREPARED + 3), 10):
        charts.line_chart([("X", weekdays(30, START), np.arange(30.0))], title="t", width=width)
    assert len(charts._local.prepared) == charts.MAX_PREPARED
    for _ in range(5):
        candle_a()
    chart = charts._local.prepared[("price+volume", 600, 400)]
    counts = (len(chart.ax.get_children()), len(chart.vax.get_children()))
    candle_a()
    candle_a()
    assert charts._local.prepared[("price+volume", 600, 400)] is chart  # reused, and
    assert (len(chart.ax.get_children()), len(chart.vax.get_children())) == counts  # no growth
    chart.clear()
    assert not chart.ax.lines and not chart.ax.patches and chart.ax.legend_ is None
    assert not chart.vax.patches


def test_text_caches_draw_matplotlibs_own_pixels():
    """Cached shaping and glyph bitmaps give plain Agg's pixels: repeated strings at
    other sub-pixel and whole-pixel offsets, rotated, unantialiased, non-ASCII."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def draw(canvas_class) -> np.ndarray:
        fig = Figure(figsize=(3, 2), dpi=100)
        canvas = canvas_class(fig)
        fig.text(0.1, 0.5, "Price (USD) 123", fontsize=9.3, rotation=90)
        for i in range(4):
            fig.text(0.2 + 0.17 * i, 0.13 * i + 0.1, "2014 Aug", fontsize=8 + i)
            fig.text(0.2 + 0.17 * i + 0.013 * i, 0.07, "2014 Aug", fontsize=8)
        fig.suptitle("Title: €uro ünïcode", parse_math=False)
        fig.text(0.55, 0.8, "2014 Aug", antialiased=False, rotation=30)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba()).copy()

    plain = draw(FigureCanvasAgg)
    assert np.array_equal(draw(charts.Canvas), plain)
    assert np.array_equal(draw(charts.Canvas), plain)  # now from the cache


def test_png_encoder_takes_rgba_and_drops_alpha():
    rgba = np.random.default_rng(1).integers(0, 256, (9, 4, 4), dtype=np.uint8)
    with Image.open(io.BytesIO(charts.encode_png(rgba))) as img:
        assert img.mode == "RGB"
        assert np.array_equal(np.asarray(img), rgba[:, :, :3])
    with pytest.raises(ValueError, match="C-contiguous"):
        charts.encode_png(rgba[:, :, :3])  # a strided view: say so, do not encode garbage


@pytest.mark.parametrize("span_days", [3, 45, 400, 1830, 9000])
def test_remembered_date_ticks_match_matplotlib(span_days):
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    start = storage.to_day(dt.date(2015, 3, 2)) + 0.5
    ax.set_xlim(start, start + span_days)
    plain = mdates.AutoDateLocator(minticks=4, maxticks=10)
    plain.set_axis(ax.xaxis)
    expected_ticks = plain()
    plain_format = mdates.ConciseDateFormatter(plain)
    expected_labels = plain_format.format_ticks(expected_ticks)
    for _ in range(2):  # a miss, then a hit
        mine = charts.DateLocator()
        mine.set_axis(ax.xaxis)
        ticks = mine()
        assert np.array_equal(ticks, expected_ticks)
        formatter = charts.DateFormatter(mine)
        assert formatter.format_ticks(ticks) == expected_labels
        assert formatter.get_offset() == plain_format.get_offset()


def test_svg_on_a_prepared_figure_leaves_png_unchanged():
    """savefig(svg) swaps the canvas for a moment: the next PNG must be the same."""
    dates = weekdays(50, START)
    series = [("A", dates, np.linspace(1, 2, 50))]

    def draw(fmt: str) -> bytes:
        return charts.line_chart(series, title="t", width=500, height=300, fmt=fmt)

    def undated(svg: bytes) -> bytes:
        return re.sub(rb"<dc:date>[^<]*</dc:date>", b"", svg)  # matplotlib stamps the time

    png = draw("png")
    svg = undated(draw("svg"))
    assert draw("png") == png
    assert undated(draw("svg")) == svg


def test_a_render_cut_short_is_not_reused(monkeypatch):
    """An error mid-render (or a job interrupted) leaves the figure half-done: the next
    render of that layout and size builds a new one and draws the same image."""
    charts.drop_prepared()
    expected = candle_a()
    before = charts._local.prepared[("price+volume", 600, 400)]

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # what an interrupted job raises is not an Exception either

    monkeypatch.setattr(charts, "encode_png", fail)
    with pytest.raises(KeyboardInterrupt):
        candle_b()
    monkeypatch.undo()
    assert candle_a() == expected
    assert charts._local.prepared[("price+volume", 600, 400)] is not before
    # A finished render is reused as before.
    reused = charts._local.prepared[("price+volume", 600, 400)]
    candle_b()
    assert charts._local.prepared[("price+volume", 600, 400)] is reused
