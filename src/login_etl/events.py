"""Parse, validate and flatten one login event (pure: no I/O, no keys).

`parse_event` turns a message body into a `LoginEvent` or an `Invalid` with a
short machine-readable reason such as ``invalid_json``, ``missing_field:ip``
or ``too_long:user_id``. It never raises, whatever the input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

# Lengths from the fixed `user_logins` DDL; values are rejected, never truncated.
MAX_LENGTHS = {"user_id": 128, "device_type": 32, "locale": 32}
REQUIRED = ("user_id", "device_type", "ip", "device_id", "app_version")
INT4_MAX = 2**31 - 1
# Deeper nesting than this is ignored when flattening (no field we need lives there).
MAX_FLATTEN_DEPTH = 8
_STORED = frozenset((*REQUIRED, "locale"))
_VERSION = re.compile(r"([0-9]+)(?:\.[0-9]+)*")


@dataclass(frozen=True, slots=True)
class LoginEvent:
    """A valid login event, still holding plaintext PII (never logged)."""

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


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message can never load."""

    reason: str


def create_date_for(sent_at: datetime) -> date:
    """The row's create_date: the UTC date the message was sent to SQS."""
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
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


def _flatten(obj: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any] | Invalid:
    """Flatten nested objects, joining keys with ``_`` (``device.id`` → ``device_id``)."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth + 1 >= MAX_FLATTEN_DEPTH:
                continue
            inner = _flatten(value, f"{name}_", depth + 1)
            if isinstance(inner, Invalid):
                return inner
            items = inner.items()
        else:
            items = [(name, value)]  # type: ignore[assignment]
        for k, v in items:
            if k in flat:
                # Only fields we store can conflict, so a reason (which becomes
                # a log field and a metric label) never quotes a key from the message.
                if k in _STORED:
                    return Invalid(f"conflicting_field:{k}")
                continue
            flat[k] = v
    return flat


def _decode(body: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return Invalid("invalid_json")


def _unwrap(body: str) -> dict[str, Any] | Invalid:
    doc = _decode(body)
    if isinstance(doc, Invalid):
        return doc
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        inner = doc["Message"]
        if not isinstance(inner, str):
            return Invalid("invalid_sns_message")
        doc = _decode(inner)
        if isinstance(doc, Invalid):
            return doc
    if not isinstance(doc, dict):
        return Invalid("not_an_object")
    return doc


def _check_text(field: str, value: str) -> Invalid | None:
    if "\x00" in value:
        return Invalid(f"nul_character:{field}")
    if not value.isascii():  # ASCII always encodes: skip the costly check
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Invalid(f"invalid_unicode:{field}")
    limit = MAX_LENGTHS.get(field)
    if limit is not None and len(value) > limit:
        return Invalid(f"too_long:{field}")
    return None


def _text_field(flat: dict[str, Any], field: str) -> str | Invalid:
    if field not in flat or flat[field] is None:
        return Invalid(f"missing_field:{field}")
    value = flat[field]
    if not isinstance(value, str):
        return Invalid(f"wrong_type:{field}")
    if not value.strip():
        return Invalid(f"empty_field:{field}")
    return _check_text(field, value) or value


def parse_event(body: str, sent_at: datetime) -> LoginEvent | Invalid:
    """Validate one message body sent at `sent_at`; never raises."""
    try:
        return _parse(body, sent_at)
    except Exception:  # defensive: a bug here must reject one message, not stop the worker
        return Invalid("internal_error")


def _parse(body: str, sent_at: datetime) -> LoginEvent | Invalid:
    doc = _unwrap(body)
    if isinstance(doc, Invalid):
        return doc
    # The usual event is already flat: skip the copy.
    flat = _flatten(doc) if any(isinstance(v, dict) for v in doc.values()) else doc
    if isinstance(flat, Invalid):
        return flat
    values: dict[str, str] = {}
    for field in REQUIRED:
        value = _text_field(flat, field)
        if isinstance(value, Invalid):
            return value
        values[field] = value
    locale = flat.get("locale")
    if locale is not None:
        if not isinstance(locale, str):
            return Invalid("wrong_type:locale")
        problem = _check_text("locale", locale)
        if problem is not None:
            return problem
    version = parse_app_version(values["app_version"])
    if isinstance(version, Invalid):
        return version
    return LoginEvent(
        user_id=values["user_id"],
        device_type=values["device_type"],
        ip=values["ip"],
        device_id=values["device_id"],
        locale=locale,
        app_version=version,
        app_version_raw=values["app_version"],
        create_date=create_date_for(sent_at),
    )
