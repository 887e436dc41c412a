# Production image: the worker only (no embedded services).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .
USER 65534:65534
ENV LOGIN_ETL_LOG_FORMAT=json LOGIN_ETL_METRICS_PORT=9108
EXPOSE 9108
# SIGTERM finishes the batch in hand and hands the rest back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["login-etl"]
CMD ["run"]
