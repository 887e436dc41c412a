"""From one queue message to one `Row` or one `Rejection` (pure, keyed).

This is where validation (`events`) meets masking (`masking`): the result
holds no plaintext PII. A rejection keeps the body sealed with the masking
key and bound to its message id, so it can be inspected and replayed later
by key holders only, and only in its own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import msgspec

from login_etl.events import Invalid, parse_event
from login_etl.extra import keep
from login_etl.masking import MASK_MAX_CHARS, Masker
from login_etl.source import Message


class Row(msgspec.Struct, frozen=True, gc=False):
    """One `user_logins` row plus the message id that carries it.

    A frozen msgspec struct rather than a dataclass: one is built per message
    on the hot path, where a frozen dataclass spends ~1 µs in ``object.__setattr__``.
    """

    message_id: str
    user_id: str
    device_type: str
    masked_ip: str
    masked_device_id: str
    locale: str | None
    app_version: int
    create_date: date
    sent_at: datetime
    # For the lake stage only (`transform(..., lake=True)`): the full version
    # text and the event's allowed other fields as JSON (`extra`), and a
    # reason for each value they left out.
    app_version_raw: str = ""
    extra: str = "{}"
    lake_dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that can never load: why, and its body sealed with the key."""

    message_id: str
    reason: str
    sent_at: datetime
    sealed_body: str
    receive_count: int = 1


def seal_body(masker: Masker, body: str, message_id: str) -> str:
    """Seal the body of message `message_id`; lone surrogates survive the round trip."""
    return masker.seal(body.encode("utf-8", "surrogatepass"), message_id)


def open_body(masker: Masker, sealed: str, message_id: str) -> str:
    """Inverse of `seal_body`: fails unless `sealed` was made for `message_id`."""
    return masker.open_sealed(sealed, message_id).decode("utf-8", "surrogatepass")


def reject(message: Message, reason: str, masker: Masker) -> Rejection:
    """Build the rejection of `message` for `reason`."""
    return Rejection(
        message_id=message.message_id,
        reason=reason,
        sent_at=message.sent_at,
        sealed_body=seal_body(masker, message.body, message.message_id),
        receive_count=message.receive_count,
    )


def transform(
    message: Message,
    masker: Masker,
    *,
    lake: bool = False,
    extra_fields: frozenset[str] = frozenset(),
) -> Row | Rejection:
    """Validate and mask one message; never raises.

    With `lake`, the row also carries what the lake keeps beyond the stored
    fields: the full version text and the fields named in `extra_fields`
    (a second decode of the body, only when some are named).
    """
    event = parse_event(message.body, message.sent_at)
    if isinstance(event, Invalid):
        return reject(message, event.reason, masker)
    masked_ip = masker.mask("ip", event.ip)  # canonical: one address, one mask
    if len(masked_ip) > MASK_MAX_CHARS:
        return reject(message, "mask_too_long:ip", masker)
    masked_device_id = masker.mask("device_id", event.device_id)
    if len(masked_device_id) > MASK_MAX_CHARS:
        return reject(message, "mask_too_long:device_id", masker)
    extra, version, dropped = "{}", event.app_version_raw, tuple[str, ...]()
    if lake:
        extra, version, dropped = keep(
            message.body, version, extra_fields, ip=event.ip, device_id=event.device_id
        )
    return Row(
        message_id=message.message_id,
        user_id=event.user_id,
        device_type=event.device_type,
        masked_ip=masked_ip,
        masked_device_id=masked_device_id,
        locale=event.locale,
        app_version=event.app_version,
        create_date=event.create_date,
        sent_at=message.sent_at,
        app_version_raw=version,
        extra=extra,
        lake_dropped=dropped,
    )
