"""`login-etl demo`: the whole service on this machine, start to finish, in seconds.

Starts a throwaway PostgreSQL and an embedded SQS endpoint (moto over HTTP),
makes a masking key for this run only, feeds the queue, runs the real pipeline
(`Pipeline` with `SqsSource` and `PostgresSink`) against them with a live
progress bar, then shows what an analyst sees: the first rows, the duplicates
query and one deliberate unmask. Everything it started is stopped and deleted
on exit, Ctrl-C and SIGTERM included; ``keep`` leaves the services up until
Ctrl-C so they can be explored with ``psql`` and ``login-etl status``.

This module renders to the `rich.console.Console` it is given; the CLI only
parses flags.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from types import FrameType
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from login_etl.config import Settings
from login_etl.dev import report
from login_etl.dev.local import local_services
from login_etl.dev.seed import read_records, synthetic
from login_etl.errors import ConfigError, LoginEtlError
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.metrics import Stats
from login_etl.pgsink import PostgresSink
from login_etl.postgres import connect
from login_etl.service import build_pipeline
from login_etl.source import SQS_BATCH_MAX
from login_etl.sqs import SqsSource

QUEUE_NAME = "login-queue"
# moto's SQS does O(depth) work on every call (~0.1 s per receive+delete at a
# depth of 200, ~1.2 s at 2,000), so loading the whole data set first would
# make the demo crawl. The feeder sends while the pipeline drains and keeps at
# most this many messages in the queue; the pipeline runs in normal (not
# drain) mode and is stopped once every message sent has been committed, so an
# empty moment between two sends can never end the run early.
QUEUE_WINDOW = 100


@dataclass(frozen=True)
class DemoOptions:
    """What to feed the demo and how to run it."""

    synthetic: int = 1000
    random_seed: int | None = None
    file: Path | None = None
    keep: bool = False
    concurrency: int = 2


def _background(name: str, target: Callable[[], object], errors: list[BaseException]) -> Thread:
    """Start `target` in a daemon thread; what it raises is appended to `errors`."""

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    thread = Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


class _Feeder:
    """Sends bodies 10 per call while the queue holds fewer than `window` messages."""

    def __init__(self, source: SqsSource, bodies: list[str], stats: Stats, window: int) -> None:
        self.sent = 0
        self._source = source
        self._bodies = bodies
        self._stats = stats
        self._window = window
        self._halt = threading.Event()

    def _depth(self) -> int:
        # Messages still in the queue, visible or held: sent and not yet deleted.
        return self.sent - self._stats.deleted - self._stats.delete_failures

    def run(self) -> None:
        """Send everything, waiting for the pipeline whenever the queue is full."""
        for i in range(0, len(self._bodies), SQS_BATCH_MAX):
            while self._depth() >= self._window:
                if self._halt.wait(0.02):
                    return
            if self._halt.is_set():
                return
            self.sent += self._source.send_bodies(self._bodies[i : i + SQS_BATCH_MAX])

    def halt(self) -> None:
        """Stop sending."""
        self._halt.set()

    @property
    def finished(self) -> bool:
        """True once every body has been sent."""
        return self.sent == len(self._bodies)


class _RateColumn(ProgressColumn):
    """Messages per second."""

    def render(self, task: Task) -> Text:
        """Render the current rate."""
        speed = task.finished_speed or task.speed
        text = f"{speed:,.0f} msg/s" if speed else "- msg/s"
        return Text(text, style="progress.data.speed")


def demo_bodies(options: DemoOptions) -> list[str]:
    """The message bodies the demo sends: the file's records, or synthetic events."""
    if options.file is not None:
        bodies = read_records(options.file)
    else:
        bodies = synthetic(options.synthetic, options.random_seed)
    if not bodies:
        raise ConfigError("nothing to send: the file holds no records")
    return bodies


def run(console: Console, options: DemoOptions) -> int:
    """Run the demo, rendering to `console`; return the process exit code.

    0 when it completed, and also when Ctrl-C or SIGTERM ended it: stopping a
    demo is a normal way to finish it. Every process and temporary directory
    it started is gone when it returns.
    """
    bodies = demo_bodies(options)  # a bad --file fails before anything starts
    stack = ExitStack()
    try:
        # SIGINT too, explicitly: a process started with SIGINT ignored (a background
        # job of a non-interactive shell, and everything it starts) gets no
        # KeyboardInterrupt from Python, and --keep would then never stop on Ctrl-C.
        with _logs_to(console), _signal_handlers(_interrupt, signal.SIGINT, signal.SIGTERM):
            return _run(console, options, bodies, stack)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] stopping everything the demo started")
        return 0
    finally:
        # A second Ctrl-C must not leave a server behind; cleaning up takes ~0.5 s.
        with _signal_handlers(signal.SIG_IGN, signal.SIGINT, signal.SIGTERM):
            stack.close()


def _run(console: Console, options: DemoOptions, bodies: list[str], stack: ExitStack) -> int:
    console.rule("[bold]login-etl demo")
    console.print("Starting a throwaway PostgreSQL and an embedded SQS endpoint (moto)...")
    services = stack.enter_context(local_services())
    pg = services.pg
    client = services.sqs_client(pool_size=options.concurrency * 2 + 4)
    queue_url: str = client.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
    console.print(f"  PostgreSQL  {pg.url}")
    console.print(f"  SQS         {queue_url}")

    key = generate_key()
    masker = Masker(decode_key(key))
    console.print(
        f"  Masking key [bold]{masker.key_id}[/]: made for this demo only, discarded on exit\n"
        "  (a real deployment reads its own key from LOGIN_ETL_MASKING_KEY)"
    )
    seed = "" if options.random_seed is None else f" (seed {options.random_seed})"
    what = options.file or f"synthetic events{seed}"
    console.print(f"Sending {len(bodies):,} messages from {escape(str(what))} and loading them...")

    settings = services.settings(
        queue_url=queue_url,
        concurrency=options.concurrency,
        batch_size=100,  # small batches: a smooth progress bar, a shallow queue
        batch_wait_seconds=0.1,
        wait_time=1,  # short polls: stop() returns within a second
        max_in_flight=2 * QUEUE_WINDOW,
        max_retry_time=30,
        shutdown_timeout=10,
    )
    outcome = _load(console, settings, bodies, client, masker, stack)
    report.show_summary(console, outcome)
    with connect(pg.url) as conn:
        report.show_rows_and_duplicates(console, conn, masker)
    if options.keep:
        report.keep_running(console, pg, services.sqs_endpoint, queue_url, key)
    return 0


def _load(
    console: Console,
    settings: Settings,
    bodies: list[str],
    client: Any,
    masker: Masker,
    stack: ExitStack,
) -> report.Outcome:
    """Feed the queue and run the pipeline until every message sent is committed."""
    stats = Stats()
    source = SqsSource(settings.require_queue(), client=client)
    sink = PostgresSink(settings.database_url)
    stack.callback(sink.close)
    pipeline = build_pipeline(settings, source, sink, masker, stats=stats)
    feeder = _Feeder(source, bodies, stats, QUEUE_WINDOW)
    errors: list[BaseException] = []
    threads: list[Thread] = []

    def stop_all() -> None:
        feeder.halt()
        pipeline.stop()
        for thread in threads:
            thread.join(15)

    stack.callback(stop_all)
    started = time.monotonic()
    threads.append(_background("demo-pipeline", pipeline.run, errors))
    threads.append(_background("demo-feeder", feeder.run, errors))
    total = len(bodies)
    progress = Progress(
        TextColumn("[bold]messages"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("messages", total=total)
        # Each message sent ends with exactly one ledger entry: a row or a rejection.
        while not (feeder.finished and stats.loaded + stats.rejected >= total):
            progress.update(task, completed=min(stats.done, total))
            if errors:
                raise errors[0]
            if not threads[0].is_alive():
                raise LoginEtlError("the pipeline stopped before every message was loaded")
            time.sleep(0.1)
        seconds = time.monotonic() - started
        progress.update(task, completed=total)
    stop_all()
    if errors:
        raise errors[0]
    return report.Outcome(sent=feeder.sent, stats=stats.snapshot(), seconds=seconds)


@contextmanager
def _logs_to(console: Console) -> Iterator[None]:
    """Show only warnings and errors, through rich, so the progress bar stays intact."""
    logger = logging.getLogger("login_etl")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [RichHandler(console=console, show_path=False, show_time=False)]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def _signal_handlers(handler: Any, *signums: int) -> Iterator[None]:
    """Install `handler` for `signums` (main thread only); restore the old ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM clean up (Ctrl-C) instead of leaving servers running."""
    raise KeyboardInterrupt
