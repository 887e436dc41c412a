"""Parse, validate and flatten one login event (pure: no I/O, no keys).

`parse_event` turns a message body into a `LoginEvent` or an `Invalid` with a
short machine-readable reason such as ``invalid_json``, ``missing_field:ip``
or ``too_long:user_id``. It never raises, whatever the input. Reasons become
log fields and metric labels, so they form a closed set: a fixed word,
optionally ``:`` and a stored field name; never message content.

Its cost is bounded by the body's size: bodies over `MAX_BODY_BYTES` are
refused before decoding, numbers are never converted (no number is ever
stored), and flattening only builds names that can become stored fields, so
a long key or a wide nested object costs no more than its bytes.

The body is decoded by `fields.exact_fields`, which keeps each JSON object
as its list of pairs, so a stored field given twice is refused however it is
spelled (escapes, nesting, an SNS envelope); then the rules below are checked
field by field, in the order their reasons take precedence. One way through
for every body: ~11 µs an event, about 2% of the ~0.55 ms of CPU a message
costs a worker end to end (`make bench`); a second, msgspec-based way saved
~8 µs of it at the price of a proof that both ways agree, and was removed.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from login_etl.fields import STORED, Invalid, Values, exact_fields
from login_etl.record import COLUMNS, Kept, Source

__all__ = [
    "INT4_MAX",
    "MAX_BODY_BYTES",
    "MAX_IP_CHARS",
    "MAX_LENGTHS",
    "REQUIRED",
    "STORED",
    "Invalid",
    "LoginEvent",
    "canonical_ip",
    "create_date_for",
    "parse_app_version",
    "parse_event",
]

# Bodies above SQS's classic 256 KiB limit are refused unread; events are ~200 bytes.
MAX_BODY_BYTES = 256 * 1024
# Lengths of the event fields user_logins keeps as sent (its fixed DDL, declared in
# `record`): longer values are rejected, never truncated.
MAX_LENGTHS = {
    c.field: c.length
    for c in COLUMNS
    if c.kept is Kept.TABLE and c.source is Source.EVENT and c.length is not None
}
# Every stored field but locale, which may be absent or null.
REQUIRED = tuple(name for name in STORED if name != "locale")
INT4_MAX = 2**31 - 1
# The longest text of an IP address: six full hextets and a dotted IPv4 tail.
MAX_IP_CHARS = 45

# Possessive: a 250 kB "1.1.1…1." fails in one pass instead of stacking 18 MB of backtracking.
_VERSION = re.compile(r"([0-9]++)(?:\.[0-9]++)*+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zeros, as ipaddress
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


class LoginEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid login event, still holding plaintext PII (never logged).

    `ip` is in canonical form (see `canonical_ip`). A frozen msgspec struct
    rather than a dataclass: one is built per message on the hot path, where
    a frozen dataclass spends ~1 µs in ``object.__setattr__``.
    """

    user_id: str
    device_type: str
    ip: str
    device_id: str
    locale: str | None
    app_version: int
    app_version_raw: str
    create_date: date

    def __repr__(self) -> str:  # keep PII out of tracebacks and debug logs
        return f"LoginEvent(user_id=<{len(self.user_id)} chars>, app_version={self.app_version})"

    def __rich_repr__(self) -> Any:  # rich would otherwise print every field
        yield "app_version", self.app_version


def create_date_for(sent_at: datetime) -> date:
    """The row's create_date: the UTC date the message was sent to SQS."""
    if sent_at.tzinfo is None:
        return sent_at.date()  # naive means UTC
    return sent_at.astimezone(UTC).date()


def parse_app_version(raw: str) -> int | Invalid:
    """Integer major version: ``"2.3.0"`` → 2, ``"0.96"`` → 0; else a reason."""
    match = _VERSION.fullmatch(raw.strip())
    if match is None:
        return Invalid("invalid_app_version")
    major = match.group(1).lstrip("0") or "0"
    if len(major) > 10 or int(major) > INT4_MAX:  # length first: int() of huge text is slow
        return Invalid("out_of_range:app_version")
    return int(major)


def canonical_ip(text: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address, or None if `text` is not one.

    Canonical is what Python's `ipaddress` prints: IPv4 as is (it accepts no
    leading zeros), IPv6 compressed and lower-case, and an IPv4-mapped IPv6
    address (``::ffff:1.2.3.4``) as its IPv4 address, so one address has one
    mask. A zone id (``fe80::1%eth0``) names an interface of the machine that
    saw the address and means nothing here: refused.
    """
    if _IPV4.fullmatch(text):
        return text
    if len(text) > MAX_IP_CHARS or ":" not in text or "%" in text:
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    return str(address if mapped is None else mapped)


# -- the rules, field by field --------------------------------------------------


def _text(field: str, value: Any) -> str | Invalid:
    if value is None or value is msgspec.UNSET:
        # absent or null (an object at a stored name flattens away from it: `ip_x`)
        return Invalid(f"missing_field:{field}")
    if type(value) is not str:
        return Invalid(f"wrong_type:{field}")
    if not value.strip():
        return Invalid(f"empty_field:{field}")
    return _check_text(field, value)


def _check_text(field: str, value: str) -> str | Invalid:
    # Printable text has no control character and no lone surrogate: one fast check.
    if not value.isprintable():
        if _CONTROL.search(value):
            return Invalid(f"control_character:{field}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Invalid(f"invalid_unicode:{field}")
    limit = MAX_LENGTHS.get(field)
    if limit is not None and len(value) > limit:
        return Invalid(f"too_long:{field}")
    return value


def _checked_event(values: Values, sent_at: datetime) -> LoginEvent | Invalid:
    """The rules, field by field, in the order their reasons take precedence."""
    texts: dict[str, str] = {}
    for field in REQUIRED:
        text = _text(field, getattr(values, field))
        if isinstance(text, Invalid):
            return text
        texts[field] = text
    ip, raw_version = texts["ip"], texts["app_version"]
    locale = values.locale
    if locale is msgspec.UNSET:
        locale = None
    elif locale is not None:
        if type(locale) is not str:
            return Invalid("wrong_type:locale")
        locale = _check_text("locale", locale)
        if isinstance(locale, Invalid):
            return locale
    canonical = canonical_ip(ip)
    if canonical is None:
        return Invalid("invalid_ip")
    version = parse_app_version(raw_version)
    if isinstance(version, Invalid):
        return version
    return LoginEvent(
        user_id=texts["user_id"],
        device_type=texts["device_type"],
        ip=canonical,
        device_id=texts["device_id"],
        locale=locale,
        app_version=version,
        app_version_raw=raw_version,
        create_date=create_date_for(sent_at),
    )


def _too_large(body: str) -> bool:
    size = len(body)
    if size > MAX_BODY_BYTES:
        return True
    # Up to 4 UTF-8 bytes a character: only a long, non-ASCII body needs encoding.
    if size > MAX_BODY_BYTES // 4 and not body.isascii():
        return len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES
    return False


def _parse(body: str, sent_at: datetime) -> LoginEvent | Invalid:
    if _too_large(body):
        return Invalid("too_large")
    values = exact_fields(body)
    if isinstance(values, Invalid):
        return values
    return _checked_event(values, sent_at)


def parse_event(body: str, sent_at: datetime) -> LoginEvent | Invalid:
    """Validate one message body sent at `sent_at`; never raises."""
    try:
        return _parse(body, sent_at)
    except Exception:  # defensive: a bug here must reject one message, not stop the worker
        return Invalid("internal_error")
