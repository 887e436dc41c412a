"""Any body up to 256 KiB ends as a row or a rejection at a bounded cost.

The corpus in `hostile.py` runs in one child interpreter (`cost_probe`), whose
peak RSS (``ru_maxrss``) is compared with its own baseline after importing
login-etl, and whose CPU time is read around each message. The bounds are
what a worker pod can afford per message, far above what a body should cost:
they catch costs that grow faster than the body (a 240 KiB body once took
1.6 GB and seconds of CPU), not small slowdowns, which `make bench` measures.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from login_etl import events
from login_etl.events import STORED, Invalid, LoginEvent, parse_event
from login_etl.masking import Masker
from login_etl.source import Message
from login_etl.transform import Rejection, Row, open_body, transform
from tests.unit import hostile
from tests.unit.helpers import KEY_A, REASON, RECORD

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
PEAK_GROWTH = 64 * MiB  # over the interpreter's own baseline
PEAK_TOTAL = 150 * MiB  # the whole worker's budget
CPU_PER_MESSAGE = 0.100  # seconds
SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# Outcomes that follow from how a shape is built (the rest must merely be well formed).
EXPECTED = {
    "long-parent-key": "row",
    "long-parent-key-stored-prefix": "row",
    "wide-object-in-record": "row",
    "wide-under-device": "row",
    "wide-repeated-ip": "duplicate_field:ip",
    "wide-repeated-device": "duplicate_field:device_id",
    "deep-900-in-record": "row",
    "long-key": "row",
    "long-user-id": "too_long:user_id",
    "long-ip": "invalid_ip",
    "long-device-id": "mask_too_long:device_id",
    "long-app-version-digits": "out_of_range:app_version",
    "escaped-control-in-ip": "empty_field:ip",
    "array-of-objects": "not_an_object",
    "array-in-stored-field": "wrong_type:ip",
    "huge-int": "not_an_object",
    "huge-int-in-field": "wrong_type:ip",
    "huge-int-extra": "row",
    "sns-long-parent-inner": "row",
    "mix-wide-deep-long": "row",
    "over-limit-wide": "too_large",
    "over-limit-megabyte": "too_large",
    "over-limit-in-bytes": "too_large",
}


def test_corpus_is_near_the_limit() -> None:
    sizes = {
        name: len(body.encode("utf-8", "surrogatepass")) for name, body in hostile.corpus().items()
    }
    for name, size in sizes.items():
        if name.startswith("over-limit"):
            assert size > hostile.LIMIT, name
        elif not name.startswith(("deep-900", "escaped-control", "sns-")):
            assert hostile.LIMIT * 0.9 < size <= hostile.LIMIT, name
        else:
            assert size <= hostile.LIMIT, name


def test_hostile_bodies_cost_little_memory_and_cpu(tmp_path: Path) -> None:
    corpus = hostile.corpus()
    bodies = tmp_path / "bodies.jsonl"
    with bodies.open("w", encoding="ascii") as out:
        for name, body in corpus.items():
            out.write(json.dumps([name, body]) + "\n")
    child = subprocess.run(
        [sys.executable, "-m", "tests.unit.cost_probe", str(bodies)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout)
    shapes: list[dict[str, Any]] = report["shapes"]
    assert [s["name"] for s in shapes] == list(corpus)

    baseline = report["baseline"]
    peak = shapes[-1]["peak"]
    steps, previous = {}, baseline
    for shape in shapes:  # the peak never falls: each step is what that body added
        steps[shape["name"]], previous = shape["peak"] - previous, shape["peak"]
    worst = max(steps, key=lambda name: steps[name])
    assert peak - baseline < PEAK_GROWTH, f"{worst} grew the peak by {steps[worst] / MiB:.0f} MiB"
    assert peak < PEAK_TOTAL
    for shape in shapes:
        name, outcome = shape["name"], shape["outcome"]
        assert shape["cpu"] < CPU_PER_MESSAGE, f"{name}: {shape['cpu'] * 1000:.0f} ms of CPU"
        assert (
            outcome == "row" or REASON.fullmatch(outcome) or outcome.startswith("mask_too_long:")
        ), name
        assert outcome == EXPECTED.get(name, outcome), name


def test_app_version_memo_stays_small() -> None:
    """A producer sending ever new app versions must not grow what the parser keeps."""

    def parse_versions(start: int, count: int) -> None:
        for n in range(start, start + count):
            body = json.dumps({**RECORD, "app_version": f"{n}.0.{n}"})
            event = parse_event(body, SENT)
            assert isinstance(event, events.LoginEvent) and event.app_version == n

    parse_versions(0, 1_000)  # whatever the parser keeps for a few releases
    gc.collect()
    tracemalloc.start()
    try:
        parse_versions(1_000, 8_000)
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Keeping every version would hold 8,000 more strings and dict slots (about 900 kB).
    assert kept < 200_000, kept


# -- generated nested shapes ---------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from([*STORED, "device", "user", "app", "id", "type", "version", "Type", "Message"]),
    st.text(max_size=8),
    st.integers(1, 3000).map(lambda n: "k" * n),  # long keys
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=16),
    st.sampled_from([*RECORD.values(), "2001:DB8::1", "a\nb", "\x1b[2J"]),
    st.integers(1, 5000).map(lambda n: "s" * n),
)
SHAPES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(st.tuples(KEYS, inner), max_size=6)  # pairs, so keys may repeat
    ),
    max_leaves=40,
)


def render(value: Any) -> str:
    """JSON text; a list of (str, value) pairs is an object whose keys may repeat."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value)
    ):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.booleans())
def test_generated_shapes_end_as_a_row_or_a_rejection(shape: Any, inside_record: bool) -> None:
    body = render(shape)
    if inside_record:
        body = json.dumps(RECORD)[:-1] + ', "nested": ' + body + "}"
    masker = Masker(KEY_A)
    out = transform(Message("m-1", "r", body, SENT), masker)
    assert isinstance(out, Row | Rejection)
    if isinstance(out, Rejection):
        assert REASON.fullmatch(out.reason) or out.reason.startswith("mask_too_long:"), out.reason
        assert open_body(masker, out.sealed_body, out.message_id) == body
    parsed = parse_event(body, SENT)  # the parser's verdict is the one the row or rejection took
    if isinstance(out, Row):
        assert isinstance(parsed, LoginEvent)
    elif not out.reason.startswith("mask_too_long:"):
        assert parsed == Invalid(out.reason)
