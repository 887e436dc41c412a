"""A TCP relay on loopback that can be frozen: connections stay open, bytes stop.

It plays a server that hangs (a stopped process, a silent network) rather
than one that refuses: the client's calls block until its own timeouts act.
A relay that starts frozen is a listener that accepts and never answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from login_etl.dev.local import free_port


class Relay:
    """Forwards 127.0.0.1:`port` to `target_port` until frozen."""

    def __init__(self, target_port: int | None, *, frozen: bool = False) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.frozen = threading.Event()
        if frozen:
            self.frozen.set()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            self._sockets.append(client)
            if self.frozen.is_set() or self.target_port is None:
                continue  # accepted, never answered
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self._closed.is_set():
            if self.frozen.is_set():
                self._closed.wait(0.2)  # hold the bytes: the peer waits forever
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        """From now on, nothing passes and new connections get no answer."""
        self.frozen.set()

    def close(self) -> None:
        """Stop relaying and close every socket."""
        self._closed.set()
        for s in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()
