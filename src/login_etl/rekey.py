"""Key rotation's last step: rewrite masks made by older keys with the primary key.

Masks are equal only under one key, so after a rotation duplicates across
the old and new keys stay hidden until the old masks are rewritten. `rekey`
unmasks each old mask with the old key (from ``LOGIN_ETL_MASKING_OLD_KEYS``)
and masks it again with the primary key, a page per transaction, with rows
locked (``FOR UPDATE SKIP LOCKED``) so workers keep loading meanwhile. Sealed
rejection bodies are resealed too, after which the old key can be retired.
A mask no known key made is left as it is and counted.

`check_keys` guards the other way round: a worker whose keys made none of
the masks already stored would split every duplicate from then on, so it
refuses to start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from login_etl.errors import ConfigError, MaskingError
from login_etl.masking import Masker
from login_etl.postgres import locked_pages
from login_etl.sqlfiles import query

_KEY_ID = re.compile(r"[a-z2-7]{8}")


@dataclass
class RekeyResult:
    """What a rekey pass rewrote, and what it could not read (in all the places it looked)."""

    rows: int = 0
    bodies: int = 0
    unreadable: int = 0
    # The lake's part, when it is on (`login_etl.lake.upkeep.rekey`).
    lake_outbox: int = 0
    lake_records: int = 0
    lake_partitions: int = 0


def remask(masker: Masker, field: str, mask: str | None) -> str | None:
    """`mask` under the primary key (unchanged when already, or NULL)."""
    if mask is None or masker.is_current(mask):
        return mask
    return masker.mask(field, masker.unmask(field, mask))


def remask_pages(
    conn: psycopg.Connection[Any], masker: Masker, table: str, *, after: str, page: int = 1000
) -> tuple[int, int]:
    """Rewrite the stale masks of ``sql/<table>_select.sql``'s rows; (rewritten, unreadable).

    The select yields (key, masked_ip, masked_device_id) pages, each locked in
    its own transaction; ``sql/<table>_update.sql`` takes ``key`` and both masks.
    """
    rewritten = unreadable = 0
    params = {"prefix": f"{masker.key_id}.%"}
    for rows in locked_pages(conn, f"{table}_select", params, after=after, page=page):
        for key, masked_ip, masked_device_id in rows:
            try:
                update = {
                    "key": key,
                    "masked_ip": remask(masker, "ip", masked_ip),
                    "masked_device_id": remask(masker, "device_id", masked_device_id),
                }
            except MaskingError:
                unreadable += 1
                continue
            conn.execute(query(f"{table}_update"), update)
            rewritten += 1
    return rewritten, unreadable


def rekey(conn: psycopg.Connection[Any], masker: Masker, *, page: int = 1000) -> RekeyResult:
    """Rewrite every mask and sealed body not made by the primary key."""
    result = RekeyResult()
    result.rows, result.unreadable = remask_pages(conn, masker, "rekey", after="(0,0)", page=page)
    params = {"prefix": f"{masker.key_id}.%"}
    for bodies in locked_pages(conn, "rekey_bodies_select", params, after="", page=page):
        for message_id, sealed in bodies:
            try:
                resealed = masker.seal(masker.open_sealed(sealed, message_id), message_id)
            except MaskingError:
                result.unreadable += 1
                continue
            conn.execute(
                query("rekey_bodies_update"), {"message_id": message_id, "sealed_body": resealed}
            )
            result.bodies += 1
    return result


def check_keys(conn: psycopg.Connection[Any], masker: Masker) -> None:
    """Raise ConfigError when something is stored under a key and no configured key made any.

    What is stored under a key: `user_logins` masks, sealed rejected bodies
    and the lake outbox's masks, so a fresh key is refused even before the
    first row loads. Cheap when the keys are right: the scan stops at the
    first item one of them made. The error names the key ids found and the
    ones configured.
    """
    found = conn.execute(query("key_check"), {"ids": masker.key_ids}).fetchone()
    if found is None or not found[0] or found[1]:
        return
    # Whatever the table holds is shown only if it has the shape of a key id.
    seen = sorted(
        {
            r[0] if _KEY_ID.fullmatch(r[0] or "") else "(not a key id)"
            for r in conn.execute(query("key_ids_sample")).fetchall()
        }
    )
    configured = ", ".join(masker.key_ids)
    raise ConfigError(
        f"the database holds masks or sealed bodies made by key id(s) {', '.join(seen)}, "
        "and none by the "
        f"configured key(s) {configured}: a new or mistyped LOGIN_ETL_MASKING_KEY would split "
        "every duplicate. Set the key that made them (or list it in "
        "LOGIN_ETL_MASKING_OLD_KEYS and run `login-etl rekey`)"
    )
