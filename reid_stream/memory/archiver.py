"""The archiver: a consumer group of its own (`<app id>.archive`) that copies entity-matches and entity-updates
into the long-term memory (archive.py).
Its consumer's lag is in /metrics with the stages' (the worker lists it among the runtime's consumers).

Its offsets are committed only after PostgreSQL has a batch, so an outage makes this consumer wait and retry and
loses nothing; the pipeline's stages are other consumer groups reading other topics, and never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import mode
from aiokafka import ConsumerRecord

from reid_stream.config import Settings
from reid_stream.memory.archive import ARCHIVE_ERRORS, Archive, ArchiveHealth, parse_records
from reid_stream.metrics import Metrics
from reid_stream.retry import BACKOFF_MAX_S, BACKOFF_START_S
from reid_stream.stream.kafka_io import BatchConsumer

log = logging.getLogger(__name__)
BATCH_SIZE = 500
EXPIRE_EVERY_S = 3600.0  # retention: on start, then hourly
EXPIRE_RETRY_S = 60.0
STOP_GRACE_S = 10.0


def error_code(exc: BaseException) -> str:
    """A stable code for /ready (the error's text names hosts and users: it goes to the log only)."""
    if isinstance(exc, TimeoutError):
        return "archive_timeout"
    if isinstance(exc, ARCHIVE_ERRORS):
        return "archive_unreachable" if isinstance(exc, OSError) else "archive_error"
    return "archive_bug"


class Archiver(mode.Service):
    def __init__(self, settings: Settings, archive: Archive, health: ArchiveHealth, metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.archive = archive
        self.health = health
        self.metrics = metrics
        self.consumer = BatchConsumer(
            bootstrap=settings.kafka_bootstrap, topic=[settings.topic_matches, settings.topic_updates],
            group_id=f"{settings.app_id}.archive", batch_size=BATCH_SIZE, max_wait_s=0.2, max_inflight=1,
            session_timeout_s=settings.session_timeout_seconds, client_id=settings.app_id)
        self._stopping = asyncio.Event()
        self._gave_up = False  # a batch was left unstored at the stop: leave without committing anything more
        self._tasks: list[asyncio.Task[None]] = []

    async def on_start(self) -> None:
        await self.consumer.start()
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._expire_loop())]

    async def _run(self) -> None:
        try:
            await self.consumer.run(self._batch)
        except Exception:  # a bug; the stream goes on without its archive, and /ready says so
            log.exception("the archiver stopped")
            self.health.report(False, "archive_bug")

    async def on_stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()
        run, expire = self._tasks or (None, None)
        if expire is not None:
            expire.cancel()
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), STOP_GRACE_S)
            except TimeoutError:
                run.cancel()
                self._gave_up = True
        try:
            await self.consumer.close(drain=not self._gave_up)
        except Exception as exc:  # redelivered to the next archiver: harmless, the writes are idempotent
            log.warning("archiver: leaving the group without committing: %r", exc)
            with contextlib.suppress(Exception):
                await self.consumer.close(drain=False)
        await self.archive.close()

    async def _batch(self, batch: list[ConsumerRecord]) -> None:
        s = self.settings
        matches, updates, bad = parse_records(((r.topic, r.value) for r in batch), s.topic_matches, s.topic_updates)
        if bad:
            log.warning("archiver: %d records not written by a worker skipped", bad)
        delay = BACKOFF_START_S
        while True:
            try:
                t0 = time.perf_counter()
                stored = await self.archive.apply(matches, updates)
                self.metrics.stage("archive", time.perf_counter() - t0)
                self.metrics.archived.inc(stored)
                self.metrics.archive_up.set(1)
                self.health.archived += stored
                self.health.report(True)
                return
            except Exception as exc:  # PostgreSQL away (or a bug): this batch waits, uncommitted; nothing else does
                code = error_code(exc)
                self.health.report(False, code)
                self.metrics.archive_up.set(0)
                self.metrics.retries.labels("archiving").inc()
                log.warning("archiving %d match events and %d updates failed (%s: %r); retrying in %.1fs",
                            len(matches), len(updates), code, exc, delay, exc_info=code == "archive_bug")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():  # left uncommitted: whoever archives next stores it
                self._gave_up = True
                raise asyncio.CancelledError
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _expire_loop(self) -> None:
        while True:
            try:
                counts = await self.archive.expire()
                if any(counts.values()):
                    log.info("archive retention (%d days): deleted %s", self.settings.archive_retention_days,
                             counts)
                wait = EXPIRE_EVERY_S
            except Exception as exc:
                log.warning("archive retention pass failed (%s: %r); again in %.0fs", error_code(exc), exc,
                            EXPIRE_RETRY_S)
                wait = EXPIRE_RETRY_S
            await asyncio.sleep(wait)
