"""The Docker images and the Kubernetes manifests, checked offline.

Why: a typo in a manifest or a probe on the wrong path only shows on a real cluster, too late.
Here every rendered document is validated strictly (unknown fields are errors) against the
Kubernetes API schemas that the kubernetes-validate package ships, and the properties the system
relies on are asserted: probes, shutdown grace, Redis persistence, resources, non-root, selectors,
and that the images' commands are commands the `stocks` CLI accepts.

Rendering uses `kubectl kustomize`; without kubectl the manifest files are read as they are.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "kubernetes"
LOAD = K8S / "load"
AUTOSCALING = K8S / "components" / "worker-autoscaling"
KUBECTL = shutil.which("kubectl")
K8S_VERSION = kv.utils.latest_version()
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
CLUSTER_SCOPED = {"Namespace"}


def _read_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _raw_docs(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, unrendered (the fallback when kubectl is absent)."""
    kustomization = _read_yaml_docs(directory / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = []
    for name in kustomization.get("resources", []):
        path = directory / name
        docs += _raw_docs(path) if path.is_dir() else _read_yaml_docs(path)
    return docs


def render(directory: Path) -> list[dict[str, Any]]:
    if KUBECTL is None:
        return _raw_docs(directory)
    out = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's or Service's port (a number or a port name) to the container's port."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S)


@pytest.fixture(scope="module")
def load() -> list[dict[str, Any]]:
    return render(LOAD)


@pytest.fixture(scope="module")
def autoscaled(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The base with the worker-autoscaling component on, as an operator would enable it."""
    if KUBECTL is None:
        pytest.skip("kubectl is needed to apply the component's patch")
    overlay = tmp_path_factory.mktemp("overlay")
    rel = Path(os.path.relpath(K8S, overlay.resolve()))  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(rel)],
                "components": [str(rel / AUTOSCALING.relative_to(K8S))],
            }
        )
    )
    return render(overlay)


@pytest.fixture(scope="module")
def config(base: list[dict[str, Any]]) -> dict[str, str]:
    return find(base, "ConfigMap", "stocks-config")["data"]


# --- schema validation -----------------------------------------------------------------------


def test_every_document_validates_strictly(base, load):
    docs = base + load + _read_yaml_docs(AUTOSCALING / "hpa.yaml")
    errors = []
    for doc in docs:
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {e}")
    assert errors == []
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "Deployment",
            "StatefulSet",
            "PodDisruptionBudget",
        ]
    )
    assert [d["kind"] for d in load] == ["Job"]


def test_autoscaling_component_validates_and_leaves_replicas_to_the_hpa(autoscaled):
    for doc in autoscaled:
        kv.validate(doc, K8S_VERSION, strict=True)
    hpa = find(autoscaled, "HorizontalPodAutoscaler", "stocks-worker")
    target = hpa["spec"]["scaleTargetRef"]
    assert find(autoscaled, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    assert "replicas" not in find(autoscaled, "Deployment", "stocks-worker")["spec"]
    assert hpa["spec"]["minReplicas"] >= 1 < hpa["spec"]["maxReplicas"]


def test_strict_validation_rejects_broken_documents(base):
    good = find(base, "Deployment", "stocks-api")
    kv.validate(good, K8S_VERSION, strict=True)

    typo = copy.deepcopy(good)
    probe = pod_spec(typo)["containers"][0].pop("livenessProbe")
    pod_spec(typo)["containers"][0]["livenesProbe"] = probe
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, K8S_VERSION, strict=True)

    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, K8S_VERSION, strict=True)

    no_image = copy.deepcopy(good)
    del pod_spec(no_image)["containers"][0]["name"]
    with pytest.raises(kv.ValidationError):
        kv.validate(no_image, K8S_VERSION, strict=True)


# --- what the system relies on -----------------------------------------------------------------


def test_everything_lives_in_the_stocks_namespace(base, load):
    if KUBECTL is None:
        pytest.skip("the namespace is set by kustomize")
    for doc in base + load:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "stocks", doc["metadata"]["name"]
    assert find(base, "Namespace", "stocks")


def test_api_probes_hit_ready_and_health_on_the_container_port(base):
    api = find(base, "Deployment", "stocks-api")
    assert api["spec"]["replicas"] == 2
    (container,) = pod_spec(api)["containers"]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/ready"
    assert live["path"] == "/health"
    assert container_port(container, ready["port"]) == 5000
    assert container_port(container, live["port"]) == 5000
    assert "--port" in container["args"]
    assert container["args"][container["args"].index("--port") + 1] == "5000"

    service = find(base, "Service", "stocks-api")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(container, port["targetPort"]) == 5000


def test_api_keys_come_from_an_optional_secret(base):
    (container,) = pod_spec(find(base, "Deployment", "stocks-api"))["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["STOCKS_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "stocks-api-keys", "key": "STOCKS_API_KEYS", "optional": True}
    # No key ships in the manifests: without the Secret, writes are refused (403).
    assert not [d for d in base if d["kind"] == "Secret"]
    example = (K8S / "api-keys.env.example").read_text()
    assert re.search(r"^STOCKS_API_KEYS=\S+$", example, re.M)


def test_config_points_at_the_redis_service(base, config):
    for key in (
        "REDIS_URL",
        "STOCKS_WORKER_TIMEOUT",
        "STOCKS_MAX_ATTEMPTS",
        "STOCKS_RESULT_TTL",
        "STOCKS_SHUTDOWN_GRACE",
    ):
        assert key in config
    assert config["REDIS_URL"] == "redis://redis:6379"
    service = find(base, "Service", "redis")
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]
    for kind, name in [("Deployment", "stocks-api"), ("Deployment", "stocks-worker")]:
        for container in containers(find(base, kind, name)):
            refs = [e["configMapRef"]["name"] for e in container["envFrom"]]
            assert refs == ["stocks-config"]


def test_loader_job_reads_the_same_config(load):
    job = find(load, "Job", "stocks-load")
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    (container,) = pod_spec(job)["containers"]
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["stocks-config"]
    assert container["args"][:2] == ["stocks", "load"]


def test_worker_grace_outlasts_the_shutdown_grace(base, config):
    worker = find(base, "Deployment", "stocks-worker")
    grace = int(config["STOCKS_SHUTDOWN_GRACE"])
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > grace
    assert worker["spec"]["replicas"] == 2
    (container,) = pod_spec(worker)["containers"]
    assert container["args"] == ["stocks", "worker", "--concurrency", "1"]
    assert "ports" not in container


def test_redis_persists_with_appendonly(base):
    redis = find(base, "StatefulSet", "redis")
    (container,) = pod_spec(redis)["containers"]
    assert container["image"].startswith("redis:7")
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == args[args.index("--dir") + 1]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(container[probe]["exec"]["command"])
    assert redis["spec"]["serviceName"] == "redis"
    assert find(base, "Service", "redis")["spec"]["clusterIP"] == "None"


def test_every_container_has_resources_and_runs_as_non_root(base, load):
    workloads = [d for d in base + load if d["kind"] in WORKLOADS]
    assert len(workloads) == 4
    for workload in workloads:
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("readOnlyRootFilesystem") is True, where
            if container["image"].startswith("stocks-"):
                # Python, matplotlib and yfinance write to /tmp only (see the Dockerfiles).
                tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and "emptyDir" in volumes[tmp[0]["name"]], where


def test_selectors_match_the_pods(base):
    pods = {}
    for workload in (d for d in base if d["kind"] in WORKLOADS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
        pods[workload["metadata"]["name"]] = (labels, workload)

    def selected(selector: dict[str, str]) -> list[str]:
        return [name for name, (labels, _) in pods.items() if selector.items() <= labels.items()]

    for service in (d for d in base if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        assert selected(service["spec"]["selector"]) == [name], f"Service {name} selects no pod"
        (container,) = pod_spec(pods[name][1])["containers"]
        for port in service["spec"]["ports"]:
            container_port(container, port.get("targetPort", port["port"]))

    pdb = find(base, "PodDisruptionBudget", "stocks-api")
    assert selected(pdb["spec"]["selector"]["matchLabels"]) == ["stocks-api"]


def test_images_are_retagged_in_step_with_the_project_version(base, load):
    if KUBECTL is None:
        pytest.skip("images are set by kustomize")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        c["name"]: c["image"] for d in base + load if d["kind"] in WORKLOADS for c in containers(d)
    }
    assert images == {
        "api": f"stocks-api:{version}",
        "worker": f"stocks-worker:{version}",
        "load": f"stocks-worker:{version}",
        "redis": "redis:7-alpine",
    }


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
    ("name", "cmd"),
    [
        ("Dockerfile.api", ["stocks", "serve", "--host", "0.0.0.0", "--port", "5000"]),
        ("Dockerfile.worker", ["stocks", "worker", "--concurrency", "1"]),
    ],
)
def test_dockerfile(name, cmd):
    instructions = dockerfile(name)
    assert json.loads(last(instructions, "CMD")) == cmd
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in [f"{i} {r}" for i, r in instructions]
    assert all(r.split()[0] == "${PYTHON_IMAGE}" for i, r in instructions if i == "FROM")
    user = last(instructions, "USER").split(":")[0]
    assert user not in ("0", "root")
    runs = " ".join(r for i, r in instructions if i == "RUN")
    assert "pip install -c requirements.lock ." in runs
    assert "[dev]" not in runs
    if name == "Dockerfile.api":
        assert last(instructions, "EXPOSE") == "5000"
        assert "http://127.0.0.1:5000/health" in last(instructions, "HEALTHCHECK")


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


def test_commands_are_accepted_by_the_cli(base, load):
    """Every command an image or a pod runs parses with the real `stocks` argument parser."""
    pytest.importorskip("stocks.loader")
    from stocks.cli import build_parser

    commands = [
        json.loads(last(dockerfile("Dockerfile.api"), "CMD")),
        json.loads(last(dockerfile("Dockerfile.worker"), "CMD")),
    ]
    commands += [c["args"] for d in base + load if d["kind"] in WORKLOADS for c in containers(d)]
    parsed = {}
    for argv in commands:
        if argv[0] == "redis-server":
            continue
        assert argv[0] == "stocks"
        args = build_parser().parse_args(argv[1:])
        parsed.setdefault(args.command, []).append(args)
    assert sorted(parsed) == ["load", "serve", "worker"]
    assert all(a.host == "0.0.0.0" and a.port == 5000 for a in parsed["serve"])
    assert all(a.concurrency == 1 for a in parsed["worker"])
