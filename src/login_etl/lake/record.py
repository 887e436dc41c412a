"""The lake record's `extra` column: an event's other fields as JSON (pure).

`user_logins` keeps six fields of an event; the lake keeps the rest too. The
fields are flattened the way the stored ones are (``{"geo": {"city": …}}`` →
``geo_city``) and written as sorted, ASCII-only JSON text.

The lake never holds a plaintext address or device id, whatever the
producer sends. Left out, at any depth and inside arrays:

* the stored fields (they have columns; ``ip`` and ``device_id`` only as masks);
* any field whose name, split into words (``client_ip``, ``ipAddress``,
  ``Device-ID``, ``device: {id: …}``), holds ``ip``, ``ips``, ``ipv4``,
  ``ipv6``, ``ipaddress`` or both ``device`` and ``id``;
* any string that is an IP address, that equals the event's own ip or
  device id, or that is itself JSON (``"{\\"ip\\": …}"``), wherever it sits.

Cost stays proportional to the body: a flattened name longer than
`MAX_NAME` characters, and anything deeper than `MAX_DEPTH`, is left out,
and an `extra` over `MAX_BYTES` is replaced by ``{"_omitted":"too_large"}``.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from login_etl.fields import STORED, address_field

EMPTY = "{}"
TOO_LARGE = '{"_omitted":"too_large"}'
MAX_DEPTH = 8
MAX_NAME = 256
MAX_BYTES = 64 * 1024
_STORED = frozenset(STORED)
_DROP = object()


def _decode(text: str) -> Any:
    # NaN and Infinity are not JSON values: keep them as null.
    return json.loads(text, parse_constant=lambda _name: None)


def _event_object(body: str) -> dict[str, Any] | None:
    """The event's JSON object (unwrapped from an SNS envelope), or None."""
    try:
        doc = _decode(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            inner = doc.get("Message")
            if isinstance(inner, str):
                doc = _decode(inner)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def pii_name(name: str) -> bool:
    """True when a field named `name` (flattened or not) may hold an address or a device id."""
    return address_field(name) is not None


class _Scrubber:
    """Walks one event's other fields, keeping what cannot identify an address or device."""

    def __init__(self, own: frozenset[str]) -> None:
        self._own = own  # the event's own ip and device id, in any spelling we can know

    def value(self, value: Any, name: str, depth: int) -> Any:
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                return _DROP
            kept = {}
            for key, inner in value.items():
                if pii_name(f"{name}_{key}"):
                    continue
                cleaned = self.value(inner, f"{name}_{key}", depth + 1)
                if cleaned is not _DROP:
                    kept[key] = cleaned
            return kept
        if isinstance(value, list):
            if depth >= MAX_DEPTH:
                return _DROP
            items = (self.value(v, name, depth + 1) for v in value)
            return [v for v in items if v is not _DROP]
        if isinstance(value, str) and self._sensitive(value):
            return _DROP
        return value

    def _sensitive(self, text: str) -> bool:
        stripped = text.strip()
        if stripped in self._own or stripped[:1] in ("{", "["):
            return True
        if len(stripped) <= 64 and (":" in stripped or "." in stripped):
            try:
                ipaddress.ip_address(stripped.split("%", 1)[0])
            except ValueError:
                return False
            return True
        return False

    def flatten(self, obj: dict[str, Any], prefix: str, depth: int, out: dict[str, Any]) -> None:
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if len(name) > MAX_NAME or name in _STORED or pii_name(name) or name in out:
                continue
            if isinstance(value, dict) and depth < MAX_DEPTH:
                self.flatten(value, f"{name}_", depth + 1, out)
                continue
            cleaned = self.value(value, name, depth + 1)
            if cleaned is not _DROP:
                out[name] = cleaned


def extra_fields(body: str, *, ip: str = "", device_id: str = "") -> str:
    """The other fields of a valid event `body` as JSON text (``{}`` when none).

    `ip` and `device_id` are the event's own values: any copy of them is left out.
    """
    doc = _event_object(body)
    if doc is None:
        return EMPTY
    flat: dict[str, Any] = {}
    own = frozenset(v for v in (ip, device_id) if v)
    _Scrubber(own).flatten(doc, "", 0, flat)
    if not flat:
        return EMPTY
    text = json.dumps(flat, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return TOO_LARGE if len(text) > MAX_BYTES else text
