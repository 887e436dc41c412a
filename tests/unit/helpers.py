"""Shared helpers for the unit tests: fixed keys and a sample-shaped record."""

from __future__ import annotations

import base64
import json
from typing import Any

# Fixed keys so failures are reproducible; never used outside tests.
KEY_A = bytes(range(64))
KEY_B = bytes(range(64, 128))
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
