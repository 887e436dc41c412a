"""Messages in hand: how many may be held, and when to extend their visibility.

SQS hides a received message for the queue's visibility timeout. A batch that
takes longer than that would see its messages handed to another worker, so
the heartbeat extends the lease of every message held longer than a third of
the timeout, back to a full timeout from now. A tick every sixth of the
timeout means a message is extended at most half a timeout after its last
extension; the other half is slack for a slow round of SQS calls.
`Capacity` bounds how many messages a worker holds at once (--max-in-flight),
and `Buffer` carries received messages from the receivers to the writer.

`Hand` owns all of it for the loop: a message enters with `reserve` and
`hold` and leaves with `let_go`, the one call that gives back its slot, its
lease and its count together, so no exit path can release it in half.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from login_etl.source import Message


class Leases:
    """Thread-safe record of held messages, keyed by receipt handle."""

    def __init__(self, visibility_timeout: int) -> None:
        self.visibility_timeout = visibility_timeout
        self._held: dict[str, tuple[Message, float]] = {}
        self._lock = threading.Lock()

    @property
    def period(self) -> float:
        """Seconds between heartbeat ticks."""
        return max(0.2, self.visibility_timeout / 6)

    @property
    def extension(self) -> int:
        """The visibility timeout an extension sets, in seconds from now."""
        return self.visibility_timeout

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def add(self, messages: Iterable[Message], now: float) -> None:
        """Start holding `messages`, received at `now`."""
        with self._lock:
            for m in messages:
                self._held[m.receipt] = (m, now)

    def drop(self, messages: Iterable[Message]) -> None:
        """Stop holding `messages` (committed, released or deleted)."""
        with self._lock:
            for m in messages:
                self._held.pop(m.receipt, None)

    def due(self, now: float) -> list[Message]:
        """Messages whose lease was last set more than a third of the timeout ago."""
        due_age = self.visibility_timeout / 3
        with self._lock:
            return [m for m, since in self._held.values() if now - since >= due_age]

    def extended(self, messages: Sequence[Message], now: float, failed: Iterable[str]) -> int:
        """Record that `messages` were extended at `now`, except ids in `failed`; return count."""
        failed_ids = set(failed)
        done = 0
        with self._lock:
            for m in messages:
                if m.message_id in failed_ids or m.receipt not in self._held:
                    continue
                self._held[m.receipt] = (m, now)
                done += 1
        return done


class Capacity:
    """How many more messages may be held; receivers wait while none may."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = limit
        self._cond = threading.Condition()

    def acquire(self, most: int, timeout: float) -> int:
        """Take up to `most` slots, waiting up to `timeout` for one; return how many (0: none)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free > 0, timeout):
                return 0
            n = min(most, self._free)
            self._free -= n
            return n

    def release(self, n: int) -> None:
        """Give back `n` slots."""
        if n:
            with self._cond:
                self._free += n
                self._cond.notify_all()

    @property
    def used(self) -> int:
        """Slots taken."""
        with self._cond:
            return self._limit - self._free


class Buffer:
    """Received messages on their way to the writer.

    Receivers put one list per receive; the writer takes up to the count it
    wants in one step. A put wakes a waiting writer only when it starts the
    batch (the first message sets the batch's deadline) or brings the buffer
    to the wanted count; `close` wakes it too. Every other put (most of them:
    ten messages each) leaves it asleep, as a wake-up per receive costs the
    writer a thread switch and the GIL.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lists: deque[tuple[float, list[Message]]] = deque()  # (put at, messages)
        self._count = 0
        self._want = 1  # what the waiting writer wants; a put reaching it wakes the writer
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._clock = clock

    def put(self, messages: list[Message], now: float) -> bool:
        """Add one receive's messages, received at `now`; False (nothing added) once closed."""
        with self._cond:
            if self._closed:
                return False
            before = self._count
            self._lists.append((now, messages))
            self._count += len(messages)
            if before == 0 or before < self._want <= self._count:
                self._cond.notify()
            return True

    def close(self) -> None:
        """Refuse later puts: a waiting take returns at once, and later ones never wait."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, want: int, wait: float, idle: float) -> list[Message]:
        """Up to `want` messages, oldest first, once `want` are buffered, `wait` seconds
        after the oldest was put, or the buffer closed; [] if none came within `idle`."""
        with self._cond:
            if not self._lists and not self._closed:
                self._cond.wait(idle)
            if not self._lists:
                return []
            deadline = self._lists[0][0] + wait
            self._want = want
            try:
                while self._count < want and not self._closed:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._want = 1
            return self._pop(want)

    def rest(self) -> list[Message]:
        """Everything buffered, without waiting."""
        with self._cond:
            return self._pop(self._count)

    def _pop(self, most: int) -> list[Message]:
        taken: list[Message] = []
        while self._lists and len(taken) < most:
            at, messages = self._lists.popleft()
            room = most - len(taken)
            if len(messages) > room:
                self._lists.appendleft((at, messages[room:]))
                messages = messages[:room]
            taken += messages
        self._count -= len(taken)
        return taken

    def empty(self) -> bool:
        """True when nothing is buffered."""
        with self._cond:
            return not self._lists


class Hand:
    """Every message a worker holds, from its reserved slot to its release.

    Receivers `reserve` slots (and --max-messages quota) before a receive,
    `unreserve` what the receive did not fill, and `hold` what came: leased,
    counted, buffered. The writer `take`s a batch (the rest stays buffered)
    and drops the leases of what it `committed`. Whatever the exit
    (deleted, released, failed, left over at shutdown), `let_go` gives back
    the slot, the lease and the count in one call. Each part keeps its own
    lock.
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        visibility_timeout: int = 30,
        quota: int | None = None,
        count: Callable[..., None] | None = None,
    ) -> None:
        self.leases = Leases(visibility_timeout)
        self._capacity = Capacity(max_in_flight)
        self._buffer = Buffer()
        self._quota = quota
        self._quota_lock = threading.Lock()
        # Receives the in-hand change with the counts of each hold and let_go (Stats.add).
        self._count = count or (lambda **counts: None)

    # -- receivers -------------------------------------------------------

    def reserve(self, most: int, timeout: float) -> int:
        """Up to `most` slots within the quota, waiting up to `timeout` for one; 0: none."""
        slots = self._capacity.acquire(most, timeout)
        if not slots or self._quota is None:
            return slots
        with self._quota_lock:
            n = min(slots, self._quota)
            self._quota -= n
        self._capacity.release(slots - n)
        return n

    def unreserve(self, n: int) -> None:
        """Give back `n` reserved slots (and quota) that no message filled."""
        if n:
            self._capacity.release(n)
            if self._quota is not None:
                with self._quota_lock:
                    self._quota += n

    @property
    def spent(self) -> bool:
        """True when the --max-messages quota is all reserved."""
        if self._quota is None:
            return False
        with self._quota_lock:
            return self._quota == 0

    def hold(self, messages: list[Message], now: float, **counts: int) -> bool:
        """Lease, count and buffer reserved `messages` received at `now`.

        False once closed: they are leased and counted but not buffered, and
        the caller must `let_go` them. `counts` are counted with them.
        """
        self.leases.add(messages, now)
        self._count(in_hand=len(messages), **counts)
        return self._buffer.put(messages, now)

    def close(self) -> None:
        """No more holds are buffered; a waiting `take` returns at once."""
        self._buffer.close()

    # -- writer ----------------------------------------------------------

    def take(self, want: int, wait: float, idle: float) -> list[Message]:
        """A batch of up to `want`: see `Buffer.take` (`wait` after its oldest message)."""
        return self._buffer.take(want, wait, idle)

    def empty(self) -> bool:
        """True when nothing waits for the writer."""
        return self._buffer.empty()

    def committed(self, messages: Iterable[Message]) -> None:
        """Their batch committed: no more extensions (they stay held until deleted)."""
        self.leases.drop(messages)

    def handing_back(self, messages: Iterable[Message]) -> None:
        """About to make them visible again: no more extensions, so that a heartbeat
        tick cannot hide again what is being handed back (they stay held until let go)."""
        self.leases.drop(messages)

    def leftover(self) -> list[Message]:
        """At shutdown: close, and return what is buffered, still held."""
        self.close()
        return self._buffer.rest()

    # -- every exit ------------------------------------------------------

    def let_go(self, messages: Sequence[Message], **counts: int) -> None:
        """No longer hold `messages`: slot, lease and count at once; `counts` counted with it."""
        self.leases.drop(messages)
        self._capacity.release(len(messages))
        self._count(in_hand=-len(messages), **counts)

    @property
    def used(self) -> int:
        """Slots taken (reserved or held)."""
        return self._capacity.used
