"""The lake's catalog, table and schema; pyiceberg's and the warehouse's errors translated.

The catalog is pyiceberg's SQL catalog, named ``login_etl``, in the service's
own PostgreSQL database (its two tables are created by ``init-db``, in the
layout of Iceberg's JDBC catalog, so Spark and Trino attach to it too). The
table ``login_etl.login_events`` is partitioned by ``create_date``.

Every call into pyiceberg, pyarrow or the catalog runs inside `translated`,
which turns their errors into ours: a warehouse or catalog that does not
answer, or a commit that lost a race, is `LakeUnavailable` (retryable); a
missing bucket, refused credentials or missing catalog tables are
`ConfigError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from login_etl import record, redact
from login_etl.errors import ConfigError, LakeUnavailable, LoginEtlError
from login_etl.lake import CATALOG, IDENTIFIER, NAMESPACE

try:
    import pyarrow as pa
    import sqlalchemy.exc
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
    from pyiceberg.expressions import BooleanExpression, In, NotStartsWith, Or
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "LOGIN_ETL_LAKE_WAREHOUSE is set but the lake's libraries are missing: "
        "pip install '.[lake]' from a checkout (the image has them)"
    ) from exc

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from login_etl.config import Settings

SCHEMA = record.iceberg_schema()
COLUMNS = tuple(f.name for f in SCHEMA.fields)
ARROW_SCHEMA = SCHEMA.as_arrow()
SPEC = PartitionSpec(
    PartitionField(
        source_id=record.column("create_date").lake_id,
        field_id=1000,
        transform=IdentityTransform(),
        name="create_date",
    )
)
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
# Words in a warehouse error that no retry can fix.
_CONFIG_WORDS = re.compile(
    r"NoSuchBucket|AccessDenied|Access Denied|InvalidAccessKeyId|SignatureDoesNotMatch|"
    r"InvalidBucketName|Forbidden|HTTP status 403|Permission denied",
    re.I,
)


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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact.scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn pyiceberg, pyarrow, SQLAlchemy and psycopg errors met while doing `what` into ours."""
    import psycopg

    from login_etl.postgres import translate

    try:
        yield
    except LoginEtlError:
        raise
    except CommitFailedException as exc:
        raise LakeUnavailable(f"lake {what}: another commit came first") from exc
    except ValidationException as exc:  # a file a rewrite replaces went meanwhile
        raise LakeUnavailable(f"lake {what}: the table changed meanwhile") from exc
    except NoSuchTableError as exc:
        raise LakeUnavailable(f"lake {what}: the table {IDENTIFIER} is gone") from exc
    except sqlalchemy.exc.ProgrammingError as exc:
        raise ConfigError(
            "the lake catalog's tables are missing: run `login-etl init-db` first"
        ) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise LakeUnavailable(f"lake catalog {what} failed: {_describe(exc)}") from exc
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except PermissionError as exc:
        raise ConfigError(f"lake warehouse: permission denied ({what})") from exc
    except OSError as exc:
        if _CONFIG_WORDS.search(str(exc)):
            raise ConfigError(f"lake warehouse refused {what}: {_describe(exc)}") from exc
        raise LakeUnavailable(f"lake warehouse {what} failed: {_describe(exc)}") from exc


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
        with translated("catalog"):
            self.catalog = SqlCatalog(CATALOG, **catalog_properties(database_url, warehouse))

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
        with translated("table"):
            try:
                return self.catalog.load_table(IDENTIFIER)
            except NoSuchTableError:
                self.catalog.create_namespace_if_not_exists(NAMESPACE)
                return self.catalog.create_table_if_not_exists(
                    IDENTIFIER, SCHEMA, partition_spec=SPEC, properties=PROPERTIES
                )

    def close(self) -> None:
        """Release the catalog's database connections."""
        self.catalog.engine.dispose()


def mark_of(table: Table) -> Mark:
    """The outbox high-water mark the table's current snapshot includes.

    Our commits all carry it; a commit by another engine (a compaction in
    Spark, say) does not, so the walk goes back through the ancestors.
    """
    snapshot = table.current_snapshot()
    while snapshot is not None:
        value = snapshot.summary[MARK_KEY] if snapshot.summary is not None else None
        if value:
            return Mark.parse(value)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return Mark()


def day(value: Any) -> date:
    """A partition's create_date: pyiceberg gives days since the epoch, or a date."""
    return value if isinstance(value, date) else _EPOCH + timedelta(days=int(value))


def partitions(table: Table) -> dict[date, list[Any]]:
    """The current data files by create_date, read from the manifests alone."""
    found: dict[date, list[Any]] = {}
    if table.current_snapshot() is None:
        return found
    for task in table.scan(selected_fields=("create_date",)).plan_files():
        found.setdefault(day(task.file.partition[0]), []).append(task.file)
    return found


# pyiceberg's expressions take (term, literal) at run time; its types say otherwise.
def on_days(days: list[date]) -> BooleanExpression:
    """Filter: records of any of these create_dates."""
    return In("create_date", {d.isoformat() for d in days})  # type: ignore[call-arg, arg-type]


def stale_masks(key_id: str) -> BooleanExpression:
    """Filter: records with a mask not made by the key `key_id`."""
    prefix = f"{key_id}."
    return Or(
        NotStartsWith("masked_ip", prefix),  # type: ignore[call-arg, arg-type]
        NotStartsWith("masked_device_id", prefix),  # type: ignore[call-arg, arg-type]
    )


def to_arrow(columns: list[list[Any]]) -> pa.Table:
    """An Arrow table in the lake's schema from one list per column (COLUMNS order)."""
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, ARROW_SCHEMA, strict=True)],
        schema=ARROW_SCHEMA,
    )
