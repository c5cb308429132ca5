# Two commands on a fresh machine:  `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment .venv on first use: `demo` from requirements.lock (what the
# library imports), `test` also from requirements-dev.lock (tests, lint, Ray, S3 test server).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TEST_ARGS ?= -m "not slow or ci"

.PHONY: setup setup-dev demo test lint bench clean

setup: $(VENV)/.installed

setup-dev: $(VENV)/.dev-installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@

demo: setup
	$(BIN)/datacomp demo

test: setup-dev
	$(BIN)/python -m pytest $(TEST_ARGS)

lint: setup-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
