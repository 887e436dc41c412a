"""What the lake record keeps beyond the stored fields (pure): deny by default.

`user_logins` keeps six fields of an event; the lake can keep more, in its
`extra` column, but only fields the operator names: a flattened name
(``{"geo": {"city": …}}`` → ``geo_city``) in ``LOGIN_ETL_LAKE_EXTRA_FIELDS``.
Nothing else the producer sends reaches the lake, so by default `extra` is
``{}``.

An allowed field is still left out when its name or any value in it (every
leaf of an array or of an object inside one, keys included) holds an address
or the event's own ip or device id (`login_etl.scan`), or cannot be strict
JSON: a string with a lone surrogate, a number that is not finite (``NaN``,
``1e999``) or an integer beyond 64 bits. Inside an array only the offending
element (or key and value) goes. When what is kept, read one text after
another, holds what no text holds alone (``["dev-abc", "-123"]``), `extra`
is ``{}``. `app_version_raw` is emptied by the same
scan. Each value left out is counted by its reason (`DROP_REASONS`).

The text is sorted, ASCII-only RFC 8259 JSON. Cost stays proportional to the
body: names over `MAX_NAME` characters and anything deeper than `MAX_DEPTH`
are left out, and an `extra` over `MAX_BYTES` is replaced by
``{"_omitted":"too_large"}``.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from login_etl import scan
from login_etl.fields import STORED

EMPTY = "{}"
TOO_LARGE = '{"_omitted":"too_large"}'
MAX_DEPTH = 8
MAX_NAME = 256
MAX_BYTES = 64 * 1024
NOT_UNICODE = "not_unicode"
NUMBER = "number"
TOO_LARGE_REASON = "too_large"
# Why a value was left out: the closed label set of the drop counter.
DROP_REASONS = (scan.ADDRESS, scan.OWN_IP, scan.OWN_DEVICE_ID, NOT_UNICODE, NUMBER, "too_large")
_STORED = frozenset(STORED)
_INT64 = 1 << 63
_DROP = object()


class _Number(str):
    """A JSON number or constant as written: scanned as text, converted only if kept."""

    __slots__ = ()


_DECODER = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_Number)


class Kept(NamedTuple):
    """What the lake keeps of one event beyond its columns, and why anything was left out."""

    extra: str
    app_version_raw: str
    dropped: tuple[str, ...] = ()  # one reason (DROP_REASONS) per value left out


def _event_object(body: str) -> dict[str, Any] | None:
    """The event's JSON object (unwrapped from an SNS envelope), or None."""
    try:
        doc = _DECODER.decode(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            inner = doc.get("Message")
            if isinstance(inner, str):
                doc = _DECODER.decode(inner)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _prefixes(allowed: frozenset[str]) -> frozenset[str]:
    """Every ``name_`` that a nested object must flatten under to reach an allowed name."""
    out = set()
    for name in allowed:
        at = name.find("_")
        while at != -1:
            out.add(name[: at + 1])
            at = name.find("_", at + 1)
    return frozenset(out)


class _Keeper:
    """Walks one event's fields, keeping the allowed ones that identify no address or device."""

    def __init__(self, allowed: frozenset[str], own: scan.Own) -> None:
        self._allowed = allowed
        self._prefixes = _prefixes(allowed)
        self._own = own
        self.dropped: list[str] = []
        # Off for a first pass that only keeps to strict JSON; `numbers` notes what it saw.
        self.scanning = True
        self.numbers: list[str] = []

    def _why(self, text: str) -> str | None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: DuckDB refuses the whole column
            return NOT_UNICODE
        return scan.finding(text, self._own) if self.scanning else None

    def text(self, text: str) -> bool:
        """True when `text` may be kept; otherwise its reason is counted."""
        why = self._why(text)
        if why is not None:
            self.dropped.append(why)
        return why is None

    def value(self, value: Any, depth: int) -> Any:
        """`value` as kept, or `_DROP` (its reasons counted)."""
        if type(value) is _Number:
            return self._number(value)
        if isinstance(value, str):
            return value if self.text(value) else _DROP
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            return _DROP
        if isinstance(value, dict):
            kept = {}
            for key, inner in value.items():
                if not self.text(key):
                    continue
                cleaned = self.value(inner, depth + 1)
                if cleaned is not _DROP:
                    kept[key] = cleaned
            return kept
        if isinstance(value, list):
            items = (self.value(v, depth + 1) for v in value)
            return [v for v in items if v is not _DROP]
        return value  # true, false, null

    def _number(self, raw: str) -> Any:
        if not self.scanning:
            self.numbers.append(raw)  # as written: 1e5 is not 100000.0
        if not self.text(raw):
            return _DROP
        number: int | float
        if raw.lstrip("-").isdigit():
            number = int(raw) if len(raw) <= 20 else _INT64  # longer: beyond 64 bits anyway
            if -_INT64 <= number < _INT64:
                return number
        else:
            number = float(raw)  # NaN, Infinity and 1e999 come back not finite
            if math.isfinite(number) and self.text(repr(number)):
                return number
        self.dropped.append(NUMBER)
        return _DROP

    def across(self, flat: dict[str, Any], version: str) -> str | None:
        """What the texts of `flat`, read one after another, hold (`scan.finding_across`).

        A producer can split a value over keys and elements (``["dev-abc",
        "-123"]``, ``{"203.0": ".113.7"}``); the reader sees them side by side.
        The texts are read in the order they are stored (keys included, then
        values alone; `app_version_raw` first). What any one text holds is
        found too, so a clean result spares the search of each.
        """
        pieces = [version]
        _pieces(flat, pieces, keys=True)
        values = [version]
        _pieces(flat, values, keys=False)
        return (
            scan.finding_across(pieces, self._own)
            or scan.finding_across(values, self._own)
            or scan.finding("\n".join(self.numbers), self._own)
        )

    def flatten(self, obj: dict[str, Any], prefix: str, depth: int, out: dict[str, Any]) -> None:
        """Put the allowed fields under `obj` into `out`, by flattened name."""
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if len(name) > MAX_NAME or name in out or name in _STORED:
                continue
            if isinstance(value, dict) and depth < MAX_DEPTH:
                if f"{name}_" in self._prefixes:
                    self.flatten(value, f"{name}_", depth + 1, out)
                continue
            if name not in self._allowed or not self.text(name):
                continue
            cleaned = self.value(value, depth + 1)
            if cleaned is not _DROP:
                out[name] = cleaned


def _pieces(value: Any, into: list[str], *, keys: bool) -> None:
    """Every leaf text (and key) under `value`, in the order the stored JSON has them."""
    if isinstance(value, dict):
        for key in sorted(value):
            if keys:
                into.append(key)
            _pieces(value[key], into, keys=keys)
    elif isinstance(value, list):
        for item in value:
            _pieces(item, into, keys=keys)
    elif isinstance(value, str):
        into.append(value)
    elif value is not None and not isinstance(value, bool):
        into.append(json.dumps(value))


def keep(
    body: str, app_version_raw: str, allowed: frozenset[str], *, ip: str, device_id: str
) -> Kept:
    """What the lake keeps of a valid event `body`: its allowed fields and full version text.

    `ip` and `device_id` are the event's own values: a field or version
    holding either (in any case) is left out, as is one holding an address.
    """
    own = scan.Own.of([ip], [device_id])
    keeper = _Keeper(allowed, own)
    version = app_version_raw if keeper.text(app_version_raw) else ""
    extra = EMPTY
    doc = _event_object(body) if allowed else None
    if doc is not None:
        flat: dict[str, Any] = {}
        mark, keeper.scanning = len(keeper.dropped), False
        keeper.flatten(doc, "", 0, flat)
        if flat and keeper.across(flat, version) is not None:
            # Something somewhere: search each text, then what is left as a whole.
            del keeper.dropped[mark:]
            flat, keeper.scanning, keeper.numbers = {}, True, []
            keeper.flatten(doc, "", 0, flat)
            why = keeper.across(flat, version) if flat else None
            if why is not None:
                keeper.dropped.append(why)
                flat = {}
        if flat:
            extra = json.dumps(
                flat, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
            )
        if len(extra) > MAX_BYTES:
            extra = TOO_LARGE
            keeper.dropped.append(TOO_LARGE_REASON)
    return Kept(extra, version, tuple(keeper.dropped))


def extra_fields(
    body: str, allowed: frozenset[str] = frozenset(), *, ip: str = "", device_id: str = ""
) -> str:
    """The allowed fields of a valid event `body` as JSON text (``{}`` when none)."""
    return keep(body, "", allowed, ip=ip, device_id=device_id).extra
