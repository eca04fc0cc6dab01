"""``GET /metrics``: Prometheus text for operators.

Two kinds of figures. Global state read from Redis at scrape time (prices loaded, queue
depth, held jobs, live workers, image bytes against the budget): every API process
answers the same. And what the API processes count themselves (requests, latency,
answer-cache hits, jobs enqueued and cancelled): summed over all processes of the
server by prometheus-client's multiprocess mode (``stocks.metrics``).
"""

from __future__ import annotations

import redis
from flask import Flask, Response, current_app, request
from flask_openapi3 import APIBlueprint
from prometheus_client.core import GaugeMetricFamily

from stocks import metrics as counted
from stocks import storage
from stocks.api import context
from stocks.jobs import JobQueue
from stocks.keys import IMAGE_BYTES_KEY, IMAGES_DB

EXTENSION = "metrics_registry"


class StocksCollector:
    def __init__(self, prices: redis.Redis, queue: JobQueue, images: redis.Redis):
        self.prices = prices
        self.queue = queue
        self.images = images

    def collect(self):
        """The Redis-read gauges; while Redis does not answer, only ``stocks_redis_up`` 0,
        so a scrape still gets what the processes counted (an outage is when it matters)."""
        try:
            tickers = storage.count_symbols(self.prices)
            stats = self.queue.stats()
            image_bytes = int(self.images.get(IMAGE_BYTES_KEY) or 0)
            budget = self.queue.kept_image_budget()  # the workers' own, as they said it
        except redis.RedisError:
            yield GaugeMetricFamily("stocks_redis_up", "Whether Redis answered this scrape", 0)
            return
        yield GaugeMetricFamily("stocks_redis_up", "Whether Redis answered this scrape", 1)
        yield GaugeMetricFamily("stocks_tickers", "Tickers with stored prices", value=tickers)
        yield GaugeMetricFamily(
            "stocks_jobs_waiting", "Chart jobs queued, not taken yet", value=stats["waiting"]
        )
        yield GaugeMetricFamily(
            "stocks_jobs_taken", "Chart jobs held by workers", value=stats["taken"]
        )
        yield GaugeMetricFamily(
            "stocks_workers", "Workers that heartbeated within the timeout", value=stats["workers"]
        )
        yield GaugeMetricFamily(
            "stocks_image_bytes", "Bytes of chart images kept in Redis", value=image_bytes
        )
        yield GaugeMetricFamily(
            "stocks_image_budget_bytes",
            "Most bytes of chart images kept (STOCKS_IMAGE_BUDGET_MB)",
            value=budget,
        )


def init_app(app: Flask) -> None:
    with app.app_context():
        settings = context.settings()
        registry = counted.registry(settings)
        images = settings.redis(IMAGES_DB, timeout=settings.redis_timeout)
        registry.register(StocksCollector(context.prices_db(), context.job_queue(), images))
    app.extensions[EXTENSION] = registry


bp = APIBlueprint("metrics", __name__)


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    body, content_type = counted.exposition(
        current_app.extensions[EXTENSION], request.headers.get("Accept")
    )
    # content_type, not mimetype: Flask would add a second charset to a text/* mimetype
    return Response(body, content_type=content_type)
