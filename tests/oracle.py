"""An independent judge of the bodies tests send: what must load, what must be
rejected and why.

Written from the brief and DESIGN.md, not from `login_etl.events`, so a test
that compares the service's outcome with this one does not grade the code
with its own answers. It only judges the simple bodies the tests' generators
make (flat JSON objects of strings); anything else fails loudly instead of
being guessed at.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

# The brief's DDL, exactly: the analysts' table as it may already exist.
USER_LOGINS_DDL = """
CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);
"""

# Required fields, in the order a missing one is reported.
REQUIRED = ("user_id", "device_type", "ip", "device_id", "app_version")
KNOWN = {*REQUIRED, "locale"}
LIMITS = {"user_id": 128, "device_type": 32, "locale": 32}
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class Expected:
    """A body that must load, as its row will read (before masking)."""

    user_id: str
    device_type: str
    ip: str
    device_id: str
    locale: str | None
    app_version: int  # the major version: "2.3.0" -> 2, "0.96" -> 0
    app_version_raw: str


def judge(body: str) -> Expected | str:
    """The row a body must become, or the reason it must be rejected."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "invalid_json"
    if not isinstance(doc, dict):
        return "not_an_object"
    if not set(doc) <= KNOWN | {"foo", "bar"} or not all(
        isinstance(v, str | None) for v in doc.values()
    ):
        raise AssertionError(f"the oracle does not judge bodies like {body[:80]!r}")
    for name in REQUIRED:
        if doc.get(name) is None:
            return f"missing_field:{name}"
    for name, limit in LIMITS.items():
        if doc.get(name) is not None and len(doc[name]) > limit:
            return f"too_long:{name}"
    version = doc["app_version"]
    if not _VERSION.fullmatch(version):
        return "invalid_app_version"
    return Expected(
        user_id=doc["user_id"],
        device_type=doc["device_type"],
        ip=doc["ip"],
        device_id=doc["device_id"],
        locale=doc.get("locale"),
        app_version=int(version.split(".")[0]),
        app_version_raw=version,
    )


def outcome(bodies: list[str]) -> tuple[list[Expected], Counter[str]]:
    """What must load, and how many must be rejected for each reason."""
    valid: list[Expected] = []
    reasons: Counter[str] = Counter()
    for body in bodies:
        verdict = judge(body)
        if isinstance(verdict, str):
            reasons[verdict] += 1
        else:
            valid.append(verdict)
    return valid, reasons
