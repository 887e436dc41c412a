"""Records to send to the queue: from a file, or generated (pure, seedable).

`read_records` accepts a JSON array or JSON lines, optionally gzipped; each
record is sent as-is (compact JSON), bad ones included, so the pipeline's
rejection path is exercised too. `synthetic` makes events of the brief's
sample shape with malformed messages, null locales and devices/IPs shared
across users mixed in.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from pathlib import Path
from typing import Any

from login_etl.errors import ConfigError

_DEVICE_TYPES = ["android", "ios"]
_LOCALES = ["RU", "PH", "ID", "FR", "PT", "US", "DE", "BR", "IN", "JP", "CN", "NG"]
_VERSIONS = ["2.3.0", "0.2.6", "2.2.1", "0.96", "0.4.6", "3.7", "2.2.8", "5.0.1", "7.31", "10.0.1"]
_MALFORMED: list[str] = [
    '{"foo": "oops_wrong_msg_type", "bar": "123"}',
    "not json at all",
    '["an", "array"]',
    '{"user_id": "u", "device_type": "ios", "ip": "1.2.3.4", "app_version": "1.0"}',
    '{"user_id": "u", "device_type": "ios", "ip": "1.2.3.4", "device_id": "1", '
    '"app_version": "beta"}',
    '{"user_id": "u", "device_type": "' + "x" * 40 + '", "ip": "1.2.3.4", "device_id": "1", '
    '"app_version": "1.0"}',
]


def _lines_or_array(text: str, name: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: not a valid JSON array ({exc.msg})") from None
        except RecursionError:
            raise ConfigError(f"{name}: JSON nested too deeply") from None
        return list(doc)
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                raise ConfigError(f"{name}: line {n} is not valid JSON") from None
    return records


def read_records(path: Path) -> list[str]:
    """Bodies to send from a JSON array or JSON-lines file, gzipped or not."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ConfigError(f"{path}: bad gzip data ({exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return [json.dumps(r, separators=(",", ":")) for r in _lines_or_array(text, str(path))]


def _ip(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def _device_id(rng: random.Random) -> str:
    return f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def synthetic(count: int, seed: int | None = None, *, malformed_rate: float = 0.02) -> list[str]:
    """`count` message bodies shaped like the brief's sample.

    About `malformed_rate` of them are malformed, 30% have ``locale: null``,
    and devices and IPs repeat across users (shared devices, NAT), so the
    duplicates query has something to find.
    """
    rng = random.Random(seed)
    devices = [_device_id(rng) for _ in range(max(1, count // 3))]
    ips = [_ip(rng) for _ in range(max(1, count // 4))]
    bodies = []
    for _ in range(count):
        if rng.random() < malformed_rate:
            bodies.append(rng.choice(_MALFORMED))
            continue
        event = {
            "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "app_version": rng.choice(_VERSIONS),
            "device_type": rng.choice(_DEVICE_TYPES),
            "ip": rng.choice(ips),
            "locale": None if rng.random() < 0.3 else rng.choice(_LOCALES),
            "device_id": rng.choice(devices),
        }
        bodies.append(json.dumps(event, separators=(",", ":")))
    return bodies
