# login-etl image: one image for every command the docs describe, the worker
# and init-db, grant and rekey, and the lake stage (login-etl[lake]: pyiceberg,
# pyarrow, SQLAlchemy), so LOGIN_ETL_LAKE_WAREHOUSE, `lake flush`, `lake
# maintain` and `backfill` work in it. No embedded services (the [local] and
# [pg] extras are for a developer's machine).
#
#   docker build -t login-etl:0.1.0 .
#
# Two stages: `build` installs the locked dependencies and then the package
# into a venv; the runtime stage copies only that venv (no pip, no build
# tools, no source tree). Pin the base image by digest in your own registry.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Dependencies first, exactly as locked (the resolution of login-etl[lake]):
# this layer is rebuilt only when requirements/ changes, not on every source
# edit. --no-deps makes the lock the whole truth; `pip check` proves the set
# is consistent.
COPY requirements/ requirements/
RUN python -m venv --without-pip /opt/login-etl \
    && pip --python /opt/login-etl/bin/python install --no-deps -r requirements/constraints.txt \
    && pip install -r requirements/build.txt

# Then the package itself, built with the pinned build backend, no dependencies.
# `pip check` does not look at extras, so importing the lake's module (which
# imports pyiceberg, pyarrow and SQLAlchemy) proves the lake is in the image.
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && pip --python /opt/login-etl/bin/python install --no-deps /tmp/wheels/login_etl-*.whl \
    && pip --python /opt/login-etl/bin/python check \
    && /opt/login-etl/bin/python -c "import login_etl.lake.table"


FROM python:3.11-slim-bookworm
# A dedicated unprivileged user; numeric in USER so Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin login-etl
COPY --from=build /opt/login-etl /opt/login-etl
ENV PATH=/opt/login-etl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOGIN_ETL_LOG_FORMAT=json \
    LOGIN_ETL_METRICS_PORT=9108
USER 10001:10001
# /metrics, /healthz and /readyz.
EXPOSE 9108
# The slim image has no curl: ask /healthz with Python's own urllib (an HTTP
# 503 raises, so the command fails). Liveness only: /readyz follows PostgreSQL
# and SQS, and an outage there is no reason to restart the worker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LOGIN_ETL_METRICS_PORT', '9108'), timeout=4)"]
# SIGTERM finishes the batch in hand and hands the rest back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["login-etl"]
CMD ["run"]
