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
PORT ?= 8000

.PHONY: install test run train-default bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

run: install
	SEQ2SEQ_HOST=$(HOST) SEQ2SEQ_PORT=$(PORT) $(BIN)/python -m app

# Rebuilds weights/default.pt from weights/corpus.json; reproduces its metrics exactly on the same device.
train-default: install
	$(BIN)/python -m model train --data weights/corpus.json --attention --teacher-forcing 1.0 --steps 3000 \
		--seed 0 --name default --out weights/default.pt

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
