# BlobNet. Every target installs what is missing into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/default

.PHONY: install test lint train bench bench-quick bench-gpu profile flamegraph clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned CPU build first: a bare torch requirement would pull a CUDA build of several GB.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check blobnet servers clients bench tests
	$(VENV)/bin/ruff format --check blobnet servers clients bench tests
	$(VENV)/bin/mypy blobnet servers clients bench

train: $(STAMP)
	$(VENV)/bin/blobnet train --config configs/default.toml --run-dir $(RUN_DIR)

bench: $(STAMP)
	$(PY) -m bench.sweep

bench-quick: $(STAMP)
	$(PY) -m bench.sweep --quick

bench-gpu: $(STAMP)
	$(PY) -m bench.gpu_check

profile: $(STAMP)
	$(PY) -m bench.profile

flamegraph: $(STAMP)
	$(PY) -m bench.flamegraph

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
