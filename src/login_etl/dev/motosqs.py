"""moto's SQS, made atomic per call as SQS is.

moto's server answers each request on a thread of its own, and its SQS
backend takes no lock. Two concurrent ``DeleteMessageBatch`` calls each
rebuild the queue's message list from what they read, so the later one puts
back messages the earlier one deleted: they stay in flight, then come back as
redeliveries of messages that were committed and deleted. Two concurrent
receives can also both find a message visible and both take it. Real SQS
does neither, and a worker's deletes and receives are concurrent by design.

`serialise` runs every call of moto's SQS backend under one lock, let go
while a long poll waits for messages, so that the demo, the benchmark and
the tests drive a queue whose calls do not interleave. It patches moto's
classes in this process once, for every server started in it.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()  # held by one SQS call at a time
_HELD = threading.local()  # how deep this thread is in locked calls (a call may call another)
_PATCHING = threading.Lock()
_MARK = "_login_etl_serialised"


def _depth() -> int:
    return int(getattr(_HELD, "depth", 0))


def _locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = _depth()
        if depth == 0:
            _LOCK.acquire()
        _HELD.depth = depth + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _HELD.depth = depth
            if depth == 0:
                _LOCK.release()

    return call


def _unlocked_while_waiting(wait: Callable[..., Any]) -> Callable[..., Any]:
    """A long poll's wait for messages, with the lock let go (a send must get in)."""

    @functools.wraps(wait)
    def call(*args: Any, **kwargs: Any) -> Any:
        depth = _depth()
        if depth:
            _HELD.depth = 0
            _LOCK.release()
        try:
            return wait(*args, **kwargs)
        finally:
            if depth:
                _LOCK.acquire()
                _HELD.depth = depth

    return call


def serialise() -> None:
    """Make each call of moto's SQS backend atomic in this process (idempotent)."""
    from moto.sqs import models

    backend = models.SQSBackend
    with _PATCHING:
        if getattr(backend, _MARK, False):
            return
        for name, attr in list(vars(backend).items()):
            if not name.startswith("_") and inspect.isfunction(attr):
                setattr(backend, name, _locked(attr))
        queue = models.Queue
        queue.wait_for_messages = _unlocked_while_waiting(  # type: ignore[method-assign]
            queue.wait_for_messages
        )
        setattr(backend, _MARK, True)
