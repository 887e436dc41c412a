"""Run `transform` over bodies in this process and report what each one cost.

Usage: ``python -m tests.unit.cost_probe BODIES.jsonl`` where each line is
``[name, body]``. Prints one JSON object: the peak RSS of this interpreter
with login-etl imported and warmed up (``baseline``), then for each body its
outcome, CPU seconds and the peak RSS after it. Peak RSS never goes down, so
the first body whose ``peak`` jumps is the one that cost the memory.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from datetime import UTC, datetime


def _peak_bytes() -> int:
    # Linux carries a parent's ru_maxrss across fork and exec (a pytest process that
    # imported pyarrow starts this child "at" its own peak); VmHWM is this image's own.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def main(path: str) -> None:
    """Print the cost report for the bodies in `path`."""
    from login_etl.masking import Masker
    from login_etl.source import Message
    from login_etl.transform import Rejection, Row, transform

    masker = Masker(bytes(range(64)))
    sent = datetime(2024, 5, 1, tzinfo=UTC)
    # Warm up every path once so first-call costs land in the baseline.
    for body in ('{"a": 1}', "[", '{"ip": "1.2.3.4", "ip": "1"}', '"x"'):
        transform(Message("warm", "r", body, sent), masker)
    report: dict[str, object] = {"baseline": _peak_bytes(), "shapes": []}
    shapes: list[dict[str, object]] = []
    with open(path, encoding="ascii") as lines:
        for line in lines:
            name, body = json.loads(line)
            message = Message(name, "r", body, sent)
            del body
            # The least CPU of three runs: a collection or a neighbour's cache storm
            # in one run is noise; a cost that grows with the body shows in all three.
            cpu = float("inf")
            for _ in range(3):
                gc.collect()
                started = time.process_time()
                out = transform(message, masker)
                cpu = min(cpu, time.process_time() - started)
            if isinstance(out, Row):
                outcome = "row"
            else:
                assert isinstance(out, Rejection)
                outcome = out.reason
            shapes.append({"name": name, "outcome": outcome, "cpu": cpu, "peak": _peak_bytes()})
            del message, out
    report["shapes"] = shapes
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
