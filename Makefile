# Developer entry points. Everything runs from .venv, which `make venv` builds from
# pyproject.toml and rebuilds only when pyproject.toml changes.

# The first python3 on PATH that is >= 3.11; override with `make PYTHON=/path/to/python`.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; exit 0; }; done; echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST := .venv-lowest

.PHONY: venv demo example-platform lint typecheck test test-lowest bench clean openapi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "tidings needs Python >= 3.11; '$(PYTHON)' is older or missing." >&2; \
		echo "Install a newer Python or run: make PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/tidings demo

# The example notification platform (examples/platform): every channel consumer, one run.
example-platform: venv
	$(BIN)/python -m examples.platform

lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests bench examples

typecheck: venv
	$(BIN)/mypy

# First against the embedded server (so any server URL in the caller's environment is
# dropped), then, when TIDINGS_TEST_REDIS_URL_EXTRA names another server (CI: the
# machine's Redis 7.0), the suite again against that server minus embedded-only tests.
test: venv lint typecheck
	env -u TIDINGS_TEST_REDIS_URL -u TIDINGS_REDIS_URL $(BIN)/pytest -q
	@if [ -n "$$TIDINGS_TEST_REDIS_URL_EXTRA" ]; then \
		echo "== again against $$TIDINGS_TEST_REDIS_URL_EXTRA"; \
		TIDINGS_TEST_REDIS_URL="$$TIDINGS_TEST_REDIS_URL_EXTRA" \
			$(BIN)/pytest -q -m "not embedded_only and not slow and not own_servers"; \
	fi

# The fast tests with every runtime dependency at the lower bound pyproject.toml declares
# (pinned by .ci/lowest_constraints.py; dev tools at their newest), against the embedded
# server, so the bounds never claim more than the code works with. Its own venv, rebuilt
# from scratch when pyproject.toml changes.
test-lowest: $(LOWEST)/.installed
	env -u TIDINGS_TEST_REDIS_URL -u TIDINGS_REDIS_URL $(LOWEST)/bin/pytest -q -m "not slow"

$(LOWEST)/.installed: pyproject.toml .ci/lowest_constraints.py $(STAMP)
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(BIN)/python .ci/lowest_constraints.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev]'
	@echo "== installed at the lower bounds:"; grep -v '^#' $(LOWEST)/constraints.txt
	touch $@

# Core (tidings vs raw redis-py), scheduling, flow-control and observability figures; each
# prints JSON and writes bench/results/<name>.json.
bench: venv
	$(BIN)/python -m bench
	$(BIN)/python -m bench.scheduling
	$(BIN)/python -m bench.flow
	$(BIN)/python -m bench.observability
	$(BIN)/python -m bench.overload
	$(BIN)/python -m bench.sweep
	$(BIN)/python -m bench.routing
	$(BIN)/python -m bench.security
	$(BIN)/python -m bench.api --messages 5000
	$(BIN)/python -m bench.cluster
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.failover

# tidings beside Dramatiq, SAQ, Celery and BullMQ (bench/peers): the peers live in their own
# venv and node_modules, built here from scratch, never in tidings' dependencies.
# PEERS_ARGS passes options, e.g. `make bench-peers PEERS_ARGS=--quick`.
.PHONY: bench-peers peers-env
PEERS_VENV := bench/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
NODE_PEERS := bench/peers/node
NODE_STAMP := $(NODE_PEERS)/node_modules/.installed

$(PEERS_STAMP): pyproject.toml bench/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -e . -r bench/peers/requirements.txt
	touch $@

$(NODE_STAMP): $(NODE_PEERS)/package.json $(NODE_PEERS)/package-lock.json
	cd $(NODE_PEERS) && npm ci --no-audit --no-fund
	touch $@

peers-env: $(PEERS_STAMP) $(NODE_STAMP)

# Byte-compiled first, as pip does for every installed wheel (the peers'): an editable
# tidings would otherwise compile its source at every start where PYTHONDONTWRITEBYTECODE
# is set (it is on this machine), about 90 ms of every worker start-up.
bench-peers: peers-env
	$(PEERS_VENV)/bin/python -m compileall -q src/tidings
	$(PEERS_VENV)/bin/python -m bench.peers $(PEERS_ARGS)

# The HTTP API's OpenAPI document, committed (tests/test_api_server.py checks it is current).
openapi: venv
	$(BIN)/python -m tidings.api.openapi docs/openapi.json

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# The dashboard's one front-end asset, vendored (no CDN): htmx from the npm registry, at
# the version src/tidings/dashboard/static/HTMX_VERSION records. Bump it there, then run
# this and commit the result.
.PHONY: dashboard-assets screenshots
DASH_STATIC := src/tidings/dashboard/static
dashboard-assets:
	@tmp=$$(mktemp -d) && version=$$(cat $(DASH_STATIC)/HTMX_VERSION) && \
		(cd $$tmp && npm pack --silent htmx.org@$$version >/dev/null && tar xzf htmx.org-*.tgz) && \
		cp $$tmp/package/dist/htmx.min.js $(DASH_STATIC)/htmx.min.js && \
		cp $$tmp/package/LICENSE $(DASH_STATIC)/htmx.LICENSE && rm -rf $$tmp && \
		echo "htmx $$version -> $(DASH_STATIC)/htmx.min.js"

# The README's dashboard screenshots (docs/screenshots/*.png), taken by the browser tests
# against a live app with real messages; needs Debian's chromium (/usr/bin/chromium).
screenshots: venv
	TIDINGS_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_dashboard_browser.py
