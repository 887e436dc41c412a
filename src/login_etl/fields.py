"""The stored fields of a JSON message body, every repeated key seen (pure).

`exact_fields` decodes with the standard library, keeping each JSON object
as its list of (key, value) pairs, so a stored field given twice is seen
however it is spelled; it unwraps an SNS envelope and flattens nested
objects (``{"device": {"id": …}}`` → ``device_id``). Its cost stays
proportional to the body: numbers are never converted (none is stored), and
only names that can become stored fields are built, so a long key over
thousands of children costs its bytes, not their product.

Problems come back as an `Invalid` whose reason is from a closed set: a
fixed word, or a fixed word, ``:`` and a stored field name; never message
content.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec


class Values(msgspec.Struct, gc=False):
    """The stored fields of an event, by name, as sent; UNSET where absent.

    The event fields the record's columns are made from (`record.Column.field`).
    """

    user_id: Any = msgspec.UNSET
    device_type: Any = msgspec.UNSET
    ip: Any = msgspec.UNSET
    device_id: Any = msgspec.UNSET
    app_version: Any = msgspec.UNSET
    locale: Any = msgspec.UNSET


STORED: tuple[str, ...] = Values.__struct_fields__
_STORED = frozenset(STORED)
_LONGEST = max(map(len, STORED))
# Prefixes a nested object's name must have to flatten into a stored field
# ({"device": {"id": …}} → device_id), each with the first field it can spell.
_PREFIXES: dict[str, str] = {}
for _field in STORED:
    for _at, _char in enumerate(_field):
        if _char == "_":
            _PREFIXES.setdefault(_field[: _at + 1], _field)


class Invalid(msgspec.Struct, frozen=True, gc=False):
    """Why a message can never load."""

    reason: str


# -- the decoder ------------------------------------------------------------------


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, repeated keys included."""

    __slots__ = ()


class _Number:
    """Any JSON number: never stored, so its value is never needed (nor converted)."""

    __slots__ = ()


_A_NUMBER = _Number()


def _number(_text: str) -> _Number:
    return _A_NUMBER


_EXACT_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object, parse_int=_number, parse_float=_number, parse_constant=_number
)


def _sns_message(doc: _Object) -> str | Invalid | None:
    """The message inside an SNS notification envelope, or None if `doc` is not one."""
    types = [value for key, value in doc if key == "Type"]
    if "Notification" not in types:
        return None
    messages = [value for key, value in doc if key == "Message"]
    if not messages:
        return None
    if len(types) > 1 or len(messages) > 1 or type(messages[0]) is not str:
        return Invalid("invalid_sns_message")
    return messages[0]


def _first_stored(value: Any, prefix: str) -> str | None:
    """The first stored field a nested object under `prefix` spells, if any."""
    if type(value) is _Object:
        for key, _ in value:
            if len(key) <= _LONGEST and prefix + key in _STORED:
                return prefix + key
    return None


def _collect(obj: _Object, prefix: str, found: dict[str, Any]) -> Invalid | None:
    """Put the stored fields under `obj` into `found`, flattening nested names.

    Only names that can become stored fields are built: any other key is
    skipped at once, however long, and its value is never walked.
    """
    seen: dict[str, Any] = {}
    for key, value in obj:
        if len(key) > _LONGEST:
            continue
        name = prefix + key
        stands_for = _PREFIXES.get(name + "_")
        if stands_for is None:
            if name not in _STORED:
                continue
            stands_for = name
        if key in seen:  # a key that is or leads to a stored field, twice in one object
            if stands_for != name:  # name the field the repeated objects spell, if one does
                stands_for = (
                    _first_stored(seen[key], name + "_")
                    or _first_stored(value, name + "_")
                    or stands_for
                )
            return Invalid(f"duplicate_field:{stands_for}")
        seen[key] = value
        if type(value) is _Object:
            if stands_for != name:
                problem = _collect(value, name + "_", found)
                if problem is not None:
                    return problem
            continue  # an object at a stored name flattens away from it (`ip_x`)
        if stands_for == name:
            if name in found:
                return Invalid(f"conflicting_field:{name}")
            found[name] = value
    return None


def exact_fields(body: str, *, unwrap: bool = True) -> Values | Invalid:
    """The stored fields of `body`, or why there are none.

    An SNS envelope is unwrapped once: its message is read the same way.
    """
    try:
        doc = _EXACT_DECODER.decode(body)
    except (ValueError, RecursionError):
        return Invalid("invalid_json")
    if type(doc) is not _Object:
        return Invalid("not_an_object")
    if unwrap:
        inner = _sns_message(doc)
        if isinstance(inner, Invalid):
            return inner
        if inner is not None:
            return exact_fields(inner, unwrap=False)
    found: dict[str, Any] = {}
    problem = _collect(doc, "", found)
    if problem is not None:
        return problem
    return Values(**found)


_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_IP_WORDS = frozenset({"ip", "ips", "ipv4", "ipv6", "ipaddr", "ipaddress"})


def address_field(name: str) -> str | None:
    """``"ip"`` or ``"device_id"`` when a field name may hold one, else None.

    The name is split into lower-case words (``ipAddress``, ``client_ip``,
    ``Device-ID``, a flattened ``device_id``): a word like ``ip`` makes it an
    address, ``device`` with ``id`` (or ``deviceid``) a device id. `rejects list --show-bodies`
    masks such fields.
    """
    found = frozenset(w.lower() for w in _WORDS.findall(name))
    if found & _IP_WORDS:
        return "ip"
    if {"device", "id"} <= found or "deviceid" in found:
        return "device_id"
    return None
