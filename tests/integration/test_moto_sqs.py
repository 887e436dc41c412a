"""The local SQS endpoint keeps SQS's promises under concurrent calls.

moto's server, as shipped, lets concurrent deletes undo each other (deleted
messages come back in flight) and concurrent receives share a message; a
worker's receives and deletes are concurrent, so tests on it saw messages
stuck in flight after a clean run. `LocalSqs` serialises moto's SQS calls.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import unique_name
from .helpers import queue_depth


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond: an interleaving race shows in a few rounds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def receive_all(client: Any, url: str, threads: int) -> list[list[dict[str, Any]]]:
    """Receive until empty from `threads` concurrent receivers; the answers received."""
    batches: list[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def receive() -> None:
        while answer := client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            with lock:
                batches.append(answer)

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(receive) for _ in range(threads)]:
            f.result()
    return batches


def delete_all(client: Any, url: str, batches: list[list[dict[str, Any]]], threads: int) -> int:
    """Delete each received batch in one call, `threads` calls at a time; how many failed."""

    def delete(batch: list[dict[str, Any]]) -> int:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        return len(client.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed", []))

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(delete, batches))


@pytest.mark.timeout(240)
def test_concurrent_receives_and_deletes_neither_share_nor_lose(
    sqs_server, sqs_client, frequent_switches
) -> None:
    for _ in range(3):
        url = sqs_client.create_queue(
            QueueName=unique_name("atomic"), Attributes={"VisibilityTimeout": "120"}
        )["QueueUrl"]
        for i in range(0, 200, 10):
            sqs_client.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(j), "MessageBody": f"m{i + j}"} for j in range(10)],
            )
        batches = receive_all(sqs_client, url, threads=4)
        received = Counter(m["MessageId"] for batch in batches for m in batch)
        assert [k for k, n in received.items() if n > 1] == []  # no message given twice
        assert len(received) == 200
        assert delete_all(sqs_client, url, batches, threads=10) == 0
        assert queue_depth(sqs_client, url) == (0, 0)  # every deleted message stays deleted
        sqs_client.delete_queue(QueueUrl=url)
