"""Shared helpers for the unit tests: fixed keys and a sample-shaped record."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

# Fixed keys so failures are reproducible; never used outside tests. Random-looking,
# as configuration refuses a counting sequence such as bytes(range(64)).
KEY_A = hashlib.sha512(b"login-etl test key A").digest()
KEY_B = hashlib.sha512(b"login-etl test key B").digest()
KEY_A_TEXT = base64.b64encode(KEY_A).decode("ascii")
KEY_B_TEXT = base64.b64encode(KEY_B).decode("ascii")

# One record shaped like the brief's sample (values invented).
RECORD: dict[str, Any] = {
    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}

# The closed set of parse reasons: they become metric labels, so never message content.
_FIELD = "(user_id|device_type|ip|device_id|app_version|locale)"
REASON = re.compile(
    "invalid_json|not_an_object|invalid_sns_message|too_large|invalid_ip|invalid_app_version"
    "|out_of_range:app_version|too_long:(user_id|device_type|locale)"
    f"|(missing_field|wrong_type|empty_field|control_character|invalid_unicode"
    f"|duplicate_field|conflicting_field):{_FIELD}"
)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1

DROP = object()  # marks a field to remove in `record_body`


def record_body(**changes: Any) -> str:
    """The sample record as JSON, with fields replaced (or removed with DROP)."""
    record = dict(RECORD)
    for name, value in changes.items():
        if value is DROP:
            record.pop(name, None)
        else:
            record[name] = value
    return json.dumps(record)
