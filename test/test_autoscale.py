"""`stocks autoscale`: the decision (a pure function) and its calls to the Kubernetes API.

No Kubernetes cluster can run on these machines (no container engine, no kubelet). So the
official client's calls are made to a local HTTP server that answers the two endpoints the
Role allows, GET and PATCH of /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale, as
the API server does; the queue depth comes from a real Redis with real jobs in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stocks import autoscale
from stocks.autoscale import Autoscaler, DeploymentScale, Policy, decide, desired_replicas
from stocks.config import Settings
from stocks.jobs import JobQueue

kubernetes = pytest.importorskip("kubernetes")

POLICY = Policy(min_replicas=1, max_replicas=8, jobs_per_worker=4, scale_down_window=60)


# --- the decision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waiting", "running", "replicas"),
    [
        (0, 0, 1),  # never below one: the reaper runs in the workers
        (1, 0, 1),
        (4, 0, 1),
        (5, 0, 2),  # ceil
        (3, 2, 2),  # running jobs count as much as waiting ones
        (31, 1, 8),
        (33, 0, 8),  # clamped to max
        (10_000, 5, 8),
    ],
)
def test_desired_replicas_is_clamped_ceil_of_jobs_per_worker(waiting, running, replicas):
    assert desired_replicas(waiting, running, POLICY) == replicas


def test_desired_replicas_honours_min_and_never_goes_below_one():
    assert desired_replicas(0, 0, Policy(min_replicas=3, max_replicas=8)) == 3
    assert desired_replicas(0, 0, Policy(min_replicas=0, max_replicas=8)) == 1
    assert desired_replicas(100, 0, Policy(min_replicas=0, max_replicas=0)) == 1
    assert desired_replicas(9, 0, Policy(jobs_per_worker=1, max_replicas=20)) == 9


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window():
    history: list = []
    replicas, history = decide(20, 0, history, now=0.0, policy=POLICY)
    assert replicas == 5
    replicas, history = decide(0, 0, history, now=10.0, policy=POLICY)
    assert replicas == 5  # the queue emptied, but 5 was asked for within the window
    replicas, history = decide(30, 2, history, now=20.0, policy=POLICY)
    assert replicas == 8  # up at once
    replicas, history = decide(0, 0, history, now=70.0, policy=POLICY)
    assert replicas == 8  # 8 was asked for 50 s ago
    replicas, history = decide(4, 0, history, now=80.0, policy=POLICY)
    assert replicas == 1  # every recommendation of the last 60 s says 1
    assert [n for _, n in history] == [1, 1]  # old entries are dropped, not kept forever


def test_policy_reads_the_environment(monkeypatch):
    monkeypatch.setenv("STOCKS_AUTOSCALE_MIN", "2")
    monkeypatch.setenv("STOCKS_AUTOSCALE_MAX", "12")
    monkeypatch.setenv("STOCKS_AUTOSCALE_JOBS_PER_WORKER", "0")  # nonsense: one job per worker
    monkeypatch.setenv("STOCKS_AUTOSCALE_INTERVAL", "5")
    monkeypatch.setenv("STOCKS_AUTOSCALE_SCALE_DOWN_WINDOW", "30")
    assert Policy.from_settings(Settings.from_env()) == Policy(2, 12, 1, 5.0, 30.0)


# --- the client calls, against a local stand-in for the API server -----------------------------


class FakeScaleAPI(ThreadingHTTPServer):
    """Answers the scale subresource of one Deployment like the API server; 403 for the rest
    (what the Role would answer), and records every request."""

    def __init__(self, namespace: str, name: str, replicas: int) -> None:
        self.path_ = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        self.namespace, self.name, self.replicas = namespace, name, replicas
        self.requests: list[tuple[str, str, str, dict | None]] = []
        super().__init__(("127.0.0.1", 0), self._handler())

    def scale(self) -> dict:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"replicas": self.replicas},
            "status": {"replicas": self.replicas},
        }

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict | None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                ctype = self.headers.get("Content-Type", "")
                api.requests.append((self.command, self.path, ctype, body))
                return body

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                if self.path != api.path_:
                    return self._answer(403, {"kind": "Status", "code": 403})
                self._answer(200, api.scale())

            def do_PATCH(self) -> None:  # noqa: N802
                body = self._record()
                if self.path != api.path_:
                    return self._answer(403, {"kind": "Status", "code": 403})
                api.replicas = body["spec"]["replicas"]
                self._answer(200, api.scale())

            def log_message(self, format, *args):  # noqa: A002
                pass

        return Handler


@pytest.fixture
def api_server():
    server = FakeScaleAPI("stocks", "stocks-worker", replicas=2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def scale(api_server) -> DeploymentScale:
    config = kubernetes.client.Configuration(host=f"http://127.0.0.1:{api_server.server_port}")
    apps = kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(config))
    return DeploymentScale(apps, "stocks-worker", "stocks")


def test_scale_reads_and_patches_the_scale_subresource_only(api_server, scale):
    assert scale.get() == 2
    scale.set(5)
    assert api_server.replicas == 5
    assert scale.get() == 5
    methods = [(m, p) for m, p, _, _ in api_server.requests]
    path = "/apis/apps/v1/namespaces/stocks/deployments/stocks-worker/scale"
    assert methods == [("GET", path), ("PATCH", path), ("GET", path)]
    _, _, ctype, body = api_server.requests[1]
    assert body == {"spec": {"replicas": 5}}
    assert ctype.endswith("patch+json")


def test_autoscaler_follows_a_real_queue(settings, api_server, scale):
    queue = JobQueue(settings)
    clock = [0.0]
    scaler = Autoscaler(scale, POLICY, JobQueue(settings).stats, clock=lambda: clock[0])
    assert scaler.step() == 2  # an empty queue, but a fresh start waits a window to scale down
    assert [m for m, *_ in api_server.requests] == ["GET"]

    ids = [queue.put("line", {"symbols": ["AAPL"]}) for _ in range(13)]
    clock[0] = 5.0
    assert scaler.step() == 4  # ceil(13 / 4), set at once
    assert api_server.replicas == 4

    taken = queue.get(block=False)  # one running, twelve waiting: still 13 jobs
    assert taken is not None and taken.id == ids[0]
    clock[0] = 10.0
    assert scaler.step() == 4
    assert api_server.replicas == 4

    queue.redis.delete("queue:waiting")  # the backlog drained
    clock[0] = 20.0
    assert scaler.step() == 4  # within the window
    clock[0] = 70.0
    assert scaler.step() == 1  # the window has passed: down to the one running job's worker
    assert api_server.replicas == 1
    patches = [b["spec"]["replicas"] for m, _, _, b in api_server.requests if m == "PATCH"]
    assert patches == [4, 1]


def test_a_failed_round_is_retried_and_health_goes_stale(settings, api_server, scale):
    api_server.path_ = "/nowhere"  # every call answered 403, as outside the Role
    scaler = Autoscaler(scale, Policy(interval=0.01), JobQueue(settings).stats)
    with pytest.raises(kubernetes.client.ApiException):
        scaler.step()
    before = scaler.liveness.last()
    stop = threading.Event()
    runner = threading.Thread(target=scaler.run, args=(stop,))
    runner.start()
    try:
        threading.Event().wait(0.1)
        assert runner.is_alive()  # errors are logged, the loop goes on
        assert scaler.liveness.last() == before  # no round succeeded: /health will go stale
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()


def test_own_namespace_prefers_the_downward_api(monkeypatch, tmp_path):
    assert autoscale.own_namespace(Settings(pod_namespace="stocks")) == "stocks"
    (tmp_path / "namespace").write_text("other\n")
    monkeypatch.setattr(autoscale, "NAMESPACE_FILE", tmp_path / "namespace")
    assert autoscale.own_namespace(Settings()) == "other"


def test_outside_a_cluster_it_says_so_and_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    result = subprocess.run(
        [sys.executable, "-m", "stocks.cli", "autoscale"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "runs in a Kubernetes pod (in-cluster config)" in result.stderr
    assert "Traceback" not in result.stderr
