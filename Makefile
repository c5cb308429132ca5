# Two commands on a fresh machine:  `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment .venv from requirements.lock on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TEST_ARGS ?= -m "not slow or ci"

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(BIN)/datacomp demo

test: setup
	$(BIN)/python -m pytest $(TEST_ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
