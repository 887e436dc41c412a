"""Addresses and an event's own ip and device id inside free text (pure).

A producer can put an address or a device id anywhere: in a note (``"login
from 203.0.113.7 via proxy"``), a URL, a key (``{"seen_203.0.113.7": 1}``),
another case (``DEV-ABC-123``), a number. `finding` says whether a text holds
one, `redact` replaces each with a marker. A text holds

* an **address** when any part of it reads as an IPv4 or IPv6 address: four
  dot-separated numbers whose inner two are 0-255 (``203.0.113.7``,
  ``203.0.113.7:443``, ``203.0.113.7/32``, ``http://203.0.113.7/login``,
  ``1.2.3.4.5``; a four-part version such as ``1.0.0.1`` is one too), a
  ``::`` (every compressed IPv6 address has one: ``[2001:db8::1]:443``), or
  eight colon-separated groups of hex digits;
* the event's **own ip** or **device id** when it contains them, ignoring
  case; the own ip also as its 32-bit integer (``3405803783``).

Each text is read as written, NFKC-normalised without format characters
(fullwidth digits, zero-width spaces) and percent-decoded. Other encodings
(base64, escapes inside a JSON string) are not seen: what reaches the lake is
first limited to names the operator allows.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

ADDRESS = "address"
OWN_IP = "own_ip"
OWN_DEVICE_ID = "own_device_id"

_MID = r"(?:[01]?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])"  # a whole inner octet, leading zeros allowed
_IPV4 = re.compile(rf"[0-9]\.{_MID}\.{_MID}\.[0-9]")
_IPV6 = re.compile(r"::|[0-9A-Fa-f]:(?:[0-9A-Fa-f]{1,4}:){6}[0-9A-Fa-f]")
# What `redact` replaces around a match: the whole run of address characters.
_IPV4_RUN = re.compile(r"[0-9.]+")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]+")
MARKERS = {ADDRESS: "[address]", OWN_IP: "[ip]", OWN_DEVICE_ID: "[device_id]"}
HIDDEN = "[hidden]"  # a text whose PII `redact` could not cut out piece by piece


@dataclass(frozen=True, slots=True)
class Own:
    """The values a text must not hold besides addresses: an event's ip and device id."""

    ips: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, ips: Iterable[str], device_ids: Iterable[str]) -> Own:
        """The spellings to look for (case-folded), empty values left out."""
        spelled: set[str] = set()
        for ip in ips:
            spelled.update(_ip_spellings(ip))
        found = {d.casefold() for d in device_ids if d.strip()}
        return cls(tuple(sorted(spelled, key=len, reverse=True)), tuple(sorted(found)))


def _ip_spellings(ip: str) -> set[str]:
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
    # As a 32-bit integer; short ones (0.x.x.x) would match ordinary numbers.
    if address.version == 4 and int(address) >= 1 << 24:
        out.add(str(int(address)))
    return out


def _variants(text: str) -> list[str]:
    """`text` as written, NFKC-normalised and percent-decoded."""
    out = [text]
    if not text.isascii():
        normal = unicodedata.normalize("NFKC", text)
        out.append("".join(c for c in normal if unicodedata.category(c) != "Cf"))
    if "%" in text:
        out += [unquote(v) for v in out]
    return out


def finding(text: str, own: Own) -> str | None:
    """Why `text` may identify an address or a device (`OWN_DEVICE_ID`, `OWN_IP`, `ADDRESS`)."""
    for variant in _variants(text):
        folded = variant.casefold()
        if any(d in folded for d in own.device_ids):
            return OWN_DEVICE_ID
        if any(ip in folded for ip in own.ips):
            return OWN_IP
        if _IPV4.search(variant) or _IPV6.search(variant):
            return ADDRESS
    return None


def redact(text: str, own: Own) -> str:
    """`text` with every address and own value replaced by its marker (`MARKERS`).

    Addresses go first (the whole run of address characters around one, so
    a port or prefix may stay: ``[address]:443``), then own values in any
    case. If what is left still holds something (only a normalised or
    percent-decoded reading saw it), the whole text becomes `HIDDEN`.
    """
    if finding(text, own) is None:
        return text
    out = _replace_runs(text, _IPV4, _IPV4_RUN)
    out = _replace_runs(out, _IPV6, _IPV6_RUN)
    for kind, values in ((OWN_DEVICE_ID, own.device_ids), (OWN_IP, own.ips)):
        for value in values:
            out = re.sub(re.escape(value), MARKERS[kind], out, flags=re.IGNORECASE)
    return HIDDEN if finding(out, own) is not None else out


def _replace_runs(text: str, match: re.Pattern[str], run: re.Pattern[str]) -> str:
    """Replace each run of `run` characters that holds a `match` with the address marker."""
    return run.sub(lambda m: MARKERS[ADDRESS] if match.search(m.group()) else m.group(), text)
