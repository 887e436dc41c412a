"""The metrics port on loopback: it answers probes while held, and it cannot be held."""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from login_etl import logs
from login_etl.health import Health, serve
from login_etl.metrics import Metrics, Stats

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # no blank line: the request never ends


@pytest.fixture
def server() -> Iterator:
    running = serve(Metrics(), Health(Stats(), {}), 0, max_connections=32)  # 5 s timeout
    try:
        yield running
    finally:
        running.shutdown()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (end of stream or reset)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_half_sent_requests_cannot_hold_the_port(server) -> None:
    port = server.server_address[1]
    threads = threading.active_count()
    held = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(HALF_SENT)
            held.append(sock)
        # Past the cap, the connections open longest were closed at once.
        wait_for(lambda: sum(map(closed_by_peer, held)) >= 300 - 32, "the excess closed")
        assert server.connections <= 32
        open_ = [s for s in held if not closed_by_peer(s)]
        assert open_, "some half-sent connections are still held"
        for _ in range(5):  # probes are answered while they are held
            assert get(port, "/healthz") == (200, b"ok\n")
        assert get(port, "/readyz")[0] == 200
        assert not all(closed_by_peer(s) for s in open_)  # still held while answering
        assert threading.active_count() == threads  # no thread per connection
        # A connection that never finishes its request is closed after the timeout.
        wait_for(lambda: all(closed_by_peer(s) for s in open_), "the held ones closed")
        assert server.connections == 0
    finally:
        for sock in held:
            sock.close()


def test_a_client_gone_mid_answer_is_one_log_line_and_no_traceback(
    server, capfd: pytest.CaptureFixture[str]
) -> None:
    logs.configure("text", "debug")
    try:
        port = server.server_address[1]
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # Close with a reset, before reading: the server writes to a dead socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert get(port, "/healthz")[0] == 200  # and it still serves
        wait_for(lambda: server.connections == 0, "every connection closed")
    finally:
        logging.getLogger().handlers.clear()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and all(" login_etl.health: " in line for line in lines), err


def test_answers_and_refusals(server) -> None:
    port = server.server_address[1]
    assert server.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
    assert get(port, "/nothing")[0] == 404
    status, body = get(port, "/metrics")
    assert status == 200 and b"login_etl_build_info" in body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 405 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n")
