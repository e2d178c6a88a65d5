# Works on a fresh machine with only python3 and make: uv comes from PyPI into .tools/ when absent.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
RUN := $(VENV)/bin
PYTEST_ARGS ?=

# Every process of the suite (test workers, Prefect servers, flow-run subprocesses, the CLI) imports
# Prefect, boto3 and pyarrow. Without bytecode on disk each one compiles them again (one Prefect
# server start: 35 s of CPU instead of 24 s on this machine). So the install compiles site-packages
# and our own modules keep their bytecode even where the environment sets PYTHONDONTWRITEBYTECODE.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-quick fuzz lint fmt bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --extra sandbox --group dev
	touch $@

install: $(VENV)/.installed

demo: install
	$(RUN)/xraylake demo

# Four workers on two cores: most test time is waiting on servers (visibility timeouts, Prefect
# runs, subprocesses), and each worker gets its own sandbox and Prefect server. Modules stay on one
# worker (module fixtures).
XDIST ?= -n 4 --dist loadfile

test: install
	$(RUN)/pytest $(XDIST) $(PYTEST_ARGS)

test-quick: install
	$(RUN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# The long property tests only, with many more examples than make test draws (1,000 each).
FUZZ_EXAMPLES ?= 20000
fuzz: install
	XRAYLAKE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(RUN)/pytest $(XDIST) -m fuzz $(PYTEST_ARGS)

lint: install
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/mypy
	$(RUN)/lint-imports

fmt: install
	$(RUN)/ruff format .
	$(RUN)/ruff check --fix .

bench: install
	for script in bench/bench_*.py; do $(RUN)/python $$script $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
