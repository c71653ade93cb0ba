# l2vol — two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build. Cluster images
# override this (see Dockerfile); pyproject keeps torch>=2.4 open.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip
PIP_FLAGS ?= --disable-pip-version-check -q
DEMO_OUT ?= demo_out

.PHONY: demo test lint venv venv-dev browser lock clean help

help:
	@echo "make demo   - create .venv, install l2vol, run the embedded pipeline, print where the report is"
	@echo "make test   - create/update .venv with dev extras and run the test suite"
	@echo "make lint   - ruff + import-linter"
	@echo "make lock   - refresh constraints.txt from the current .venv"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip

# Stamp files record what was installed; they are rebuilt when pyproject.toml or constraints change.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install $(PIP_FLAGS) -c constraints.txt -e ".[feast]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	$(BIN)/l2vol demo --out $(DEMO_OUT)

# Browser tests drive Debian's chromium with chromedriver (never a tool's own browser download). As root
# on Debian they are installed here; elsewhere the tests skip with the reason (fail in CI).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "note: chromium/chromedriver not installed: browser tests will skip"; fi

test: venv-dev browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# constraints.txt pins every transitive dependency for reproducible installs. torch is left out on
# purpose: it is pinned by TORCH_SPEC here and by the image build for CUDA variants.
lock: venv-dev
	$(PIP) list --format=freeze --exclude-editable | grep -v -E '^(torch|l2vol)==' > constraints.txt

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
