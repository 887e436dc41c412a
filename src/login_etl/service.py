"""Wiring: the one place where settings become a source, a sink and a pipeline.

`run`, the demo, the benchmark and the tests all build their loop with
`build_pipeline`, so each exercises exactly the production setup. The CLI
calls these functions; they never print.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from login_etl import health, ledger, rejects, schema
from login_etl.config import Settings
from login_etl.errors import ConfigError, RetryableError
from login_etl.masking import Masker
from login_etl.metrics import Metrics, Stats
from login_etl.pgsink import PostgresSink, deadline
from login_etl.pipeline import Options, Pipeline
from login_etl.postgres import CONNECT_TIMEOUT, connect, init_schema, session
from login_etl.rekey import RekeyResult, check_keys, rekey
from login_etl.retry import Retrier
from login_etl.sink import Batch, Sink, WriteResult
from login_etl.source import QueueInfo, Source
from login_etl.sqs import SqsSource
from login_etl.threads import Threads, stop_on_signals

if TYPE_CHECKING:
    from login_etl.lake.writer import LakeWriter

log = logging.getLogger(__name__)


def pipeline_options(
    settings: Settings,
    *,
    drain: bool = False,
    max_messages: int | None = None,
    visibility_timeout: int | None = None,
) -> Options:
    """The loop's options from the settings: the only place this mapping is written."""
    return Options(
        concurrency=settings.concurrency,
        batch_size=settings.batch_size,
        batch_wait_seconds=settings.batch_wait_seconds,
        wait_time=settings.wait_time,
        max_in_flight=settings.max_in_flight,
        drain=drain,
        max_messages=max_messages,
        max_retry_time=float(settings.max_retry_time),
        shutdown_timeout=float(settings.shutdown_timeout),
        visibility_timeout=visibility_timeout,
        lake=bool(settings.lake_warehouse),
        lake_extra_fields=frozenset(settings.lake_extra_fields),
        # A write may connect and check the keys (before the first), then connect and
        # write, each connection and query bounded as `run` builds the sink.
        sink_timeout=2.0 * (CONNECT_TIMEOUT + settings.max_retry_time),
    )


def build_pipeline(
    settings: Settings,
    source: Source,
    sink: Sink,
    masker: Masker,
    *,
    drain: bool = False,
    max_messages: int | None = None,
    visibility_timeout: int | None = None,
    stats: Stats | None = None,
    threads: Threads | None = None,
) -> Pipeline:
    """A pipeline configured from `settings` over the given seams (its threads in `threads`)."""
    options = pipeline_options(
        settings, drain=drain, max_messages=max_messages, visibility_timeout=visibility_timeout
    )
    return Pipeline(source, sink, masker, options, stats=stats, threads=threads)


def init_db(settings: Settings, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Create the tables if missing (idempotent).

    Connecting must succeed within `timeout` seconds (the time left of a retry
    budget; at most libpq's CONNECT_TIMEOUT, at least its 2 s floor).
    """
    with session(settings.database_url, connect_timeout=timeout) as conn:
        init_schema(conn)


def sqs_source(settings: Settings) -> SqsSource:
    """The SQS source for the configured queue, with a connection per thread."""
    return SqsSource(
        settings.require_queue(),
        pool_size=settings.concurrency * 2 + 4,
        max_wait=settings.wait_time,
        protocol=settings.sqs_protocol,
    )


def source_for(settings: Settings, *, max_retry_time: float = 0) -> tuple[SqsSource, QueueInfo]:
    """The SQS source for the configured queue and its settings, once the queue answers.

    A wrong URL or missing credentials fail at once (ConfigError); an
    unreachable endpoint is retried for up to `max_retry_time` seconds, each
    attempt within the time left.
    """
    source = sqs_source(settings)
    return source, _queue_info(source, Retrier(max_retry_time))


def _queue_info(source: SqsSource, retrier: Retrier) -> QueueInfo:
    """The queue's settings, each attempt cut to the time left of `retrier`'s budget."""
    return retrier.call_within("SQS", lambda seconds: source.info(timeout=seconds))


def run(
    settings: Settings,
    *,
    drain: bool = False,
    max_messages: int | None = None,
    stats: Stats | None = None,
) -> Stats:
    """Run the pipeline until drained, stopped by a signal, or `max_messages` are done.

    Every thread the worker starts (receivers, heartbeat, ledger pruning, lake
    writer, health probes) is in one `Threads` registry with one stop event:
    SIGINT/SIGTERM set it, and so does the first error of any thread, which
    this function raises once the loop has handed back what it held.
    """
    for note in settings.notes:
        log.warning(note)
    stats = stats or Stats(metrics=Metrics() if settings.metrics_port else None)
    threads = Threads()
    retrier = Retrier(settings.max_retry_time, stop=threads.stop, on_retry=stats.retried)
    masker = retrier.call("kms", settings.masker)
    source = sqs_source(settings)
    server = None
    if settings.metrics_port:
        # Before the first call that may wait out an outage of SQS or PostgreSQL, so that
        # a start during one answers its probes (live, not ready).
        server = serve_health(settings, stats, source, threads)
    try:
        info = _queue_info(source, Retrier(settings.max_retry_time))
        if settings.init_db:
            retrier.call_within("init-db", lambda seconds: init_db(settings, timeout=seconds))
        key_check = KeyCheck(settings, masker)
        key_check.now_if_possible()
        prune = partial(
            ledger.prune_periodically,
            lambda seconds: session(settings.database_url, connect_timeout=seconds),
            info.retention_seconds,
            retrier,
        )
        threads.start("ledger-prune", prune)
        sink = key_check.before_first_write(
            PostgresSink(
                settings.database_url,
                lake=bool(settings.lake_warehouse),
                write_timeout=float(settings.max_retry_time),
            )
        )
        try:
            lake = lake_writer(settings, stats, threads)
            pipeline = build_pipeline(
                settings,
                source,
                sink,
                masker,
                drain=drain,
                max_messages=max_messages,
                visibility_timeout=info.visibility_timeout,
                stats=stats,
                threads=threads,
            )
            log.info(
                "worker started",
                extra={
                    "fields": {
                        "key_id": masker.key_id,
                        "concurrency": settings.concurrency,
                        "batch_size": settings.batch_size,
                        "drain": drain,
                    }
                },
            )
            try:
                with stop_on_signals(threads.stop):
                    pipeline.run()  # raises the first error of any thread
            finally:
                if lake is not None:
                    lake.close()  # a last pass: what this run loaded goes to the lake now
        finally:
            sink.close()
    finally:
        if server is not None:
            server.shutdown()  # /metrics and /healthz answered until the loop was done
        threads.end(settings.shutdown_timeout)
    threads.raise_error()  # a side thread that failed after the loop ended
    snap = stats.snapshot()
    log.info(
        "worker stopped",
        extra={
            "fields": {
                k: snap[k]
                for k in ("received", "loaded", "rejected", "duplicates", "released", "batches")
            }
            | {"msg_per_s": round(snap["messages_per_second"], 1)}
        },
    )
    return stats


def serve_health(
    settings: Settings,
    stats: Stats,
    source: SqsSource,
    threads: Threads,
    *,
    slack: float = health.SLACK,
) -> health.Server:
    """Serve /metrics, /healthz and /readyz; probe PostgreSQL and SQS every 2 s until the stop.

    The probes run in `threads` until its stop; the caller `shutdown()`s the
    server it gets, once the loop is done (the probes answer through a graceful stop).
    """
    metrics = stats.metrics or Metrics()
    dlqs: list[SqsSource | None] = []  # the queue's DLQ, once a probe has read its settings

    def sqs() -> None:
        if not dlqs:
            url = source.info().dlq_url
            dlqs.append(SqsSource(url, client=source.client) if url else None)
        depth = source.depth()
        metrics.queue_depth("main", depth.visible, depth.in_flight, depth.delayed)
        if (dlq := dlqs[0]) is not None:
            d = dlq.depth()
            metrics.queue_depth("dlq", d.visible, d.in_flight, d.delayed)

    def postgres() -> None:
        # Bounded, so that a hung server does not leave a probe thread behind each time.
        with connect(settings.database_url, connect_timeout=2) as conn, deadline(conn, 2):
            conn.execute("SELECT 1")

    checks = {"postgresql": postgres, "sqs": sqs}
    state = health.Health(stats, checks, slack=slack)
    server = health.serve(metrics, state, settings.metrics_port, settings.metrics_address)
    threads.start("probes", partial(health.probe_forever, state, threads.stop))
    return server


def lake_writer(
    settings: Settings, stats: Stats | None = None, threads: Threads | None = None
) -> LakeWriter | None:
    """The started lake writer when the lake is on (pyiceberg is imported only then).

    Its thread runs in `threads` (a registry of its own if none is given).
    """
    if not settings.lake_warehouse:
        return None
    from login_etl.lake.writer import LakeWriter

    on_retry = stats.retried if stats is not None else None
    return LakeWriter(settings, stats, on_retry=on_retry, threads=threads).start()


def seed(settings: Settings, bodies: Sequence[str]) -> int:
    """Send `bodies` to the configured queue, 10 per call; return how many."""
    if not bodies:
        raise ConfigError("nothing to send")
    return SqsSource(settings.require_queue(), protocol=settings.sqs_protocol).send_bodies(bodies)


class KeyCheck:
    """`rekey.check_keys` for a worker: refuse keys that made none of the stored masks
    (and, first, a schema version other than this code's: `schema.check`).

    It runs at start when PostgreSQL answers; a replica started while the
    database is down (no init-db) starts receiving anyway, and the check runs
    before its first write instead, under the write's retry policy. Either
    way nothing is loaded under a key the table does not know.
    """

    def __init__(self, settings: Settings, masker: Masker) -> None:
        self._url = settings.database_url
        self._masker = masker
        self._timeout = float(settings.max_retry_time)  # as long as a write may take
        self._done = False

    def check(self, timeout: float | None = None) -> None:
        """Run the check (once it has passed, never again), connecting and querying
        within `timeout` seconds (default: the retry budget, as long as a write may take)."""
        if not self._done:
            seconds = self._timeout if timeout is None else timeout
            started = time.monotonic()
            with (
                session(self._url, connect_timeout=seconds) as conn,
                deadline(conn, seconds - (time.monotonic() - started)),
            ):
                schema.check(conn)  # the version this code knows, before anything is read
                check_keys(conn, self._masker)
            self._done = True

    def now_if_possible(self) -> None:
        """Check now; if PostgreSQL does not answer, leave it to the first write."""
        try:
            self.check()
        except RetryableError as exc:
            log.warning("key check deferred to the first batch: %s", exc)

    def before_first_write(self, sink: Sink) -> Sink:
        """`sink`, checking the keys before its first write if that is still to do."""
        return sink if self._done else _CheckedSink(sink, self.check)


class _CheckedSink:
    """A sink that runs `check` before every write until one succeeds."""

    def __init__(self, sink: Sink, check: Callable[[float | None], None]) -> None:
        self._sink, self._check = sink, check

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        """Check, then write `batch`, the two within `timeout`; a failed check writes nothing."""
        started = time.monotonic()
        self._check(timeout)
        if timeout is not None:
            timeout -= time.monotonic() - started
        return self._sink.write(batch, timeout=timeout)

    def close(self) -> None:
        """Close the wrapped sink."""
        self._sink.close()


def replay_rejections(settings: Settings, *, reason: str | None) -> rejects.ReplayResult:
    """Re-run stored rejections through the current rules."""
    masker = settings.masker()
    with session(settings.database_url) as conn:
        return rejects.replay(
            conn,
            masker,
            reason=reason,
            lake=bool(settings.lake_warehouse),
            extra_fields=frozenset(settings.lake_extra_fields),
        )


def prune_ledger(
    settings: Settings, *, retention: int | None, dry_run: bool, force: bool = False
) -> tuple[int, int]:
    """Prune the ledger; retention comes from the queue unless given. Returns (entries, secs).

    A given retention shorter than the queue's is refused unless `force`: the
    ledger would forget ids SQS may still redeliver, and those would load twice.
    With no queue configured, the queue's retention is unknown, so it is taken
    to be the longest SQS allows.
    """
    if retention is None:
        retention = source_for(settings)[1].retention_seconds
    elif not force:
        if settings.queue_url:
            kept, whose = source_for(settings)[1].retention_seconds, "the queue's retention"
        else:
            kept, whose = ledger.SQS_MAX_RETENTION_SECONDS, "the longest SQS retention"
        if retention < kept:
            raise ConfigError(
                f"--retention {retention} is shorter than {whose} ({kept}s): "
                "the ledger would forget messages SQS can still redeliver, and they would "
                "load twice. Use a longer --retention, or --force to take that risk"
            )
    with session(settings.database_url) as conn:
        return ledger.prune(conn, retention, dry_run=dry_run), retention


def rekey_masks(settings: Settings) -> RekeyResult:
    """Rewrite everything made by older keys with the primary key: the whole rotation.

    The masks of `user_logins`, the sealed rejected bodies, and, with the lake
    on, the outbox's masks and the lake's data files holding old masks. Only
    then may the old key be retired.
    """
    masker = settings.masker()
    with session(settings.database_url) as conn:
        result = rekey(conn, masker)
    if settings.lake_warehouse:
        from login_etl.lake.upkeep import rekey as rekey_lake  # the lake extra

        lake = rekey_lake(settings, masker)
        result.lake_outbox, result.lake_records = lake.outbox, lake.rows
        result.lake_partitions = lake.partitions
        result.unreadable += lake.unreadable
    return result
