# The README's two commands, each setting up what it needs in .venv (the README's install line):
#   make quickstart   run the bundled quickstart (CPU, no download)
#   make test         run the test suite, slow end-to-end tests included; it ends with the 15 slowest tests
# torch is pinned in pyproject.toml only: a CUDA machine gets the CUDA build of that version from PyPI.
# `make VENV=path` uses another environment.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test

quickstart: $(VENV)/.installed
	$(BIN)/hpo-action run -c examples/quickstart/hpo.yaml

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n auto --durations=15

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@
