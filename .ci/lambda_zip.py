"""Check the Lambda zip as Lambda would load it: unpacked, in a clean Python 3.12.

Run with the Python that matches Lambda's runtime (`make lambda-package` does):
    python3.12 .ci/lambda_zip.py build/lambda/login-etl-lambda.zip

The zip is unpacked into a temporary directory, and a fresh interpreter in
isolated mode without site-packages (-I -S: only the standard library and
the zip's contents) imports the handler, checks that the compiled
dependencies are the zip's own (psycopg's binary libpq, cryptography,
msgspec), that nothing the handler does not need was imported, and runs
one invocation against a PostgreSQL that is not there: every record must
come back as a failure, none lost. Prints the sizes; exits 1 on any problem.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Lambda's limits for a zip deployment package.
MAX_ZIPPED = 50 * 1024 * 1024
MAX_UNZIPPED = 250 * 1024 * 1024

PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import login_etl.aws_lambda as aws_lambda
loaded = {m.split(".")[0] for m in sys.modules}
heavy = sorted(loaded & {"click", "rich", "prometheus_client", "pyiceberg", "pyarrow", "boto3"})
assert not heavy, f"the handler imported {heavy}"
import psycopg, cryptography, msgspec
for mod in (psycopg, cryptography, msgspec):
    assert mod.__file__.startswith(sys.argv[1]), f"{mod.__name__} is not the zip's"
assert psycopg.pq.__impl__ == "binary", psycopg.pq.__impl__
from login_etl.masking import generate_key

class Context:
    aws_request_id = "zip-check"
    function_name = "zip-check"
    def get_remaining_time_in_millis(self):
        return 30_000

env = {
    "LOGIN_ETL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
    "LOGIN_ETL_MASKING_KEY": generate_key(),
}
record = {
    "messageId": "m-1", "receiptHandle": "r", "body": '{"user_id": "u"}',
    "attributes": {"SentTimestamp": "1764806400000", "ApproximateReceiveCount": "1"},
    "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
}
answer = aws_lambda.Handler(env, out=sys.stderr)({"Records": [record]}, Context())
assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}, answer
print(json.dumps({"python": sys.version.split()[0], "psycopg": psycopg.__version__}))
"""


def main(zip_path: str) -> int:
    """Unpack `zip_path`, probe it in a clean interpreter; 0 when everything holds."""
    if sys.version_info[:2] != (3, 12):
        print(f"run this with Python 3.12 (Lambda's python3.12), not {sys.version.split()[0]}")
        return 1
    zipped = Path(zip_path).stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            unzipped = sum(i.file_size for i in zf.infolist())
            zf.extractall(tmp)
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", PROBE, tmp],
            capture_output=True,
            text=True,
            timeout=120,
        )
    print(f"zip {zipped / 2**20:.1f} MiB, unzipped {unzipped / 2**20:.1f} MiB")
    if done.returncode != 0:
        print(done.stdout, done.stderr[-3000:], sep="\n")
        return 1
    print("imports in a clean Python 3.12:", done.stdout.strip())
    if zipped > MAX_ZIPPED or unzipped > MAX_UNZIPPED:
        print("over Lambda's size limits (50 MiB zipped, 250 MiB unzipped)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
