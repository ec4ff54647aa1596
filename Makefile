PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GLIBC_TUNABLES ?= glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned first so that the CPU build is taken (a bare "torch" pulls CUDA packages).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q "torch>=2.2"
	$(BIN)/pip install -q -e ".[test,ray]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/lesion demo --out runs/demo

test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# The benchmark's peers (Captum, msapy) live in their own environment, never in the project's.
BENCH := bench/.venv/bin
$(BENCH)/python:
	$(PY) -m venv bench/.venv

bench/.venv/.installed: pyproject.toml | $(BENCH)/python
	$(BENCH)/pip install -q "torch==2.13.0" || $(BENCH)/pip install -q "torch>=2.2"
	$(BENCH)/pip install -q -e .
	$(BENCH)/pip install -q captum || echo "captum not installable: the bench runs without it"
	$(BENCH)/pip install -q msapy "fastprogress<1.1" || echo "msapy not installable: the bench runs without it"
	touch $@

bench: bench/.venv/.installed
	$(BENCH)/python bench/run.py

clean:
	rm -rf $(VENV) bench/.venv runs
