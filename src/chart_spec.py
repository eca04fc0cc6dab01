"""What a chart job may ask for: shared by the API (validation) and the worker (drawing)."""

from __future__ import annotations

# (min, max) symbols per kind
SYMBOL_COUNTS = {"line": (1, 10), "candlestick": (1, 1), "compare": (2, 10), "benchmark": (1, 1)}
KINDS = tuple(SYMBOL_COUNTS)
CANDLESTICK_ONLY = ("volume", "moving_averages")
DEFAULT_OPTIONS = {
    "width": 1200,
    "height": 700,
    "format": "png",
    "title": None,
    "volume": True,
    "moving_averages": [],
}
PIXELS = (200, 4000)
MAX_MOVING_AVERAGES = 3
