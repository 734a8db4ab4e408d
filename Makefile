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

.PHONY: install run worker test lint format bench clean chromium deploy-tools screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --no-input -v0
	$(BIN)/python manage.py collectstatic --no-input -v0
	$(BIN)/python manage.py load_demo
	@echo "Starting the worker (log: var/worker.log) and the server on http://$(HOST):$(PORT)/"
	@$(BIN)/celery -A workers.celery worker --beat --pool threads --concurrency 2 \
	    --loglevel INFO --logfile var/worker.log & worker=$$!; \
	  trap "kill $$worker 2>/dev/null; wait $$worker 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/python manage.py runserver --noreload $(HOST):$(PORT)

test: $(STAMP) chromium deploy-tools
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

# tests/test_compose.py checks docker-compose.yml with docker-compose and runs its services,
# behind deploy/nginx.conf, as processes (no container engine needed).
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
