"""The lake stage: every loaded event, masked, in an Apache Iceberg table.

This package's top level imports nothing heavy: the worker imports pyiceberg
(the ``login-etl[lake]`` extra) only when ``LOGIN_ETL_LAKE_WAREHOUSE`` is set.

* `iceberg`  — the one module that calls pyiceberg: the surface the lake relies on;
* `table`    — catalog, table and schema, our outbox mark in the snapshot summary;
* `writer`   — the outbox → Iceberg writer (`flush`) and its thread;
* `backfill` — rebuild `user_logins` rows from the lake;
* `rewrite`  — data files rewritten a bounded piece at a time, and compaction's bins;
* `upkeep`   — rekey and maintenance (compaction, snapshot expiry, orphans).

Exactly once across PostgreSQL and Iceberg: the batch transaction that loads
a row also writes its record to the outbox table; the writer appends outbox
rows to Iceberg with the outbox high-water mark in the snapshot summary, then
deletes them. See docs/lake.md.
"""

from __future__ import annotations

CATALOG = "login_etl"
NAMESPACE = "login_etl"
TABLE = "login_events"
IDENTIFIER = f"{NAMESPACE}.{TABLE}"

# The lake's tables in PostgreSQL (created by init-db). A writer role needs
# SELECT, INSERT, UPDATE, DELETE on them and USAGE on the outbox's sequence.
TABLES = ("login_etl_lake_outbox", "iceberg_tables", "iceberg_namespace_properties")
SEQUENCES = ("login_etl_lake_outbox_id_seq",)

# The size compaction aims for by default. At about 75 bytes of Parquet per
# record, 128 MB is some 1.7 million records: a day at 1,000 messages a second
# is about 50 files, so scan planning and S3 requests stay cheap. Not
# Iceberg's 512 MB: pyiceberg, which backfill and the DuckDB recipe read
# through, decodes a whole file at a time, at about 3 times its size in Arrow.
# Compaction's own memory does not depend on it: a rewrite streams.
TARGET_FILE_MB = 128
