"""seed: reading record files and generating synthetic events."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import pytest

from login_etl.dev.seed import read_records, synthetic
from login_etl.errors import ConfigError
from tests.oracle import judge, outcome
from tests.unit.helpers import RECORD

RECORDS = [RECORD, {"foo": "oops_wrong_msg_type", "bar": "123"}, {**RECORD, "locale": None}]


def compact(record: object) -> str:
    return json.dumps(record, separators=(",", ":"))


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", ["array", "array-indented", "lines", "lines-blank"])
def test_read_records(tmp_path: Path, layout: str, gz: bool) -> None:
    text = {
        "array": json.dumps(RECORDS),
        "array-indented": "\n  " + json.dumps(RECORDS, indent=2),
        "lines": "\n".join(json.dumps(r) for r in RECORDS),
        "lines-blank": "\n\n".join(json.dumps(r) for r in RECORDS) + "\n\n  \n",
    }[layout]
    bodies = read_records(write(tmp_path / "records", text, gz=gz))
    assert bodies == [compact(r) for r in RECORDS]


def test_read_records_keeps_non_objects(tmp_path: Path) -> None:
    bodies = read_records(write(tmp_path / "r.json", '[1, "x", null, [2]]'))
    assert bodies == ["1", '"x"', "null", "[2]"]


def test_read_records_keeps_unicode(tmp_path: Path) -> None:
    bodies = read_records(write(tmp_path / "r.json", json.dumps([{"user_id": "é☃"}])))
    assert json.loads(bodies[0]) == {"user_id": "é☃"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[{", "not a valid JSON array"),
        (b"[1, 2,]", "not a valid JSON array"),
        (b'{"a": 1}\n{oops}\n', "line 2 is not valid JSON"),
        (b"not json", "line 1 is not valid JSON"),
        (b"\xff\xfe\x00junk", "not UTF-8"),
        (b"\x1f\x8b\x08\x00garbage", "bad gzip data"),
    ],
)
def test_read_records_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_records(path)


@pytest.mark.parametrize("text", ["[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 100_000])
def test_read_records_deeply_nested_is_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        read_records(write(tmp_path / "deep.json", text))


def test_read_records_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_records(tmp_path / "absent.json")


# -- synthetic ------------------------------------------------------------------


def test_synthetic_is_deterministic_for_a_seed() -> None:
    assert synthetic(300, seed=7) == synthetic(300, seed=7)
    assert synthetic(300, seed=7) != synthetic(300, seed=8)


@pytest.mark.parametrize("count", [0, 1, 2, 10, 1000])
def test_synthetic_count(count: int) -> None:
    assert len(synthetic(count, seed=1)) == count


def test_synthetic_mix() -> None:
    bodies = synthetic(2000, seed=11)
    valid, reasons = outcome(bodies)
    # about 2% malformed, of several kinds, all of them to be rejected
    assert 10 <= sum(reasons.values()) <= 80
    assert len(reasons) >= 4
    assert len(valid) + sum(reasons.values()) == 2000
    # about 30% null locales
    nulls = sum(1 for e in valid if e.locale is None)
    assert 0.2 * len(valid) < nulls < 0.4 * len(valid)
    # several app versions, parsed to their major
    assert {e.app_version for e in valid} >= {0, 2, 10}
    # IPs and devices shared across different users
    users_by_ip: dict[str, set[str]] = defaultdict(set)
    users_by_device: dict[str, set[str]] = defaultdict(set)
    for e in valid:
        users_by_ip[e.ip].add(e.user_id)
        users_by_device[e.device_id].add(e.user_id)
    assert any(len(users) > 1 for users in users_by_ip.values())
    assert any(len(users) > 1 for users in users_by_device.values())
    assert len({e.user_id for e in valid}) == len(valid)  # user ids themselves are unique


def test_synthetic_malformed_rate() -> None:
    assert not any(isinstance(judge(b), str) for b in synthetic(300, 3, malformed_rate=0))
    assert all(isinstance(judge(b), str) for b in synthetic(50, 3, malformed_rate=1))


def test_synthetic_bodies_are_compact_json_objects() -> None:
    for body in synthetic(100, seed=5, malformed_rate=0):
        doc = json.loads(body)
        assert set(doc) == {"user_id", "app_version", "device_type", "ip", "locale", "device_id"}
        assert body == compact(doc)


# -- the brief's own sample (third-party, read in place) ------------------------


def test_sample_file(sample_path: Path) -> None:
    bodies = read_records(sample_path)
    assert len(bodies) == 100
    valid, reasons = outcome(bodies)
    assert len(valid) == 99
    assert reasons == {"missing_field:user_id": 1}
    assert '{"foo":"oops_wrong_msg_type","bar":"123"}' in bodies
    # DESIGN.md says 30 null locales: 29 valid records plus the malformed one, which has none
    assert sum(1 for e in valid if e.locale is None) == 29
    assert {"2.3.0", "0.96", "7.31"} <= {e.app_version_raw for e in valid}


def test_read_records_tolerates_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([RECORD]).encode())
    assert [json.loads(b) for b in read_records(path)] == [RECORD]
