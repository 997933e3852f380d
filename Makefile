# Two entry points for a fresh machine with Python 3.11, git and make:
#   make demo   runs the main job: a transferability study on the embedded synthetic dataset
#   make test   lints (ruff) and runs the test suite
# Both create or update .venv from constraints.txt; nothing is reinstalled when
# pyproject.toml and constraints.txt are unchanged.
PYTHON ?= python3.11
VENV ?= .venv
STAMP := $(VENV)/.distrec-installed
BIN := $(VENV)/bin

.PHONY: demo test lint venv bench-data bench-victims clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distrec demo --out runs/study-demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check distrec tests jobs bench
	$(BIN)/ruff format --check distrec tests jobs bench

bench-data: $(STAMP)
	$(BIN)/python bench/data_prepare.py
	$(BIN)/python bench/streaming.py

bench-victims: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/victims.py wrmf-vs-implicit
	$(BIN)/python bench/victims.py lightgcn-epoch
	$(BIN)/python bench/victims.py eval
	$(BIN)/python bench/victims.py curves

clean:
	rm -rf $(VENV) .pytest_cache
