# Modelgate: `make run` serves the demo, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

# CI runs on the machine's Postgres and Redis; tests refuse to run there without them.
ifeq ($(CI),true)
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/15
export REDIS_URL ?= redis://127.0.0.1:6379/14
endif

.PHONY: install run worker test lint format bench clean chromium deploy-tools oidc-provider screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# `make run` serves as production would, from a venv of its own with the runtime
# dependencies only (`.venv` keeps the dev tools for `make test`): gunicorn with
# config/gunicorn.conf.py, one Celery worker and Celery beat, supervised together by
# deploy/run_local.py (Ctrl-C stops all three, and make, cleanly).
RUN_VENV := .venv-run
RUN_BIN := $(RUN_VENV)/bin
RUN_STAMP := $(RUN_VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
WEB_WORKERS ?= 2

$(RUN_STAMP): pyproject.toml
	@test -x $(RUN_BIN)/python || $(PYTHON) -m venv $(RUN_VENV)
	$(RUN_BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(RUN_BIN)/pip install --quiet -e .
	@rm -f $(RUN_VENV)/.installed-*; touch $@

run: $(RUN_STAMP)
	$(RUN_BIN)/python manage.py migrate --no-input -v0
	$(RUN_BIN)/python manage.py collectstatic --no-input -v0
	exec $(RUN_BIN)/python deploy/run_local.py --host $(HOST) --port $(PORT) --web-workers $(WEB_WORKERS)

test: $(STAMP) chromium deploy-tools oidc-provider
	MODELGATE_VAR_DIR=$(CURDIR)/var/test $(BIN)/pytest $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "NOTE: /usr/bin/chromium is missing and this is not root: browser tests will be skipped"; \
	    echo "      (install it with: sudo apt-get install chromium)"; \
	  fi; \
	fi

# tests/test_oidc.py signs in through a real OpenID provider: npm's oidc-provider, pinned by
# tests/oidc/package-lock.json, installed again when that changes.
OIDC_STAMP := tests/oidc/node_modules/.installed-$(shell cat tests/oidc/package-lock.json | sha256sum | cut -c1-12)
oidc-provider:
	@if [ ! -f $(OIDC_STAMP) ]; then \
	  if command -v npm >/dev/null && command -v node >/dev/null; then \
	    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error && touch $(OIDC_STAMP); \
	  else \
	    echo "NOTE: node or npm is missing: the single sign-on tests will be skipped"; \
	  fi; \
	fi

# tests/test_compose.py checks docker-compose.yml with docker-compose and runs its services,
# behind deploy/nginx.conf, as processes (no container engine needed). tests/test_image.py
# builds the image with podman on a Debian base made by mmdebstrap and runs it (as root).
IMAGE_TOOLS := podman runc mmdebstrap podman-compose uidmap fuse-overlayfs slirp4netns
deploy-tools:
	@if [ ! -x /usr/bin/docker-compose ] || [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's docker-compose and nginx-light for the deployment test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends docker-compose nginx-light; \
	  else \
	    echo "NOTE: docker-compose or nginx is missing and this is not root: the deployment"; \
	    echo "      test will be skipped (sudo apt-get install docker-compose nginx-light)"; \
	  fi; \
	fi
	@if [ "$$(command -v podman runc mmdebstrap podman-compose | wc -l)" != 4 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's podman, runc, mmdebstrap and podman-compose for the image test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(IMAGE_TOOLS); \
	  else \
	    echo "NOTE: podman, runc, mmdebstrap or podman-compose is missing and this is not root:"; \
	    echo "      the image test will be skipped (sudo apt-get install $(IMAGE_TOOLS))"; \
	  fi; \
	fi

screenshots: $(STAMP) chromium
	MODELGATE_VAR_DIR=$(CURDIR)/var/screens $(BIN)/python -m webui.screenshots screenshots

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# SIZE=small for a quick run; the issue's sizes (1 and 4 GiB, 1,000,000 versions) by default.
SIZE ?= full
bench: $(STAMP)
	$(BIN)/python bench/run.py --preset $(SIZE) $(BENCH_ARGS)

.PHONY: fuzz soak
# schemathesis against /api/v1/schema/ of a fresh local server (FUZZ_ARGS="--max-examples 20").
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py $(FUZZ_ARGS)

# MINUTES of mixed load while a worker is killed and restarted twice, then the invariants.
MINUTES ?= 10
soak: $(STAMP)
	$(BIN)/python bench/soak.py --minutes $(MINUTES) $(SOAK_ARGS)

clean:
	rm -rf var/test .pytest_cache
