"""The lake record's `extra` column: an event's other fields as JSON (pure).

`user_logins` keeps six fields of an event; the lake keeps the rest too. The
fields are flattened the way the stored ones are (``{"geo": {"city": …}}`` →
``geo_city``) and written as sorted, ASCII-only JSON text. Stored fields are
left out (they have columns; ``ip`` and ``device_id`` only as masks), and so
is any other field named like them (``client_ip``, ``old_device_id``): the
lake never holds a plaintext address or device id.
"""

from __future__ import annotations

import json
import re
from typing import Any

from login_etl.fields import STORED

EMPTY = "{}"
_STORED = frozenset(STORED)
_PII_NAME = re.compile(r"(?:^|_)(?:ip|device_id)$")
# Deeper objects are kept whole under their flattened name, as JSON values.
MAX_DEPTH = 8


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


def _flatten(obj: dict[str, Any], prefix: str, depth: int, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < MAX_DEPTH:
            _flatten(value, f"{name}_", depth + 1, out)
        elif name not in _STORED and not _PII_NAME.search(name) and name not in out:
            out[name] = value


def extra_fields(body: str) -> str:
    """The other fields of a valid event `body` as JSON text (``{}`` when none)."""
    doc = _event_object(body)
    if doc is None:
        return EMPTY
    flat: dict[str, Any] = {}
    _flatten(doc, "", 0, flat)
    if not flat:
        return EMPTY
    return json.dumps(flat, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
