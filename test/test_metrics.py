"""/metrics: what Redis holds (tickers, queue depth, held jobs, live workers, image bytes),
and what the processes count (requests, answer-cache hits, jobs), summed across processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import random_bars, wait_for
from obs_stack import http_call, load_series, start_api, start_worker, stop

from stocks import jobs, storage
from stocks.keys import IMAGE_BYTES_KEY, IMAGES_DB
from stocks.redis_server import free_port


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_metrics_follow_the_data_and_the_queue(r0, client, settings):
    storage.replace_series(r0, "AAPL", random_bars(5, start="2017-01-02"), {})

    queue = jobs.JobQueue(settings, "metrics-worker")
    for _ in range(3):
        queue.put("line", {"symbols": ["AAPL"]})
    queue.heartbeat()
    taken = queue.get(timeout=0.1)
    assert taken is not None

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert metric(text, "stocks_tickers") == 1
    assert metric(text, "stocks_jobs_waiting") == 2
    assert metric(text, "stocks_jobs_taken") == 1
    assert metric(text, "stocks_workers") == 1


# --- counted metrics: requests, answer cache, jobs; across processes ----------------------

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sample(text: str, name: str, **labels: str) -> float:
    """The value of ``name{labels}`` in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            metric, value = line.rsplit(" ", 1)
            found = dict(LABEL.findall(metric[len(name) :]))
            if metric.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
                return float(value)
    return 0.0


def test_metrics_content_type_has_one_charset(client):
    resp = client.get("/metrics")
    assert resp.headers["Content-Type"].count("charset") == 1
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].count("charset") == 1
    assert om.get_data(as_text=True).rstrip().endswith("# EOF")


def test_image_bytes_against_the_budget(client, settings):
    settings.redis(IMAGES_DB).set(IMAGE_BYTES_KEY, 12345)
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "stocks_image_bytes") == 12345
    assert metric(text, "stocks_image_budget_bytes") == settings.image_budget_mb * 1024 * 1024


def test_requests_and_cache_hits_are_counted_by_route_template(client, r0):
    load_series(r0)
    before = client.get("/metrics").get_data(as_text=True)
    url = "/tickers/AAPL/stats?period=1mo&end=2016-06-01"
    for _ in range(3):
        assert client.get(url).status_code == 200  # a miss, then two hits
    assert client.get("/tickers/NOPE/stats").status_code == 404
    after = client.get("/metrics").get_data(as_text=True)

    def rose(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = "/tickers/<symbol>/stats"
    assert rose("stocks_http_requests_total", method="GET", route=route, status="200") == 3
    assert rose("stocks_http_requests_total", method="GET", route=route, status="404") == 1
    assert rose("stocks_http_request_duration_seconds_count", route=route) == 4
    assert rose("stocks_answer_cache_hits_total") == 2
    assert rose("stocks_answer_cache_misses_total") == 1


def promtool() -> str:
    """Debian's promtool: installed when root with apt, else the test skips saying why."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("promtool absent (Debian package prometheus) and not root to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    return shutil.which("promtool") or pytest.skip("apt could not install prometheus")


def check_with_promtool(text: str) -> None:
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_counts_are_summed_across_server_and_worker_processes(tmp_path, r0, redis_url):
    """`stocks serve --workers 2` and `stocks worker --concurrency 2`: N requests raise the
    counter by exactly N whichever process answered; N jobs finish N times; promtool agrees."""
    load_series(r0)
    metrics_dir = tmp_path / "metrics"
    port, api = start_api(
        redis_url, tmp_path / "api.log", workers=2, STOCKS_METRICS_DIR=str(metrics_dir)
    )
    worker_port = free_port()
    worker = start_worker(
        redis_url, tmp_path / "worker.log", "--concurrency", "2",
        "--metrics-port", str(worker_port), STOCKS_METRICS_DIR=str(metrics_dir),
    )  # fmt: skip
    try:
        url = "/tickers/AAPL/prices?start=2016-03-01&end=2016-03-31"
        route = "/tickers/<symbol>/prices"

        def count() -> float:
            text = http_call(port, "GET", "/metrics")[2].decode()
            return sample(text, "stocks_http_requests_total", route=route, status="200")

        def pids() -> set[str]:  # the server processes that have counted something
            return {p.stem.rsplit("_", 1)[1] for p in (metrics_dir / "api").glob("counter_*.db")}

        start = count()
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 40 or (len(pids()) < 2 and sent < 2000):
                statuses = list(pool.map(lambda _: http_call(port, "GET", url)[0], range(20)))
                assert statuses == [200] * 20
                sent += 20
        assert len(pids()) >= 2, "every request went to one server process"
        assert count() - start == sent

        kinds = ["line"] * 3 + ["candlestick"] * 2
        for i, kind in enumerate(kinds):
            body = {"kind": kind, "symbols": ["AAPL"], "options": {"width": 400 + i}}
            assert http_call(port, "POST", "/jobs", body)[0] == 202
        api_text = http_call(port, "GET", "/metrics")[2].decode()
        assert sample(api_text, "stocks_jobs_enqueued_total", kind="line") == 3
        assert sample(api_text, "stocks_jobs_enqueued_total", kind="candlestick") == 2

        def worker_text() -> str:
            try:
                status, headers, body = http_call(worker_port, "GET", "/metrics")
            except OSError:
                return ""
            assert status == 200 and headers["content-type"].count("charset") == 1
            return body.decode()

        def all_finished() -> str | None:
            text = worker_text()
            done = sum(sample(text, "stocks_jobs_finished_total", kind=k) for k in set(kinds))
            return text if done == len(kinds) else None

        text = wait_for(all_finished, timeout=90, what="5 jobs finished")
        assert sample(text, "stocks_jobs_finished_total", kind="line") == 3
        assert sample(text, "stocks_chart_render_seconds_count", kind="candlestick") == 2
        assert sample(text, "stocks_job_queue_wait_seconds_count", kind="line") == 3
        assert len({p.stem for p in (metrics_dir / "worker").glob("*.db")}) >= 1
        check_with_promtool(text)
        check_with_promtool(http_call(port, "GET", "/metrics")[2].decode())
        assert http_call(worker_port, "GET", "/health")[0] == 200
    finally:
        stop(worker)
        stop(api)


def test_a_made_up_method_cannot_grow_the_request_labels(client):
    for method in ("FOOBAR", "XYZZY"):
        assert client.open("/tickers", method=method).status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="OTHER"' in text
    assert "FOOBAR" not in text and "XYZZY" not in text
