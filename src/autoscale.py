"""``stocks autoscale``: scale the worker Deployment on queue depth, not CPU.

Why: CPU lags a queue. A burst of chart jobs waits in Redis long before the workers' CPU
average moves, and an idle queue keeps CPU-scaled workers up for nothing. So every
``interval`` seconds this reads waiting + running jobs (``JobQueue.stats``) and sets the
``scale`` subresource of the Deployment to ``clamp(ceil(jobs / jobs_per_worker), min, max)``.

Scaling up is immediate; scaling down takes the highest recommendation of the last
``scale_down_window`` seconds (the HorizontalPodAutoscaler's rule), so a queue that empties
between two bursts does not stop workers only to start them again. Never below one worker:
the reaper that puts back a dead worker's jobs runs in the workers.

It runs in the cluster as the Deployment ``stocks-autoscaler`` (kubernetes/autoscaler.yaml)
with the official ``kubernetes`` client and its in-cluster config; its Role allows only
``get`` and ``patch`` on ``deployments/scale`` of ``stocks-worker``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stocks.config import Settings
from stocks.jobs import JobQueue
from stocks.worker import health

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

History = list[tuple[float, int]]  # (time, recommended replicas), oldest first


@dataclass(frozen=True)
class Policy:
    min_replicas: int = 1
    max_replicas: int = 8
    jobs_per_worker: int = 4
    interval: float = 10.0
    scale_down_window: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            min_replicas=settings.autoscale_min,
            max_replicas=settings.autoscale_max,
            jobs_per_worker=max(1, settings.autoscale_jobs_per_worker),
            interval=settings.autoscale_interval,
            scale_down_window=settings.autoscale_scale_down_window,
        )


def desired_replicas(waiting: int, running: int, policy: Policy) -> int:
    """``clamp(ceil((waiting + running) / jobs_per_worker), min, max)``, and at least 1."""
    wanted = math.ceil((waiting + running) / policy.jobs_per_worker)
    return max(1, min(policy.max_replicas, max(policy.min_replicas, wanted)))


def decide(
    waiting: int, running: int, history: History, now: float, policy: Policy
) -> tuple[int, History]:
    """The replicas to set now, and the history to pass next time (pure: no clock, no I/O).

    The answer is the highest recommendation within the window, this one included: up at
    once, down only after every recommendation of the whole window said so.
    """
    recent = [(t, n) for t, n in history if now - t < policy.scale_down_window]
    recent.append((now, desired_replicas(waiting, running, policy)))
    return max(n for _, n in recent), recent


class DeploymentScale:
    """The ``scale`` subresource of one Deployment, through the official client."""

    def __init__(self, apps_api, name: str, namespace: str) -> None:
        self.api, self.name, self.namespace = apps_api, name, namespace

    def get(self) -> int:
        scale = self.api.read_namespaced_deployment_scale(self.name, self.namespace)
        return int(scale.spec.replicas or 0)

    def set(self, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self.api.patch_namespaced_deployment_scale(self.name, self.namespace, body)


def in_cluster_apps_api():
    """AppsV1Api with the pod's service-account token (``load_incluster_config``)."""
    from kubernetes import client, config  # noqa: PLC0415 - heavy, only here

    config.load_incluster_config()
    return client.AppsV1Api()


def own_namespace(settings: Settings) -> str:
    """The pod's namespace: POD_NAMESPACE (downward API), else the service account's file."""
    return settings.pod_namespace or NAMESPACE_FILE.read_text().strip()


class Autoscaler:
    """One round at a time (``step``); ``run`` repeats it every ``policy.interval`` s."""

    def __init__(
        self,
        scale: DeploymentScale,
        policy: Policy,
        depth: Callable[[], dict[str, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scale, self.policy, self.depth, self.clock = scale, policy, depth, clock
        self.history: History | None = None
        self.liveness = health.Liveness()

    def step(self) -> int:
        """Read the queue and the scale, patch the scale if the decision differs; the decision."""
        stats = self.depth()
        current = self.scale.get()
        now = self.clock()
        if self.history is None:  # a fresh start scales down no sooner than a window from now
            self.history = [(now, current)]
        replicas, self.history = decide(
            stats["waiting"], stats["taken"], self.history, now, self.policy
        )
        if replicas != current:
            log.info(
                "%s waiting + %s running: %s -> %s workers",
                stats["waiting"], stats["taken"], current, replicas,
            )  # fmt: skip
            self.scale.set(replicas)
        self.liveness.beat()
        return replicas

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as e:  # Redis or the API server away: try again next round
                log.warning("autoscale round failed: %s", e)
            stop.wait(self.policy.interval)


def main(
    settings: Settings,
    deployment: str,
    namespace: str | None = None,
    health_port: int | None = None,
) -> int:
    """``stocks autoscale``: until SIGTERM/SIGINT."""
    from kubernetes.config import ConfigException  # noqa: PLC0415

    policy = Policy.from_settings(settings)
    try:
        apps_api, namespace = in_cluster_apps_api(), namespace or own_namespace(settings)
    except (ConfigException, OSError) as e:
        log.error("stocks autoscale runs in a Kubernetes pod (in-cluster config): %s", e)
        return 2
    depth = JobQueue(settings, "autoscaler").stats
    scaler = Autoscaler(DeploymentScale(apps_api, deployment, namespace), policy, depth)
    port = settings.health_port if health_port is None else health_port
    if port:  # stale once three rounds in a row have failed
        health.start_health_server(port, scaler.liveness.last, max(3 * policy.interval, 30.0))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    log.info("autoscaling deployment %s: %s", deployment, policy)
    scaler.run(stop)
    return 0
