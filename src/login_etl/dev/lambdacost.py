"""What the Lambda handler costs in CPU: cold start and per message, beside Powertools.

``python -m login_etl.dev.lambdacost [--powertools-python PY]`` runs each
measurement in a fresh interpreter and reads CPU time (user + system) with
``resource.getrusage``, so only that process's work counts, not the wait:

* **import**: importing the handler module (``login_etl.aws_lambda``);
* **first call**: the first invocation's processing of 10 records (no
  database: every parse, mask and seal path warmed for the first time);
* **per message**: steady state over events of `--batch` records, the
  records turned into messages and transformed (no database);
* **with PostgreSQL**: the whole handler on a throwaway PostgreSQL, its
  first invocation (settings, connection, key check, write) and CPU per
  message over further invocations (the client's share; the server's is
  PostgreSQL's own).

With ``--powertools-python`` (an interpreter with ``aws-lambda-powertools``,
``pydantic`` and this package installed: a throwaway venv, never a project
dependency) the same is measured for Powertools' ``BatchProcessor`` parsing
each record into a pydantic model (``SqsRecordModel`` with a ``Json`` body)
and masking ``ip`` and ``device_id`` with our masker. The events are the
exact shape Lambda sends, with bodies from the project's generator.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_EVENTS = r"""
import json, random, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def events(n, batch, seed=7):
    rng = random.Random(seed)
    out, records = [], []
    for i in range(n):
        body = json.dumps({
            "user_id": f"u-{i}",
            "app_version": rng.choice(["2.3.0", "0.96"]),
            "device_type": rng.choice(["android", "ios"]),
            "ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "locale": rng.choice(["RU", None]),
            "device_id": f"{rng.randrange(100, 999)}-{rng.randrange(10, 99)}-{i % 10000:04d}",
        })
        sent = 1764806400000 + i
        records.append({
            "messageId": f"00000000-0000-4000-8000-{seed:04d}{i:08d}",
            "receiptHandle": "AQEB" + "x" * 160,
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": str(sent),
                "SenderId": "AIDAEXAMPLE",
                "ApproximateFirstReceiveTimestamp": str(sent + 100),
            },
            "messageAttributes": {},
            "md5OfBody": "0",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:login-queue",
            "awsRegion": "us-east-1",
        })
        if len(records) == batch:
            out.append({"Records": records})
            records = []
    if records:
        out.append({"Records": records})
    return out
class Context:
    aws_request_id = "bench"; function_name = "bench"
    def get_remaining_time_in_millis(self): return 600_000
P = json.loads(sys.argv[1])
KEY = P["key"]
"""

_OURS = r"""
c0 = cpu()
import login_etl.aws_lambda as aws_lambda
c1 = cpu()
from login_etl import secretenv
from login_etl.transform import transform
masker = secretenv.masker(KEY, "")
def process(event):
    for record in event["Records"]:
        transform(aws_lambda.message_from_record(record), masker)
c2 = cpu(); process(events(10, 10, seed=1)[0]); c3 = cpu()
work = events(P["n"], P["batch"])
c4 = cpu()
for event in work: process(event)
c5 = cpu()
print(json.dumps({"import_ms": (c1 - c0) * 1e3, "first_ms": (c3 - c2) * 1e3,
                  "per_msg_us": (c5 - c4) / P["n"] * 1e6}))
"""

_POWERTOOLS = r"""
c0 = cpu()
from typing import Optional
from pydantic import BaseModel, Json
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor, EventType, process_partial_response)
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from login_etl.masking import Masker, decode_key
class Login(BaseModel):
    user_id: str; device_type: str; ip: str; device_id: str; locale: Optional[str]; app_version: str
class LoginRecord(SqsRecordModel):
    body: Json[Login]
processor = BatchProcessor(event_type=EventType.SQS, model=LoginRecord)
c1 = cpu()
masker = Masker(decode_key(KEY))
def record_handler(record):
    e = record.body
    return masker.mask("ip", e.ip), masker.mask("device_id", e.device_id)
def process(event):
    answer = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=Context())
    assert not answer["batchItemFailures"], answer
c2 = cpu(); process(events(10, 10, seed=1)[0]); c3 = cpu()
work = events(P["n"], P["batch"])
c4 = cpu()
for event in work: process(event)
c5 = cpu()
print(json.dumps({"import_ms": (c1 - c0) * 1e3, "first_ms": (c3 - c2) * 1e3,
                  "per_msg_us": (c5 - c4) / P["n"] * 1e6}))
"""

_WITH_POSTGRES = r"""
import login_etl.aws_lambda as aws_lambda
from login_etl.postgres import init_schema, session
URL = P["url"]
with session(URL) as conn:
    init_schema(conn)
handler = aws_lambda.Handler({"LOGIN_ETL_DATABASE_URL": URL, "LOGIN_ETL_MASKING_KEY": KEY},
                             out=open("/dev/null", "w"))
first = events(10, 10, seed=1)[0]
c0 = cpu(); handler(first, Context()); c1 = cpu()
work = events(P["n"], P["batch"], seed=2)
c2, w2 = cpu(), time.perf_counter()
for event in work:
    assert handler(event, Context()) == {"batchItemFailures": []}
c3, w3 = cpu(), time.perf_counter()
handler.close()
print(json.dumps({"first_ms": (c1 - c0) * 1e3, "per_msg_us": (c3 - c2) / P["n"] * 1e6,
                  "wall_us": (w3 - w2) / P["n"] * 1e6,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(python: str, code: str, fields: dict[str, object]) -> dict[str, float]:
    done = subprocess.run(
        [python, "-c", _EVENTS + code, json.dumps(fields)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def main() -> None:
    """Print one line per measurement (medians over `--runs` fresh processes)."""
    from login_etl.masking import generate_key

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--powertools-python", help="interpreter with aws-lambda-powertools")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="records per event")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL run")
    args = parser.parse_args()
    fields: dict[str, object] = {"key": generate_key(), "n": args.messages, "batch": args.batch}
    rows = [("login-etl handler", sys.executable, _OURS)]
    if args.powertools_python:
        rows.append(("Powertools BatchProcessor", args.powertools_python, _POWERTOOLS))
    print(
        f"{'':28} {'import ms':>10} {'1st call ms':>12} {'µs/msg':>8}  (CPU, median of {args.runs})"
    )
    for name, python, code in rows:
        m = _median([_run(python, code, fields) for _ in range(args.runs)])
        print(f"{name:28} {m['import_ms']:10.1f} {m['first_ms']:12.1f} {m['per_msg_us']:8.1f}")
    if args.no_postgres:
        return
    from login_etl.dev.local import LocalPostgres

    with LocalPostgres() as pg:
        m = _median(
            [
                _run(sys.executable, _WITH_POSTGRES, {**fields, "url": pg.url})
                for _ in range(args.runs)
            ]
        )
    print(
        f"{'handler + PostgreSQL write':28} {'':>10} {m['first_ms']:12.1f} {m['per_msg_us']:8.1f}"
        "  (client CPU; 1st call: settings, connect, key check, write)"
    )
    print(
        f"{'':28} wall {m['wall_us']:.1f} µs/msg (PostgreSQL on this machine), "
        f"peak RSS {m['max_rss_mb']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
