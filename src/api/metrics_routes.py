"""``GET /metrics``: Prometheus text for operators, read from Redis at scrape time.

The figures are global state (prices loaded, queue depth, live workers), so every API
process answers the same and no multi-process registry is needed.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from stocks import jobs, storage
from stocks.config import STOCKS_DB, redis_client


class StocksCollector:
    def collect(self):
        yield GaugeMetricFamily(
            "stocks_tickers", "Tickers with stored prices",
            value=storage.count_symbols(redis_client(STOCKS_DB)),
        )  # fmt: skip
        stats = jobs.queue_stats()
        yield GaugeMetricFamily(
            "stocks_jobs_waiting", "Chart jobs queued, not taken yet", value=stats["waiting"]
        )
        yield GaugeMetricFamily(
            "stocks_jobs_taken", "Chart jobs held by workers", value=stats["taken"]
        )
        yield GaugeMetricFamily(
            "stocks_workers", "Workers that heartbeated within the timeout", value=stats["workers"]
        )


registry = CollectorRegistry(auto_describe=False)
registry.register(StocksCollector())


bp = APIBlueprint("metrics", __name__)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
