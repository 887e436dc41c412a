"""The lake's catalog, table and schema, through the pyiceberg adapter (`lake.iceberg`).

The catalog is pyiceberg's SQL catalog, named ``login_etl``, in the service's
own PostgreSQL database (its two tables are created by ``init-db``, in the
layout of Iceberg's JDBC catalog, so Spark and Trino attach to it too). The
table ``login_etl.login_events`` is partitioned by ``create_date``.

Every call into pyiceberg, pyarrow or the catalog goes through
`login_etl.lake.iceberg` and runs inside its `translated`, which turns their
errors into ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from login_etl import record
from login_etl.errors import ConfigError
from login_etl.lake import CATALOG, IDENTIFIER, iceberg
from login_etl.lake.iceberg import (
    BooleanExpression,
    Table,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from login_etl.config import Settings

SCHEMA = iceberg.schema_of(record.COLUMNS)
COLUMNS = tuple(f.name for f in SCHEMA.fields)
ARROW_SCHEMA = iceberg.arrow_schema(SCHEMA)
SPEC = iceberg.identity_spec(SCHEMA, "create_date")
PROPERTIES = {
    "format-version": "2",
    # On a conflict the writer re-reads the outbox mark and starts over; a
    # rebased retry by pyiceberg itself would append the same rows twice.
    "commit.retry.num-retries": "0",
    # Fast appends add a manifest each; merging keeps scan planning short.
    "commit.manifest-merge.enabled": "true",
    # Each commit writes a metadata file: keep the last few, not all.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}
# The snapshot summary key holding the outbox high-water mark a snapshot includes.
MARK_KEY = "login-etl.outbox-mark"
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, order=True)
class Mark:
    """A position in the outbox: (loading transaction id, row id)."""

    xid: int = 0
    id: int = 0

    def __str__(self) -> str:
        return f"{self.xid}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Mark:
        """Inverse of `str`."""
        xid, _, row = text.partition(":")
        return cls(int(xid), int(row))

    def params(self) -> dict[str, Any]:
        """Query parameters ``xid`` and ``id``."""
        return {"xid": str(self.xid), "id": self.id}


def sqlalchemy_url(libpq_url: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) for a libpq URL or key=value string.

    An empty `libpq_url` stays empty for libpq too, so its PG* variables apply.
    """
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    from login_etl.postgres import check_url

    check_url(libpq_url)  # a malformed URL is configuration: one line, exit 2

    params = {k: str(v) for k, v in conninfo_to_dict(libpq_url).items()} if libpq_url else {}
    host, port = params.pop("host", None), params.pop("port", None)
    if host and ("/" in host or "," in host):  # a socket directory or several hosts
        params["host"] = host
        host = None
        if port:
            params["port"] = port
            port = None
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=host,
        port=int(port) if port and port.isdigit() else None,
        database=params.pop("dbname", None),
        query=params,
    )
    return url.render_as_string(hide_password=False)


def catalog_properties(database_url: str, warehouse: str) -> dict[str, str]:
    """pyiceberg's properties for our SQL catalog and the warehouse's file IO."""
    props = {
        "uri": sqlalchemy_url(database_url),
        "warehouse": warehouse,
        "init_catalog_tables": "false",  # init-db made them; a worker needs no DDL
        "pool_pre_ping": "true",
    }
    if warehouse.startswith("s3://"):
        # pyarrow's S3 client: the standard credential chain, with the endpoint
        # and region taken from the same variables boto3 reads.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        props["py-io-impl"] = "pyiceberg.io.pyarrow.PyArrowFileIO"
        props["s3.connect-timeout"] = "10"
        props["s3.request-timeout"] = "60"
        if endpoint:
            props["s3.endpoint"] = endpoint
        if region:
            props["s3.region"] = region
    return props


class Lake:
    """The catalog and the table; `close` releases the catalog's connections."""

    def __init__(self, database_url: str, warehouse: str) -> None:
        self.warehouse = warehouse
        self.catalog = iceberg.open_catalog(CATALOG, catalog_properties(database_url, warehouse))

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """The lake of `settings`, or a ConfigError when it is off."""
        if not settings.lake_warehouse:
            raise ConfigError("the lake is off: set LOGIN_ETL_LAKE_WAREHOUSE or --lake-warehouse")
        return cls(settings.database_url, settings.lake_warehouse)

    def __repr__(self) -> str:
        return f"Lake(warehouse={self.warehouse!r})"  # the catalog URI may hold a password

    def table(self) -> Table:
        """The table as committed now (created, with its namespace, on first use)."""
        return iceberg.load_or_create(self.catalog, IDENTIFIER, SCHEMA, SPEC, PROPERTIES)

    def close(self) -> None:
        """Release the catalog's database connections."""
        iceberg.close_catalog(self.catalog)


def mark_of(table: Table) -> Mark:
    """The outbox high-water mark the table's current snapshot includes.

    Our commits all carry it; a commit by another engine (a compaction in
    Spark, say) does not, so the walk goes back through the ancestors.
    """
    value = iceberg.property_lineage(table, MARK_KEY)[1]
    return Mark.parse(value) if value else Mark()


def day(value: Any) -> date:
    """A partition's create_date: pyiceberg gives days since the epoch, or a date."""
    return value if isinstance(value, date) else _EPOCH + timedelta(days=int(value))


def partitions(table: Table) -> dict[date, list[Any]]:
    """The current data files by create_date, read from the manifests alone."""
    found: dict[date, list[Any]] = {}
    for entry in iceberg.data_files(table):
        found.setdefault(day(entry.partition), []).append(entry.file)
    return found


def on_days(days: list[date]) -> BooleanExpression:
    """Filter: records of any of these create_dates."""
    return iceberg.is_in("create_date", (d.isoformat() for d in days))


def stale_masks(key_id: str) -> BooleanExpression:
    """Filter: records with a mask not made by the key `key_id`."""
    return iceberg.any_lacks_prefix(("masked_ip", "masked_device_id"), f"{key_id}.")


def to_arrow(columns: list[list[Any]]) -> pa.Table:
    """An Arrow table in the lake's schema from one list per column (COLUMNS order)."""
    return iceberg.arrow_table(columns, ARROW_SCHEMA)
