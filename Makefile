# One command each: `make test` sets up .venv and runs lint, types and the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test serve lint typecheck bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

serve: $(STAMP)
	$(BIN)/conveyor serve

bench: $(STAMP)
	$(BIN)/python -m benchmarks.engines

# 10 minutes against the PostgreSQL of CONVEYOR_TEST_POSTGRES; exits 1 on unbounded growth
soak: $(STAMP)
	$(BIN)/python -m benchmarks.postgres_soak --url $${CONVEYOR_TEST_POSTGRES:-postgresql://127.0.0.1:5432/test}

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
