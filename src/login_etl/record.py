"""The record's columns, declared once; everything that lists them is built from here (pure).

Every loaded message becomes one record. `COLUMNS` says, for each column,
its PostgreSQL and Iceberg types, where its value comes from and where it
is kept. From it, by name, never by position:

* the staging table, its binary COPY (column list and types) and the
  statements that load `user_logins` and the lake outbox (`pgsink`,
  `rejects`, `lake.writer`, through `sqlfiles.statement`);
* the lake's Iceberg schema (`lake.iceberg.schema_of`, where pyiceberg lives);
* a `Row`'s values in any such column order (`values_of`).
* the parser's length limits (`events.MAX_LENGTHS`).

Where a column is kept (`Kept`): a `user_logins` column (the fixed contract
of ``sql/migrations/0001_schema.sql``), carried by every batch for the
ledger (the message's id and send time), or in the lake alone (staged only with the lake on). Every
column is in the lake.

To add a column: declare it here, and give `transform.Row` the field that
carries its value (and `transform` the line that fills it). The declaration
shapes statements and new tables only: the database needs a new migration
(``sql/migrations/NNNN_*.sql``, `login_etl.schema`) that adds it to
``login_etl_lake_outbox``, and an existing Iceberg table a schema update
under the column's new `lake_id`.
`user_logins` is a fixed contract: it takes no new column.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any


class Kept(enum.Enum):
    """Where a column's values are kept (all of them in the lake too)."""

    TABLE = "user_logins"
    BATCH = "batch"  # staged with every batch for the ledger
    LAKE = "lake"  # the lake's alone


class Source(enum.Enum):
    """Where a column's value comes from."""

    EVENT = "event"  # an event field as sent (validated)
    DERIVED = "derived"  # made from an event field or the message (masked, parsed, dated)
    MESSAGE = "message"  # the SQS message's own


# PostgreSQL type → the name binary COPY knows it by (varchar(128) → varchar).
_COPY_TYPES = {"integer": "int4"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the record."""

    name: str
    sql_type: str  # PostgreSQL, as in user_logins and the staging table
    lake_type: str  # Iceberg primitive: string, int, date, timestamptz
    lake_id: int  # Iceberg field id: fixed once a table exists, never reused
    kept: Kept
    source: Source
    field: str = ""  # the event field (`fields.STORED`) the value is made from
    nullable: bool = False  # only a nullable column may be NULL in the outbox and lake

    @property
    def length(self) -> int | None:
        """The most characters PostgreSQL takes (``varchar(n)``), or None for no limit."""
        base, _, rest = self.sql_type.partition("(")
        return int(rest.rstrip(")")) if base == "varchar" and rest else None

    @property
    def copy_type(self) -> str:
        """The type name binary COPY writes this column as."""
        base = self.sql_type.partition("(")[0]
        return _COPY_TYPES.get(base, base)


_E, _D, _M = Source.EVENT, Source.DERIVED, Source.MESSAGE
_TABLE, _BATCH, _LAKE = Kept.TABLE, Kept.BATCH, Kept.LAKE

# In staging order; `user_logins`'s columns in its DDL's order.
COLUMNS = (
    Column("message_id", "text", "string", 1, _BATCH, _M),
    Column("user_id", "varchar(128)", "string", 4, _TABLE, _E, "user_id"),
    Column("device_type", "varchar(32)", "string", 5, _TABLE, _E, "device_type"),
    Column("masked_ip", "varchar(256)", "string", 6, _TABLE, _D, "ip"),
    Column("masked_device_id", "varchar(256)", "string", 7, _TABLE, _D, "device_id"),
    Column("locale", "varchar(32)", "string", 8, _TABLE, _E, "locale", nullable=True),
    Column("app_version", "integer", "int", 9, _TABLE, _D, "app_version"),  # the major
    Column("create_date", "date", "date", 3, _TABLE, _D),  # UTC date of sent_at
    Column("sent_at", "timestamptz", "timestamptz", 2, _BATCH, _M),
    Column("app_version_raw", "text", "string", 10, _LAKE, _E, "app_version"),
    Column("extra", "text", "string", 11, _LAKE, _D),  # allowed other fields (`extra`)
)


def user_logins(columns: Sequence[Column] = COLUMNS) -> tuple[Column, ...]:
    """The `user_logins` columns, in its DDL's order."""
    return tuple(c for c in columns if c.kept is Kept.TABLE)


def staged(columns: Sequence[Column] = COLUMNS, *, lake: bool) -> tuple[Column, ...]:
    """What a batch stages: all columns with the lake on, else all but the lake's own."""
    return tuple(c for c in columns if lake or c.kept is not Kept.LAKE)


def lake(columns: Sequence[Column] = COLUMNS) -> tuple[Column, ...]:
    """The lake's columns (and the outbox's), in field id order."""
    return tuple(sorted(columns, key=lambda c: c.lake_id))


def names(columns: Sequence[Column]) -> tuple[str, ...]:
    """The columns' names, in order."""
    return tuple(c.name for c in columns)


def values_of(columns: Sequence[Column]) -> Callable[[Any], tuple[Any, ...]]:
    """A function from a `Row` to its values for `columns`, in their order, by name."""
    get = attrgetter(*names(columns))
    if len(columns) == 1:  # attrgetter of one name returns the value, not a tuple
        return lambda row: (get(row),)
    return get  # C speed: a row is staged per message


def params_of(row: Any, columns: Sequence[Column]) -> dict[str, Any]:
    """A `Row`'s values for `columns` as query parameters named after them."""
    return {c.name: getattr(row, c.name) for c in columns}


def column(name: str, columns: Sequence[Column] = COLUMNS) -> Column:
    """The column called `name`."""
    return next(c for c in columns if c.name == name)
