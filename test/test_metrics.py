"""/metrics reports what Redis holds: tickers, queue depth, held jobs, live workers."""

from __future__ import annotations

import numpy as np

from stocks import jobs, storage


def metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def test_metrics_follow_the_data_and_the_queue(r0, client, settings):
    days = np.arange(np.datetime64("2017-01-02"), np.datetime64("2017-01-07"))
    storage.replace_series(r0, "AAPL", storage.make_bars(days, *[[1.0] * 5] * 4, [1] * 5), {})

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
