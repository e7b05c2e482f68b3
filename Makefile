# Two commands matter: `make run` serves the shipped model, `make test` runs the suite. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch unless CUDA is present. On this project's machines pip takes 2.13.0+cpu from local
# disk; elsewhere set TORCH_INDEX to PyTorch's CPU wheel index to avoid the multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
HOST ?= 0.0.0.0
# The suite mostly waits on real servers, databases and browsers: two processes halve its time on 2 cores.
TEST_WORKERS ?= 2
PORT ?= 8000

.PHONY: install browser postgres nginx prometheus test run worker migrate train-default bench screenshots docker-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

# The browser tests drive Debian's chromium; Playwright's own browser download does not work on our machines.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "warning: could not install chromium; the browser tests will fail (set SEQ2SEQ_CHROMIUM)"

# The storage tests start a throwaway PostgreSQL server (tests/postgres.py) from Debian's server binaries.
PG_CTL_GLOB := /usr/lib/postgresql/*/bin/pg_ctl
postgres:
	@ls $(PG_CTL_GLOB) >/dev/null 2>&1 || { echo "installing Debian's postgresql for the storage tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } \
		|| echo "warning: could not install postgresql; the PostgreSQL storage tests will be skipped (set PG_BIN)"

# The failover tests put real serving processes behind Debian's nginx (deploy/nginx.conf, ports substituted).
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { echo "installing Debian's nginx for the failover tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; } \
		|| echo "warning: could not install nginx; the load-balancer tests will be skipped"

# The monitoring tests scrape a live server and worker with Debian's prometheus and lint /metrics with its promtool.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || test -x /usr/bin/prometheus || { echo "installing Debian's prometheus for the monitoring tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "warning: could not install prometheus; the Prometheus tests will be skipped"

test: install browser postgres nginx prometheus
	$(BIN)/ruff check model app bench tests docs
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

run: install
	SEQ2SEQ_HOST=$(HOST) SEQ2SEQ_PORT=$(PORT) $(BIN)/python -m app

# A training worker on this machine for the database in SEQ2SEQ_DATABASE_URL (see README, "Cluster").
worker: install
	$(BIN)/python -m app.worker

migrate: install
	$(BIN)/python -m app migrate

# Rebuilds weights/default.pt from weights/corpus.json with the default recipe; reproduces its metrics exactly
# on the same device.
train-default: install
	$(BIN)/python -m model train --data weights/corpus.json --attention --seed 0 --name default --out weights/default.pt

# Each writes bench/results/NAME.json with the machine. torchserve and cluster also build TorchServe's own
# virtual environment (TS_VENV, default /tmp/ts-venv), oip MLServer's (MLSERVER_VENV, default /tmp/mlserver-venv);
# cluster needs Debian's nginx (make nginx).
BENCHES ?= train_speed calibration generalization decode_speed load feedback batch hostile cold_start job_latency propagation torchserve oip cluster chaos learning
bench: install nginx
	cd bench && for b in $(BENCHES); do ../$(BIN)/python $$b.py || exit 1; done

screenshots: install browser
	$(BIN)/python docs/screenshots.py

# Builds the image from the Dockerfile and runs docker-compose.yml end to end: inference, a training job, a restart
# that keeps the volume (scripts/docker-smoke.sh). Needs root; several minutes, so not part of `make test`.
# SMOKE_RESULTS=FILE also writes the summary as JSON.
docker-smoke:
	scripts/docker-smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache
