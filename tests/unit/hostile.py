"""Adversarial message bodies near SQS's 256 KiB limit, one per shape.

Each shape spends the byte budget on one thing a parser may pay for out of
proportion (width, depth, key length, string length, number length, escapes,
repeats) or mixes them. `corpus()` is deterministic so a failure replays.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.unit.helpers import RECORD

LIMIT = 256 * 1024
TARGET = 250_000  # a little under LIMIT, so every shape is decoded


def _fill(
    unit: Callable[[int], str], open_: str, close: str, sep: str = ",", target: int = TARGET
) -> str:
    """`open_` + as many `unit(i)` as fit in `target` bytes + `close`."""
    parts: list[str] = []
    size = len(open_.encode()) + len(close.encode())
    i = 0
    while True:
        piece = unit(i)
        cost = len(piece.encode("utf-8", "surrogatepass")) + len(sep)
        if size + cost > target:
            break
        parts.append(piece)
        size += cost
        i += 1
    return open_ + sep.join(parts) + close


def _record_plus(extra: str) -> str:
    """The sample record with `extra` (JSON members, no braces) spliced in."""
    return json.dumps(RECORD)[:-1] + ", " + extra + "}"


def _pad(prefix: str, suffix: str, unit: str) -> str:
    """prefix + unit repeated to fill TARGET + suffix."""
    room = TARGET - len((prefix + suffix).encode("utf-8", "surrogatepass"))
    count = room // len(unit.encode("utf-8", "surrogatepass"))
    return prefix + unit * count + suffix


def _record_with(field: str, raw: str) -> str:
    """The sample record with `field` set to the raw JSON text `raw`."""
    rest = {k: v for k, v in RECORD.items() if k != field}
    return json.dumps(rest)[:-1] + f', "{field}": {raw}}}'


def _sns(inner: str) -> str:
    return json.dumps({"Type": "Notification", "Message": inner})


def _long_parent(parent: str, target: int = TARGET) -> str:
    """A parent key of half the budget over as many small children as fit in the rest."""
    children = _fill(lambda i: f'"{i}":0', "{", "}", target=target // 2 - 300)
    key = parent * ((target // 2) // len(parent))
    return _record_plus(f'"{key}": {children}')


def _mix() -> str:
    """Wide, long keys, non-ASCII strings, arrays, floats and deep nesting at once."""
    member = '"' + "k" * 64 + '{i}": [{{"b": "' + "é" * 8 + '"}}, 1e9]'
    wide = _fill(lambda i: member.format(i=i), "{", "}", target=TARGET - 1_300)
    return _record_plus(f'"a": {wide}, "d": ' + "[" * 400 + "]" * 400)


def corpus() -> dict[str, str]:
    """Shape name → body, each at most `LIMIT` bytes of UTF-8 (the 'over' ones excepted)."""
    shapes: dict[str, str] = {
        # the known hole: parent key + child key built for each of ~12k children
        "long-parent-key": _long_parent("p"),
        "long-parent-key-stored-prefix": _long_parent("device"),
        "long-parent-under-device": '{"device": ' + _long_parent("q") + "}",
        "wide-object": _fill(lambda i: f'"k{i}":0', "{", "}"),
        "wide-object-in-record": _record_plus(_fill(lambda i: f'"k{i}":{i}', "", "")),
        "wide-under-device": _record_plus('"device": ' + _fill(lambda i: f'"k{i}":0', "{", "}")),
        "wide-empty-keys": _fill(lambda i: '"":0', "{", "}"),
        "wide-repeated-ip": _fill(lambda i: '"ip":"1.1.1.1"', "{", "}"),
        "wide-repeated-device": _fill(lambda i: f'"device":{{"id":"{i}"}}', "{", "}"),
        "wide-nested-objects": _fill(lambda i: f'"a{i}":{{"b":{{"c":0}}}}', "{", "}"),
        "deep-objects": _pad("", "", '{"a":') + "1",
        "deep-arrays": "[" * (TARGET // 2) + "]" * (TARGET // 2),
        "deep-device": _pad("", "", '{"device":') + "1",
        "deep-in-record": _record_plus('"x": ' + "[" * 120_000 + "]" * 120_000),
        "deep-900-in-record": _record_plus('"x": ' + '{"n":' * 900 + "0" + "}" * 900),
        "long-key": json.dumps({**RECORD, "k" * TARGET: 1}),
        "long-stored-like-key": json.dumps({**RECORD, "ip" * (TARGET // 2): 1}),
        "long-user-id": json.dumps({**RECORD, "user_id": "u" * TARGET}),
        "long-ip": json.dumps({**RECORD, "ip": "1" * TARGET}),
        "long-ipv6-like": json.dumps({**RECORD, "ip": "::" + "f" * TARGET}),
        "long-device-id": json.dumps({**RECORD, "device_id": "d" * TARGET}),
        "long-app-version": json.dumps({**RECORD, "app_version": "1." * (TARGET // 2)}),
        "long-app-version-digits": json.dumps({**RECORD, "app_version": "9" * TARGET}),
        "long-string-extra": json.dumps({**RECORD, "x": "s" * TARGET}),
        "escaped-unicode": _record_plus(_pad('"x": "', '"', "\\u00e9")),
        "escaped-surrogate-pairs": _record_plus(_pad('"x": "', '"', "\\ud83d\\ude00")),
        "escaped-lone-surrogates": _pad('{"device_id": "', '"}', "\\ud800"),
        "escaped-quotes": _record_plus(_pad('"x": "', '"', '\\"')),
        "escaped-control-in-ip": json.dumps({**RECORD, "ip": "\n" * (TARGET // 3)}),
        "raw-two-byte-text": json.dumps({**RECORD, "x": "é" * (TARGET // 2)}, ensure_ascii=False),
        "raw-astral-text": json.dumps({**RECORD, "x": "😀" * (TARGET // 4)}, ensure_ascii=False),
        "array-of-ints": _fill(lambda i: "0", "[", "]"),
        "array-of-objects": _fill(lambda i: "{}", "[", "]"),
        "array-of-arrays": _fill(lambda i: "[]", "[", "]"),
        "array-of-strings": _fill(lambda i: '"ab"', "[", "]"),
        "array-of-floats": _fill(lambda i: "1e300", "[", "]"),
        "array-of-nulls": _fill(lambda i: "null", "[", "]"),
        "array-of-pairs": _fill(lambda i: '{"ip":"1.2.3.4"}', "[", "]"),
        "array-in-stored-field": json.dumps({**RECORD, "ip": [0] * (TARGET // 3)}),
        "huge-int": "9" * TARGET,
        "huge-int-in-field": _record_with("ip", "9" * (TARGET - 300)),
        "huge-int-extra": _record_plus('"x": ' + "9" * (TARGET - 300)),
        "many-4300-digit-ints": _record_plus(
            '"x": ' + _fill(lambda i: "7" * 4300, "[", "]")[: TARGET - 400].rpartition(",")[0] + "]"
        ),
        "huge-float": _record_plus('"x": 0.' + "1" * (TARGET - 300)),
        "huge-exponent": _record_plus('"x": 1e' + "9" * (TARGET - 300)),
        "whitespace-padding": _pad(json.dumps(RECORD)[:-1], "}", " "),
        "sns-wide-inner": _sns(_fill(lambda i: f'"k{i}":0', "{", "}", target=TARGET * 2 // 3)),
        "sns-long-parent-inner": _sns(_long_parent("p", target=TARGET * 2 // 3)),
        "sns-deep-inner": _sns("[" * (TARGET // 4) + "]" * (TARGET // 4)),
        "mix-wide-deep-long": _mix(),
        # over the limit: refused before decoding, however cheap or costly
        "over-limit-wide": _fill(lambda i: f'"k{i}":0', "{", "}") + " " * 20_000,
        "over-limit-megabyte": '"' + "x" * 1_048_576 + '"',
        "over-limit-in-bytes": json.dumps({**RECORD, "x": "é" * 140_000}, ensure_ascii=False),
    }
    return shapes
