"""Pure chart drawing: numpy columns in, PNG or SVG bytes out.

Why it looks like this:
- A bare ``Figure`` on an Agg canvas, never pyplot: no global figure registry and no
  backend selection.
- One prepared figure per (layout, size) per thread, made and styled once: a render
  swaps only the data artists, limits and texts (``Prepared``). At most MAX_PREPARED are
  kept, so memory stays flat over thousands of renders.
- Text is most of what remains: the renderer keeps each string's shaping and each
  glyph's bitmap per sub-pixel offset (``CachingRenderer``), date ticks are kept per
  x range. All of these give matplotlib's own pixels; tests compare them.
- Candles, wicks and volume bars are one compound path per colour instead of one patch
  per bar. ``mplfinance`` draws 1,260 volume bars as 1,260 ``Rectangle`` artists, which
  is most of its ~0.8 s for five years; one stroked path is one Agg call.
- Fixed pixel margins instead of ``tight_layout``/``bbox_inches="tight"``: no text
  measuring pass, and the image is exactly ``width`` x ``height`` pixels.
- Dates arrive as int days since 1970-01-01, which is what matplotlib's date axis uses
  (its default epoch), so no datetime conversion happens at all.
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.figure import Figure
from matplotlib.ft2font import RenderMode
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.ticker import FuncFormatter, MaxNLocator

DPI = 100
PNG_COMPRESS_LEVEL = 1  # with the run-length strategy, higher levels gain nothing
CONTENT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}

UP = "#26a69a"
DOWN = "#ef5350"
LINE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MA_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd")

# Margins in pixels (left, right, top, bottom); converted to fractions per figure size.
MARGINS = (72, 24, 36, 44)
VOLUME_SHARE = 0.25  # part of the plot height given to the volume panel
PANEL_GAP = 8  # pixels between price and volume panels
MAX_BAR_PX = 40.0  # a handful of bars should not become slabs


def content_type(fmt: str) -> str:
    return CONTENT_TYPES[fmt]


# --- figure plumbing -------------------------------------------------------------------


class CachingRenderer(RendererAgg):
    """RendererAgg that remembers how each string was shaped and each glyph rendered.

    matplotlib 3.11 shapes every string it draws (FreeType + HarfBuzz, ~0.1-0.3 ms a
    string) and renders every glyph anew, although a chart's strings repeat: tick
    labels, axis labels, legend entries. Shaping depends only on the font, size, text
    and flags, so it is kept; glyph bitmaps are kept per sub-pixel offset (see
    ``_draw_glyphs``). Plain text only: mathtext, font features and languages take
    matplotlib's own path. This uses matplotlib's private text API (``_layout``,
    ``_render_glyph``), pinned with matplotlib; tests compare the pixels with plain Agg.
    """

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        features = mtext.get_fontfeatures() if mtext is not None else None
        language = mtext.get_language() if mtext is not None else None
        if ismath or features is not None or language is not None:
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        font = self._prepare_font(prop)
        size = prop.get_size_in_points()
        flags = get_hinting_flag()
        glyphs = remembered(
            _shaped,
            (font, size, self.dpi, flags, s),
            lambda: tuple(
                (item.ft_object, size, item.glyph_index, 0, 1, item.x, item.y)
                for item in font._layout(s, flags=flags)
            ),
        )
        self._draw_glyphs(gc, x, y, angle, glyphs)
        return None

    def _draw_glyphs(self, gc, x: float, y: float, angle: float, glyphs) -> None:
        """matplotlib's glyph loop (``_draw_text_glyphs_and_boxes``) with each glyph's
        bitmap kept per sub-pixel offset.

        FreeType places a glyph in 1/64 pixel steps; a whole-pixel shift moves its
        bitmap without changing it, so a glyph is rendered once per font, size, angle and
        sub-pixel offset, then only copied: repeated labels cost a copy, not a render.
        """
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        matrix = (0x10000 * np.array([[cos, -sin], [sin, cos]])).round().astype(int)
        flags = get_hinting_flag()
        antialiased = gc.get_antialiased()
        for font, size, glyph_index, _slant, _extend, dx, dy in glyphs:
            gx = round(0x40 * (x + dx * cos - dy * sin))
            gy = round(0x40 * (self.height - y + dx * sin + dy * cos))  # FreeType: y up
            sub = (gx & 63, gy & 63)

            def render(font=font, size=size, glyph_index=glyph_index, sub=sub):
                font.set_size(size, self.dpi)
                font._set_transform(matrix, list(sub))
                mode = RenderMode.NORMAL if antialiased else RenderMode.MONO
                bitmap = font._render_glyph(glyph_index, flags, mode)
                buffer = bitmap.buffer if antialiased else bitmap.buffer * 0xFF
                return buffer.copy(), bitmap.left, bitmap.top

            key = (font, size, self.dpi, glyph_index, angle, sub, flags, antialiased)
            buffer, left, top = remembered(_glyphs, key, render)
            top += gy >> 6
            self._renderer.draw_text_image(
                buffer, left + (gx >> 6), int(self.height) - top + buffer.shape[0], 0, gc
            )


MAX_REMEMBERED = 2000  # entries per cache below; a chart adds at most ~30


def remembered(cache: dict, key, compute):
    """cache[key], computed on a miss; a full cache is emptied (bounded memory)."""
    value = cache.get(key)
    if value is None:
        value = compute()
        if len(cache) >= MAX_REMEMBERED:
            cache.clear()
        cache[key] = value
    return value


_shaped: dict[tuple, tuple] = {}  # (font, size, dpi, flags, text) -> glyphs
_glyphs: dict[tuple, tuple] = {}  # (font, size, dpi, glyph, angle, sub-pixel, ...) -> bitmap
_date_ticks: dict[tuple[float, float], np.ndarray] = {}  # view interval -> tick days
_date_labels: dict[tuple, tuple[tuple[str, ...], str]] = {}  # ticks -> labels, offset


class DateLocator(mdates.AutoDateLocator):
    """AutoDateLocator that remembers its ticks per view interval.

    Its rrule search costs ~1 ms; the price and volume panels share one x range, and
    every chart of the same dates (all five-year charts) asks the same question. The
    answer depends only on the interval (the settings are fixed here).
    """

    def __init__(self) -> None:
        super().__init__(minticks=4, maxticks=10)

    def __call__(self):
        key = tuple(float(v) for v in self.axis.get_view_interval())
        ticks = remembered(_date_ticks, key, lambda: np.array(super(DateLocator, self).__call__()))
        return ticks.copy()


class DateFormatter(mdates.ConciseDateFormatter):
    """ConciseDateFormatter that remembers labels and offset text per set of ticks."""

    offset = ""

    def format_ticks(self, values):
        def compute():
            labels = tuple(super(DateFormatter, self).format_ticks(values))
            return labels, super(DateFormatter, self).get_offset()

        labels, self.offset = remembered(_date_labels, tuple(float(v) for v in values), compute)
        return list(labels)

    def get_offset(self) -> str:
        return self.offset


class Canvas(FigureCanvasAgg):
    """An Agg canvas whose renderer is a CachingRenderer (kept while the size stays)."""

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = CachingRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer


class Prepared:
    """A figure whose axes were made and styled once; a render swaps only the data.

    Making a Figure and its Axes (spines, axis objects, a dozen ticks each with lines
    and labels) and styling them cost more than half of a chart, the same work every
    time. A prepared figure keeps all of that: a render removes the previous render's
    data artists and legend, sets the per-chart text and limits, adds its own artists
    and draws. Everything a render sets, it sets every time, so the image depends only
    on the call's arguments (tests render A, B, A and compare A's bytes).
    """

    def __init__(self, layout: str, width: int, height: int) -> None:
        self.fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        Canvas(self.fig)
        self.png_scratch: dict = {}  # encode_png's working arrays, kept for the next render
        # False from hand-out until the image is encoded: a render cut short (an error, a
        # job interrupted past its grace period) may leave any state, so it is not reused.
        self.finished = True
        left, bottom, w, hgt = _plot_box(width, height)
        if layout == "price+volume":
            gap = PANEL_GAP / height
            vol_h = (hgt - gap) * VOLUME_SHARE
            self.box = (left, bottom + vol_h + gap, w, hgt - vol_h - gap)
            self.ax = self.fig.add_axes(self.box)
            self.vax = self.fig.add_axes((left, bottom, w, vol_h), sharex=self.ax)
        else:
            self.box = (left, bottom, w, hgt)
            self.ax = self.fig.add_axes(self.box)
            self.vax = None
        _style(self.ax)
        if self.vax is not None:
            _style(self.vax)
            self.vax.yaxis.set_major_formatter(FuncFormatter(_volume_label))
            self.vax.yaxis.set_major_locator(MaxNLocator(3))
            _labels(self.vax, "Date", "Volume")
            self.ax.tick_params(labelbottom=False)
            # The price panel has no x label, but left to place one, matplotlib would
            # measure both panels' tick labels on every draw (~3 ms): fix its position.
            self.ax.xaxis.set_label_coords(0.5, 0.0)

    def clear(self) -> None:
        """Remove the last render's data artists and legend (axes, ticks and labels stay)."""
        for ax in (self.ax, self.vax):
            if ax is None:
                continue
            for artist in (*ax.lines, *ax.patches, *ax.collections, *ax.texts):
                artist.remove()
            if ax.legend_ is not None:
                ax.legend_.remove()


_local = threading.local()  # matplotlib objects are not thread-safe: one cache per thread
MAX_PREPARED = 4  # (layout, width, height) entries: ~8.5 MB each at 1200x700 (Agg + PNG)
MAX_CACHED_PIXELS = 2_000_000  # 8 MB of RGBA; bigger images get a throwaway figure


def drop_prepared() -> None:
    """Forget this thread's prepared figures (the next render of each builds anew)."""
    _local.__dict__.pop("prepared", None)


def prepared(layout: str, width: int, height: int) -> Prepared:
    """This thread's prepared figure for the layout and size, cleared for a new render.

    At most MAX_PREPARED are kept (least recently used dropped), each holding only its
    last render's artists, so memory stays flat however many charts are drawn.
    """
    if width * height > MAX_CACHED_PIXELS:
        return Prepared(layout, width, height)
    cache: OrderedDict[tuple[str, int, int], Prepared] = _local.__dict__.setdefault(
        "prepared", OrderedDict()
    )
    key = (layout, width, height)
    entry = cache.pop(key, None)
    if entry is None or not entry.finished:
        entry = Prepared(layout, width, height)
        while len(cache) >= MAX_PREPARED:
            cache.popitem(last=False)
    else:
        entry.clear()
    entry.finished = False
    cache[key] = entry
    return entry


def _plot_box(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, bottom, plot width, plot height) as figure fractions for the fixed margins."""
    left, right, top, bottom = MARGINS
    # Small images keep a usable plot area: margins never take more than half a side.
    sx = min(1.0, 0.5 * width / (left + right))
    sy = min(1.0, 0.5 * height / (top + bottom))
    l_px, r_px, t_px, b_px = left * sx, right * sx, top * sy, bottom * sy
    return (
        l_px / width,
        b_px / height,
        (width - l_px - r_px) / width,
        (height - t_px - b_px) / height,
    )


def _date_axis(ax) -> None:
    locator = DateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateFormatter(locator))


def _x_limits(ax, first_day: float, last_day: float) -> None:
    # At least 2 days each side, so one or two bars get day ticks rather than hours.
    pad = max(2.0, (last_day - first_day) * 0.01)
    ax.set_xlim(first_day - pad, last_day + pad)


def _y_limits(ax, lo: float, hi: float) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        span = abs(hi) * 0.05 or 1.0
        lo, hi = lo - span, hi + span
    pad = (hi - lo) * 0.04
    ax.set_ylim(lo - pad, hi + pad)


def _font_scale(ax) -> float:
    """Shrink text on small images so labels still fit (full size from ~900x500 up)."""
    bbox = ax.figure.bbox
    return max(0.6, min(1.0, bbox.width / 900.0, bbox.height / 500.0))


def _style(ax) -> None:
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    size = 10 * _font_scale(ax)
    ax.tick_params(labelsize=size)
    ax.xaxis.get_offset_text().set_fontsize(size)
    ax.yaxis.get_offset_text().set_fontsize(size)


def _legend(ax) -> None:
    # A fixed corner: loc="best" tries every position against every line point (slow).
    ax.legend(loc="upper left", fontsize=8.5 * _font_scale(ax), framealpha=0.85)


def _labels(ax, xlabel: str | None, ylabel: str | None) -> None:
    """Axis labels at fixed pixel offsets from the axes.

    Placing them explicitly skips matplotlib's auto-placement, which measures every tick
    label on each draw (~10 ms per chart).
    """
    bbox = ax.get_position()
    fig_w, fig_h = ax.figure.bbox.width, ax.figure.bbox.height
    ax_w, ax_h = bbox.width * fig_w, bbox.height * fig_h
    size = 10 * _font_scale(ax)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=size)
        ax.yaxis.set_label_coords(-min(50.0, bbox.x0 * fig_w * 0.7) / ax_w, 0.5)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=size)
        ax.xaxis.set_label_coords(0.5, -min(24.0, bbox.y0 * fig_h * 0.55) / ax_h)


def _title(ax, title: str) -> None:
    # An explicit y turns off matplotlib's title auto-positioning (a tight-bbox pass).
    # parse_math=False: a user title like "from $5 to $10" is text, not mathtext.
    ax.set_title(title, y=1.0, pad=8, fontsize=12 * _font_scale(ax), parse_math=False)


def save(chart: Prepared, fmt: str, width: int, height: int) -> bytes:
    """Encode the figure; PNG is exactly width x height, SVG declares that size in px."""
    fig = chart.fig
    if fmt == "png":
        canvas = fig.canvas
        canvas.draw()
        image = encode_png(np.asarray(canvas.buffer_rgba()), chart.png_scratch)
    elif fmt == "svg":
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "stocks"}):
            fig.savefig(buf, format="svg", dpi=DPI)
        image = _svg_pixel_size(buf.getvalue(), width, height)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    chart.finished = True
    return image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def encode_png(rgb: np.ndarray, scratch: dict | None = None) -> bytes:
    """An 8-bit RGB PNG from an (h, w, 3) or (h, w, 4) uint8 array (alpha dropped).

    Why not Pillow: its per-row adaptive filtering costs ~20 ms on a 1200x700 chart at any
    zlib level. Charts are mostly flat colour, so every row gets filter "Up" (the byte
    above subtracted): flat areas and whole unchanged rows become runs of zeros, which
    zlib's run-length strategy packs smaller than level 1 of its default strategy, and
    faster. The RGBA -> RGB copy moves 3-byte items in one numpy pass (a byte-wise
    strided copy took ~4 ms). ``scratch``, a dict the caller keeps, holds the two
    working arrays between calls: fresh 2.5 MB arrays cost ~2 ms in page faults.
    """
    h, w = rgb.shape[:2]
    scratch = {} if scratch is None else scratch
    if scratch.get("shape") != (h, w):
        scratch["shape"] = (h, w)
        scratch["pixels"] = np.empty((h, w), dtype="V3")
        scratch["raw"] = np.empty((h, w * 3 + 1), dtype=np.uint8)
    pixels, raw = scratch["pixels"], scratch["raw"]
    pixels[...] = rgb.view(_rgb_in(rgb.shape[2], rgb.strides[1]))["rgb"].reshape(h, w)
    rows = pixels.view(np.uint8).reshape(h, w * 3)
    raw[:, 0] = 2  # filter type "Up" on every row (the first row's "above" is zeros)
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # uint8 wraps: mod 256, as PNG says
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", deflate.compress(raw) + deflate.flush()),
            _png_chunk(b"IEND", b""),
        )
    )


def _rgb_in(channels: int, item_stride: int) -> np.dtype:
    """A dtype that sees the first three bytes of each pixel as one 3-byte item."""
    if channels not in (3, 4) or item_stride != channels:
        raise ValueError("expected a C-contiguous (h, w, 3) or (h, w, 4) uint8 array")
    return np.dtype({"names": ["rgb"], "formats": ["V3"], "offsets": [0], "itemsize": channels})


_SVG_SIZE = re.compile(rb'<svg([^>]*?) width="[^"]*" height="[^"]*"')


def _svg_pixel_size(svg: bytes, width: int, height: int) -> bytes:
    """matplotlib sizes SVGs in points; declare pixels so a browser shows width x height.

    The viewBox (in points) stays, so the drawing scales into the pixel box unchanged.
    """
    head, tail = svg[:2000], svg[2000:]
    head = _SVG_SIZE.sub(
        lambda m: b'<svg%s width="%dpx" height="%dpx"' % (m.group(1), width, height),
        head,
        count=1,
    )
    return head + tail


def _as_days(dates: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as float, from int days or datetime64."""
    dates = np.asarray(dates)
    if dates.dtype.kind == "M":
        dates = dates.astype("datetime64[D]").astype(np.int64)
    return dates.astype(np.float64)


# --- chart kinds -----------------------------------------------------------------------


def line_chart(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    title: str,
    ylabel: str = "Price (USD)",
    width: int = 1200,
    height: int = 700,
    fmt: str = "png",
    zero_line: bool = False,
) -> bytes:
    """One line per (label, dates, values); a legend when there is more than one.

    NaN values leave gaps. ``zero_line`` draws y=0 (for % change charts).
    """
    chart = prepared("single", width, height)
    ax = chart.ax
    lo, hi = np.inf, -np.inf
    first, last = np.inf, -np.inf
    for i, (label, dates, values) in enumerate(series):
        x = _as_days(dates)
        y = np.asarray(values, dtype=np.float64)
        if len(x) == 0:
            continue
        ax.plot(x, y, color=LINE_COLOURS[i % len(LINE_COLOURS)], linewidth=1.2, label=label)
        first, last = min(first, x[0]), max(last, x[-1])
        if np.isfinite(y).any():
            lo, hi = min(lo, np.nanmin(y)), max(hi, np.nanmax(y))
    if zero_line:
        ax.axhline(0.0, color="#888888", linewidth=0.8, zorder=1)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if np.isfinite(first):
        _x_limits(ax, first, last)
    else:
        ax.set_xlim(0.0, 1.0)  # no data: never the previous chart's range
    _y_limits(ax, lo, hi)
    _date_axis(ax)
    _labels(ax, "Date", ylabel)
    _title(ax, title)
    if len(series) > 1:
        _legend(ax)
    return save(chart, fmt, width, height)


def _volume_label(value: float, _pos=None) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _is_up(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Up bars: close >= open; without an open, close >= the previous close."""
    prev_close = np.concatenate(([np.nan], close[:-1]))
    reference = np.where(np.isfinite(open_), open_, prev_close)
    return ~(close < reference)


def stroke_segments(
    x: np.ndarray, y0: np.ndarray, y1: np.ndarray, colour: str, width_px: float, alpha=None
) -> PathPatch | None:
    """Vertical segments (x, y0)-(x, y1) as ONE compound path, stroked with butt caps.

    A stroke of width w with butt caps is exactly a w-wide rectangle, so this draws
    wicks, candle bodies and volume bars alike. One path is one Agg call: ~3x faster
    than a LineCollection or PolyCollection of the same shapes (no per-item setup).
    """
    n = len(x)
    if n == 0:
        return None
    verts = np.empty((n, 2, 2))
    verts[:, 0, 0] = verts[:, 1, 0] = x
    verts[:, 0, 1] = y0
    verts[:, 1, 1] = y1
    codes = np.tile(np.array([Path.MOVETO, Path.LINETO], dtype=Path.code_type), n)
    path = Path(verts.reshape(-1, 2), codes)
    path.should_simplify = False  # simplification could merge neighbouring bars
    return PathPatch(
        path,
        fill=False,
        edgecolor=colour,
        linewidth=width_px * 72.0 / DPI,
        capstyle="butt",
        alpha=alpha,
    )


def _add(ax, artists) -> None:
    # add_artist, not add_patch: add_patch walks every path segment in Python to update
    # data limits (~40 ms here), and the limits are set explicitly anyway.
    for artist in artists:
        if artist is not None:
            ax.add_artist(artist)


def candle_artists(
    days: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    body_px: float,
    min_body: float,
) -> list[PathPatch | None]:
    """Wicks and bodies, one compound path per colour and part.

    A bar without a close is skipped. A bar without an open gets no body (its wick still
    shows the range); a missing high or low falls back to the body's edge. Bodies are at
    least ``min_body`` tall (one pixel in data units) so doji bars stay visible.
    """
    has_close = np.isfinite(close)
    has_open = np.isfinite(open_)
    body_top = np.where(has_open, np.fmax(open_, close), close)
    body_bottom = np.where(has_open, np.fmin(open_, close), close)
    wick_hi = np.where(np.isfinite(high), np.fmax(high, body_top), body_top)
    wick_lo = np.where(np.isfinite(low), np.fmin(low, body_bottom), body_bottom)
    short = (body_top - body_bottom) < min_body
    mid = (body_top + body_bottom) / 2.0
    body_top = np.where(short, mid + min_body / 2.0, body_top)
    body_bottom = np.where(short, mid - min_body / 2.0, body_bottom)
    up = _is_up(open_, close)
    wick_px = min(1.0, body_px)
    out = []
    for colour, side in ((UP, up), (DOWN, ~up)):
        w = has_close & side
        out.append(stroke_segments(days[w], wick_lo[w], wick_hi[w], colour, wick_px))
        b = w & has_open
        out.append(stroke_segments(days[b], body_bottom[b], body_top[b], colour, body_px))
    return out


def volume_artists(
    days: np.ndarray, volume: np.ndarray, up: np.ndarray, bar_px: float
) -> list[PathPatch | None]:
    """Volume bars from zero, one compound path per colour (missing volume: no bar)."""
    ok = np.isfinite(volume)
    out = []
    for colour, side in ((UP, up), (DOWN, ~up)):
        m = ok & side
        out.append(
            stroke_segments(days[m], np.zeros(int(m.sum())), volume[m], colour, bar_px, 0.75)
        )
    return out


def _bar_px(days: np.ndarray, x_span: float, axes_px: float) -> float:
    """Bar width in pixels: 70% of the usual gap between bars, 1 to MAX_BAR_PX pixels."""
    gap = float(np.median(np.diff(days))) if len(days) > 1 else 1.0
    return min(MAX_BAR_PX, max(1.0, 0.7 * gap * axes_px / max(x_span, 1.0)))


def candlestick_chart(
    dates: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray | None = None,
    moving_averages: Sequence[tuple[str, np.ndarray]] = (),
    *,
    title: str,
    width: int = 1200,
    height: int = 700,
    fmt: str = "png",
) -> bytes:
    """OHLC candles, optional moving-average lines, optional volume panel below.

    ``volume`` is float with NaN for missing cells (None: no volume panel);
    ``moving_averages`` are (label, values aligned with dates).
    """
    days = _as_days(dates)
    o, h, lo_, c = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close))
    chart = prepared("single" if volume is None else "price+volume", width, height)
    ax, vax, price_box = chart.ax, chart.vax, chart.box

    lo, hi = np.inf, -np.inf
    for arr in (lo_, h, o, c):
        if np.isfinite(arr).any():
            lo, hi = min(lo, np.nanmin(arr)), max(hi, np.nanmax(arr))
    if len(days):
        _x_limits(ax, days[0], days[-1])
    else:
        ax.set_xlim(0.0, 1.0)  # no data: never the previous chart's range
    _y_limits(ax, lo, hi)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax_w_px, ax_h_px = price_box[2] * width, price_box[3] * height
    bar_px = _bar_px(days, x1 - x0, ax_w_px)
    _add(ax, candle_artists(days, o, h, lo_, c, bar_px, (y1 - y0) / max(ax_h_px, 1.0)))
    for i, (label, values) in enumerate(moving_averages):
        ax.plot(days, values, color=MA_COLOURS[i % len(MA_COLOURS)], linewidth=1.1, label=label)
    _labels(ax, None if vax is not None else "Date", "Price (USD)")
    _title(ax, title)
    if moving_averages:
        _legend(ax)
    _date_axis(ax)

    if vax is not None:
        vols = np.asarray(volume, dtype=np.float64)
        _add(vax, volume_artists(days, vols, _is_up(o, c), bar_px))
        top = np.nanmax(vols) if np.isfinite(vols).any() else 1.0
        vax.set_ylim(0, (top or 1.0) * 1.05)
        _date_axis(vax)
    return save(chart, fmt, width, height)
