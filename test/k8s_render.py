"""Render kubernetes/ the way an operator applies it: the base, the loader, and the base with
each optional component switched on in kubernetes/kustomization.yaml.

Used by test_kubernetes.py and by `make k8s-check` (``python test/k8s_render.py DIR`` writes
one YAML file per variant, plus the Dockerfiles, for checkov). Each render works on a copy
of kubernetes/ holding a throwaway Redis password, so the real (git-ignored) one is never
read or needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "kubernetes"
PASSWORD_FILE = "redis-password.env"
TEST_PASSWORD = "0123456789abcdef" * 4
# variant name -> components enabled in kubernetes/kustomization.yaml
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "keda": ["components/keda"],
    "ingress": ["components/ingress"],
    "monitoring": ["components/monitoring"],
}


def copy_tree(dest: Path, components: list[str]) -> Path:
    """kubernetes/ copied to ``dest`` with a test password and ``components`` enabled."""
    tree = dest / "kubernetes"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns(PASSWORD_FILE))
    (tree / PASSWORD_FILE).write_text(f"REDIS_PASSWORD={TEST_PASSWORD}\n")
    if components:
        path = tree / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        kustomization["components"] = components
        path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return tree


def kustomize(directory: Path) -> str:
    return subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def render_all(work: Path) -> dict[str, str]:
    """variant -> rendered YAML; "load" is the loader's kustomization."""
    out = {}
    for name, components in VARIANTS.items():
        tree = copy_tree(work / name, components)
        out[name] = kustomize(tree)
        if name == "base":
            out["load"] = kustomize(tree / "load")
    return out


def main(out_dir: str) -> None:
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    (out / "work").mkdir(parents=True)
    for name, text in render_all(out / "work").items():
        (out / f"{name}.yaml").write_text(text)
    shutil.rmtree(out / "work")
    for dockerfile in ("Dockerfile.api", "Dockerfile.worker"):
        shutil.copy(ROOT / dockerfile, out / dockerfile)
    print(f"rendered {', '.join(sorted(VARIANTS) + ['load'])} into {out}/")


if __name__ == "__main__":
    main(sys.argv[1])
