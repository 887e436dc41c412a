"""What a key holder is shown: text safe for a terminal, bodies with PII masked (pure).

`escape` makes any text one harmless line: a value stored before the strict
rules (or a body, which can hold anything) may carry a newline that would
break ``psql … | login-etl unmask`` pairing, or an escape sequence aimed at
the reader's terminal.

`masked_body` shows a rejected body with every ``ip`` and ``device_id``
replaced by its mask (the one `user_logins` would hold, so it can be matched
against loaded rows): at any depth, in flattened names (``{"device":
{"id": …}}``), in names that end in one (``client_ip``, ``old_device_id``),
and inside an SNS envelope's message; a string that is an address is masked
as an ip wherever it sits. Everywhere else, in keys, strings and numbers,
what `scan` finds is replaced by a marker: any address inside a text
(``"from [address]:443"``), and the body's own ip and device id (the values
of those fields) in any case (``{"[device_id]": 1}``). A body that is not
JSON cannot be searched for those fields, so it is hidden whole, as is one
whose shown texts, read one after another, hold what none holds alone
(``["dev-abc", "-123"]``).
"""

from __future__ import annotations

import json
from typing import Any

from login_etl import scan
from login_etl.events import canonical_ip
from login_etl.fields import address_field
from login_etl.masking import Masker

_HIDDEN = "***"


def escape(text: str) -> str:
    """`text` as one printable line, readable back without doubt.

    Every character Python does not call printable (controls, line and
    paragraph separators, format characters such as bidi overrides, lone
    surrogates, unassigned code points, spaces other than U+0020) is written
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, and a backslash ``\\\\``.
    """
    if text.isprintable() and "\\" not in text:
        return text  # the usual case, without a walk per character
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif not char.isprintable():
            code = ord(char)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


class _Object(list[tuple[str, Any]]):
    """A JSON object as its pairs: repeated keys are kept (and masked) too."""

    __slots__ = ()


class _Raw(str):
    """A JSON number or constant, written back exactly as it was."""

    __slots__ = ()


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object, parse_int=_Raw, parse_float=_Raw, parse_constant=_Raw
)


def masked_body(body: str, masker: Masker) -> str:
    """`body` re-encoded with every ip and device_id masked; hidden whole if not JSON."""
    try:
        doc = _DECODER.decode(body)
        ips: list[str] = []
        device_ids: list[str] = []
        _own_values(doc, "", {"ip": ips, "device_id": device_ids})
        own = scan.Own.of(ips, device_ids)
        pieces = _Pieces()
        shown = _walk(doc, "", masker, own, pieces)
        if scan.finding_across(pieces.all, own) or scan.finding_across(pieces.texts, own):
            # Split over keys or elements (``["dev-abc", "-123"]``): no one piece to cut.
            return f"[{len(body)} characters, PII in pieces: hidden; --reveal-pii shows them]"
        return _encode(shown)
    except (ValueError, RecursionError):
        return f"[{len(body)} characters, not JSON: hidden; --reveal-pii shows them]"


def _pii_field(name: str) -> str | None:
    """`ip` or `device_id` when a (flattened) name may hold one: the lake's rule."""
    return address_field(name)


def _own_values(value: Any, prefix: str, found: dict[str, list[str]]) -> None:
    """Collect the texts of every ip and device_id field (as `_walk` finds them) into `found`."""
    if type(value) is _Object:
        for key, child in value:
            field = _pii_field(prefix + key)
            if field is not None:
                _leaves(child, found[field])
            else:
                _own_values(child, prefix + key + "_", found)
    elif isinstance(value, list):
        for item in value:
            _own_values(item, "", found)
    elif type(value) is str and value.strip("\ufeff \t\n\r")[:1] in ("{", "["):
        try:
            _own_values(_DECODER.decode(value.strip("\ufeff \t\n\r")), "", found)
        except (ValueError, RecursionError):
            pass  # hidden whole by `_walk`


def _leaves(value: Any, into: list[str]) -> None:
    if type(value) is _Object:
        for _, child in value:
            _leaves(child, into)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, into)
    elif isinstance(value, str):  # strings and numbers as written
        into.append(value)


class _Pieces:
    """What `_walk` shows besides masks, in order: keys and texts (`all`), and `texts` alone."""

    def __init__(self) -> None:
        self.all: list[str] = []
        self.texts: list[str] = []


def _walk(value: Any, prefix: str, masker: Masker, own: scan.Own, pieces: _Pieces) -> Any:
    """`value` with PII masked; `prefix` is the flattened name of the enclosing objects."""
    if type(value) is _Object:
        out = _Object()
        for key, child in value:
            field = _pii_field(prefix + key)
            shown = scan.redact(key, own)
            pieces.all.append(shown)
            if field is not None:
                out.append((shown, _mask(field, child, masker)))
            else:
                out.append((shown, _walk(child, prefix + key + "_", masker, own, pieces)))
        return out
    if isinstance(value, list):
        return [_walk(item, "", masker, own, pieces) for item in value]
    if type(value) is str and value.strip("\ufeff \t\n\r")[:1] in ("{", "["):
        try:  # an envelope's message: JSON inside a string (a BOM before it too)
            inner = _DECODER.decode(value.strip("\ufeff \t\n\r"))
        except (ValueError, RecursionError):
            # Cannot be searched for PII fields, like a body that is not JSON: hidden.
            return f"[{len(value)} characters, not JSON: hidden; --reveal-pii shows them]"
        return _encode(_walk(inner, "", masker, own, pieces))
    if type(value) is str and canonical_ip(value.strip()) is not None:
        return _mask("ip", value, masker)  # an address under an innocent name
    if isinstance(value, str):  # a string, or a number as written (shown as a string if cut)
        shown = scan.redact(value, own)
        pieces.all.append(shown)
        pieces.texts.append(shown)
        return value if shown == value else shown
    return value


def _mask(field: str, value: Any, masker: Masker) -> Any:
    """The mask `user_logins` would hold for this value (canonical ip), or ``***``."""
    if value is None:
        return None
    text = value if type(value) is str else _encode(value)
    if field == "ip":
        text = canonical_ip(text) or text
    try:
        return masker.mask(field, text)
    except UnicodeEncodeError:  # a lone surrogate: no mask exists for it
        return _HIDDEN


def _encode(value: Any) -> str:
    if type(value) is _Raw:
        return str(value)
    if type(value) is _Object:
        return "{" + ", ".join(f"{json.dumps(k)}: {_encode(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_encode(v) for v in value) + "]"
    return json.dumps(value)
