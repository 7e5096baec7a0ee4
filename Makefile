# The two set-up commands are `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cuelog-installed

.PHONY: demo test test-long lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cuelog needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cuelog demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-long: $(STAMP)
	CUELOG_HYPOTHESIS_PROFILE=long CUELOG_HA_ROUNDS=20 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0

bench: $(STAMP)
	$(BIN)/cuelog bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
