"""``GET /metrics``: Prometheus text for operators, read from Redis at scrape time.

The figures are global state (prices loaded, queue depth, live workers), so every API
process answers the same and no multi-process registry is needed.
"""

from __future__ import annotations

import redis
from flask import Flask, Response, current_app
from flask_openapi3 import APIBlueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from stocks import storage
from stocks.api import context
from stocks.jobs import JobQueue

EXTENSION = "metrics_registry"


class StocksCollector:
    def __init__(self, prices: redis.Redis, queue: JobQueue):
        self.prices = prices
        self.queue = queue

    def collect(self):
        yield GaugeMetricFamily(
            "stocks_tickers", "Tickers with stored prices",
            value=storage.count_symbols(self.prices),
        )  # fmt: skip
        stats = self.queue.stats()
        yield GaugeMetricFamily(
            "stocks_jobs_waiting", "Chart jobs queued, not taken yet", value=stats["waiting"]
        )
        yield GaugeMetricFamily(
            "stocks_jobs_taken", "Chart jobs held by workers", value=stats["taken"]
        )
        yield GaugeMetricFamily(
            "stocks_workers", "Workers that heartbeated within the timeout", value=stats["workers"]
        )


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    with app.app_context():
        registry.register(StocksCollector(context.prices_db(), context.job_queue()))
    app.extensions[EXTENSION] = registry


bp = APIBlueprint("metrics", __name__)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    registry = current_app.extensions[EXTENSION]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
