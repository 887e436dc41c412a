"""Addresses and an event's own ip and device id inside free text (pure).

A producer can put an address or a device id anywhere: in a note (``"login
from 203.0.113.7 via proxy"``), a URL, a key (``{"seen_203.0.113.7": 1}``),
another case (``DEV-ABC-123``), a number. `finding` says whether a text holds
one, `redact` replaces each with a marker. A text holds

* an **address** when any part of it reads as an IPv4 or IPv6 address: four
  dot-separated numbers whose inner two are octets, decimal, octal or hex
  (``203.0.113.7``, ``203.0.113.7:443``, ``http://203.0.113.7/login``,
  ``0xCB.0x00.0x71.0x07``, ``1.2.3.4.5``; a four-part version such as
  ``1.0.0.1`` is one too), four dash-separated ones
  (``ip-198-51-100-2.ec2.internal``), a ``::`` (every compressed IPv6
  address has one: ``[2001:db8::1]:443``), or eight colon-separated groups
  of hex digits;
* the event's **own ip** or **device id** when it contains them, ignoring
  case; the device id also by its letters and digits alone (``devabc123``);
  the own ip also as its 32-bit integer (``3405803783``, ``cb007107``), its
  octets with short separators (``203-0-113-7``, ``[203, 0, 113, 7]``) or
  zero-padded (``203000113007``), and any run inet_aton reads as it
  (``203.0.28935``).

Each text is read as written, decoded (HTML entities, ``\\u``/``\\x``
escapes, percent-encoding; up to three times over) and normalised (NFKC
without format characters and combining marks, any script's digits as
ASCII, other non-ASCII non-letters as dots). `finding_across` reads pieces
one after another. Other encodings (base64, reversal, hashing) and other
addresses as one integer or in short forms (``127.1``) are not seen: what
reaches the lake is first limited to names the operator allows.
"""

from __future__ import annotations

import html
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote

ADDRESS = "address"
OWN_IP = "own_ip"
OWN_DEVICE_ID = "own_device_id"

# A whole inner octet: decimal (any leading zeros), octal or hex, as inet_aton reads them.
_MID = r"(?:0*(?:1?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])|0[0-7]{1,3}|0[xX]0*[0-9A-Fa-f]{1,2})"
_DEC = r"(?:0*(?:1?[0-9]?[0-9]|2[0-4][0-9]|25[0-5]))"
# Two patterns, each led by a lookahead on its first character: one alternation was ten
# times slower. 203.0.113.7, 0xCB.0x00.0x71.0x07; ip-203-0-113-7.internal
_IPV4_DOTS = re.compile(rf"(?=[0-9xX])(?:[0-9]|[xX][0-9A-Fa-f]+)\.{_MID}\.{_MID}\.[0-9]")
_IPV4_DASHES = re.compile(rf"(?=[0-9])(?<![0-9])[0-9]{{1,3}}-{_DEC}-{_DEC}-[0-9]{{1,3}}(?![0-9])")
_IPV6 = re.compile(r"::|[0-9A-Fa-f]:(?:[0-9A-Fa-f]{1,4}:){6}[0-9A-Fa-f]")
# What `redact` replaces around a match: the whole run of address characters.
_IPV4_RUN = re.compile(r"[0-9A-Fa-fXx.-]+")
# A run that inet_aton may read as one IPv4 address (``203.0.28935``, ``0313.0.0161.07``).
_ATON_RUN = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){1,3}|0[0-7]{9,11}")
# Octets with any separators, read as dotted: separators, leading zeros and 0x go.
_SEPARATORS = re.compile(r"[^0-9a-z]+")
_LEADING = re.compile(r"(?<![0-9a-z])(?:0x0*|0+)(?=[0-9a-f])")
_ATON_LIMITS = {1: (1 << 32,), 2: (1 << 8, 1 << 24), 3: (1 << 8, 1 << 8, 1 << 16)}
_ATON_LIMITS[4] = (1 << 8,) * 4
_NOT_ALNUM = re.compile(r"[^0-9a-z]")
_ESCAPE = re.compile(r"\\+(?:u([0-9A-Fa-f]{4})|x([0-9A-Fa-f]{2}))")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]+")
MARKERS = {ADDRESS: "[address]", OWN_IP: "[ip]", OWN_DEVICE_ID: "[device_id]"}
HIDDEN = "[hidden]"  # a text whose PII `redact` could not cut out piece by piece


class _Quad(NamedTuple):
    """An own IPv4 address as `_ip` looks for it beyond its plain spellings."""

    value: int
    dotted: tuple[str, ...]  # its octets, decimal and hex, as `_ip` squashes a text: .cb.0.71.7.
    octets: tuple[tuple[str, ...], ...]  # the octets each of those needs, to skip most texts
    first: tuple[str, ...]  # what an inet_aton run (203.0.28935, 0313.0.0161.07) starts with

    @classmethod
    def of(cls, value: int) -> _Quad:
        packed = value.to_bytes(4)
        octets = tuple(tuple(f"{b:{base}}" for b in packed) for base in ("d", "x"))
        first = (f"{packed[0]}", "0x", f"{packed[0]:o}", f"{value:o}")  # hex needs 0x
        return cls(value, tuple("." + ".".join(o) + "." for o in octets), octets, first)


@dataclass(frozen=True, slots=True)
class Own:
    """The values a text must not hold besides addresses: an event's ip and device id."""

    ips: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    quads: tuple[_Quad, ...] = ()  # the IPv4 ones, for their octets and inet_aton's spellings
    device_alnums: tuple[tuple[str, frozenset[str]], ...] = ()  # letters and digits only

    @classmethod
    def of(cls, ips: Iterable[str], device_ids: Iterable[str]) -> Own:
        """The spellings to look for (case-folded), empty values left out."""
        spelled: set[str] = set()
        ipv4s: set[int] = set()
        for ip in ips:
            spelled.update(_ip_spellings(ip, ipv4s))
        found = {d.casefold() for d in device_ids if d.strip()}
        alnums = {_NOT_ALNUM.sub("", _ascii_digits(d)) for d in found}
        return cls(
            tuple(sorted(spelled, key=len, reverse=True)),
            tuple(sorted(found)),
            tuple(_Quad.of(n) for n in sorted(ipv4s)),
            tuple((a, frozenset(a)) for a in sorted(alnums) if a),
        )


def _ip_spellings(ip: str, ipv4s: set[int]) -> set[str]:
    """The spellings of `ip` to look for; an IPv4 one's integer is added to `ipv4s`."""
    text = ip.strip()
    if not text:
        return set()
    out = {text.casefold()}
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return out
    out.add(address.compressed.casefold())
    out.add(address.exploded.casefold())
    # As an integer, decimal and hex; short ones (0.x.x.x) would match ordinary numbers.
    if address.version == 6:
        out.add(f"{int(address):032x}")
        return out
    ipv4s.add(int(address))
    if int(address) >= 1 << 24:
        out.add(str(int(address)))
        out.add(f"{int(address):08x}")
        out.add("".join(f"{b:03d}" for b in address.packed))  # 203000113007
    return out


def _ascii_digits(text: str) -> str:
    """`text` with every decimal digit of any script (``٢``, ``２``) as its ASCII one."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _variants(text: str) -> list[str]:
    """`text` as written, decoded and normalised: every reading a person might make of it.

    Decoded is HTML-unescaped, ``\\u0032``/``\\x32`` escapes and percent
    signs read, up to three times over (``%252E``). Normalised is NFKC without
    format characters and combining marks, digits of any script as ASCII, and
    any other character outside ASCII that is not a letter (``。``, ``‐``) as a dot.
    """
    out = [text]
    for _ in range(3):  # each round reads all three: at most four readings, not 3**3
        decoded = _decoded(out[-1])
        if decoded == out[-1]:
            break
        out.append(decoded)
    return out + [_normal(v) for v in out if not v.isascii()]


def _decoded(text: str) -> str:
    if "&" in text:
        text = html.unescape(text)
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    if "%" in text:
        text = unquote(text)
    return text


def _normal(text: str) -> str:
    normal = unicodedata.normalize("NFKC", text)
    kept = "".join(c for c in normal if unicodedata.category(c) not in _UNSEEN)
    return "".join(c if c.isascii() or c.isalpha() else "." for c in _ascii_digits(kept))


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group(1) or match.group(2), 16))


_UNSEEN = frozenset({"Cf", "Mn", "Me"})


def _aton(run: str) -> int | None:
    """The IPv4 address inet_aton reads in `run` (``203.0.28935``, ``0xCB.0.0161.7``), or None."""
    parts = run.strip(".").split(".")
    limits = _ATON_LIMITS.get(len(parts))
    if limits is None:
        return None
    value = 0
    for part, limit in zip(parts, limits, strict=True):
        try:
            if part[:2] in ("0x", "0X"):
                number = int(part[2:], 16)
            elif part[:1] == "0" and len(part) > 1:
                number = int(part, 8)
            else:
                number = int(part, 10)
        except ValueError:
            return None
        if not 0 <= number < limit:
            return None
        value = value * limit + number
    return value


def _device(folded: str, own: Own) -> bool:
    if any(d in folded for d in own.device_ids):
        return True
    # Most texts lack a letter or digit of the id: they are spared the rewrite.
    found = [a for a, chars in own.device_alnums if chars.issubset(folded)]
    if not found:
        return False
    alnum = _NOT_ALNUM.sub("", folded)
    return any(a in alnum for a in found)


def _ip(folded: str, own: Own) -> bool:
    if any(ip in folded for ip in own.ips):
        return True
    squashed = None
    for quad in own.quads:
        for dotted, octets in zip(quad.dotted, quad.octets, strict=True):
            if all(o in folded for o in octets):  # else the text cannot hold them
                squashed = squashed or f".{_LEADING.sub('', _SEPARATORS.sub('.', folded))}."
                if dotted in squashed:
                    return True
        if any(f in folded for f in quad.first) and any(
            _aton(m.group()) == quad.value for m in _ATON_RUN.finditer(folded)
        ):
            return True
    return False


def _reading(variant: str, own: Own, *, addresses: bool = True) -> str | None:
    folded = variant.casefold()
    if _device(folded, own):
        return OWN_DEVICE_ID
    if _ip(folded, own):
        return OWN_IP
    if not addresses:
        return None
    if _IPV4_DOTS.search(variant) or _IPV4_DASHES.search(variant) or _IPV6.search(variant):
        return ADDRESS
    return None


def finding(text: str, own: Own) -> str | None:
    """Why `text` may identify an address or a device (`OWN_DEVICE_ID`, `OWN_IP`, `ADDRESS`)."""
    for variant in _variants(text):
        why = _reading(variant, own)
        if why is not None:
            return why
    return None


def finding_across(pieces: Sequence[str], own: Own) -> str | None:
    """What `pieces` read one after another hold: joined as they are, the own values
    (``["dev-abc", "-123"]``); with a separator between them, also addresses
    (``[203, 0, 113, 7]``). Addresses are not sought in pieces run together,
    where a version and a number (``2.3.0`` and ``1.5 stars``) make one."""
    for variant in _variants("".join(pieces)):
        why = _reading(variant, own, addresses=False)
        if why is not None:
            return why
    return finding("\n".join(pieces), own)


def redact(text: str, own: Own) -> str:
    """`text` with every address and own value replaced by its marker (`MARKERS`).

    Addresses go first (the whole run of address characters around one, so
    a port or prefix may stay: ``[address]:443``), then own values in any
    case. If a normalised, unescaped or decoded reading holds something, or
    what is left still does, the whole text becomes `HIDDEN`.
    """
    variants = _variants(text)
    if not any(_reading(v, own) for v in variants):
        return text
    if any(v != text and _reading(v, own) for v in variants):
        return HIDDEN  # cutting what the text shows might leave what a reading sees
    out = _replace_runs(text, _IPV4_DOTS, _IPV4_RUN)
    out = _replace_runs(out, _IPV4_DASHES, _IPV4_RUN)
    out = _replace_runs(out, _IPV6, _IPV6_RUN)
    for kind, values in ((OWN_DEVICE_ID, own.device_ids), (OWN_IP, own.ips)):
        for value in values:
            out = re.sub(re.escape(value), MARKERS[kind], out, flags=re.IGNORECASE)
    return HIDDEN if finding(out, own) is not None else out


def _replace_runs(text: str, match: re.Pattern[str], run: re.Pattern[str]) -> str:
    """Replace each run of `run` characters that holds a `match` with the address marker."""
    return run.sub(lambda m: MARKERS[ADDRESS] if match.search(m.group()) else m.group(), text)
