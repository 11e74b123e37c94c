"""What the stages and the HTTP views share inside one worker process, and the app type that carries it.

Imports flow app -> runtime and web -> runtime, never back: the views reach the runtime through
`ReidApp.runtime`, typed, instead of importing the module that builds the app.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import faust
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from reid_stream.archive import Archive
from reid_stream.auth import Auditor, Authenticator
from reid_stream.config import Settings
from reid_stream.corrections import Corrections
from reid_stream.encoders import Encoder
from reid_stream.kafka_io import BatchConsumer, Publisher
from reid_stream.lru import Lru
from reid_stream.metrics import Metrics
from reid_stream.prepare import process_pool
from reid_stream.search import SearchService
from reid_stream.store import ReidStore
from reid_stream.watch import Watchlist

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_SITE_SERVICES = 64
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0


@dataclass
class SiteServices:
    """What the views use of one site: its store, and the operators' writes and the search on it."""

    store: ReidStore
    corrections: Corrections
    watchlist: Watchlist
    search: SearchService


@dataclass
class ArchiveHealth:
    """How the archiver's latest batch went: what /ready and /metrics say of the long-term memory."""

    ok: bool | None = None  # None: no batch yet
    error_code: str | None = None
    since: float = 0.0  # when ok last changed (epoch s)
    archived: int = 0  # appearances stored new since start

    def report(self, ok: bool, error_code: str | None = None) -> None:
        if ok != self.ok:
            self.since = time.time()
        self.ok, self.error_code = ok, error_code


@dataclass
class Runtime:
    """What the pipeline and the views share inside one worker process."""

    settings: Settings
    encoder: Encoder
    store: ReidStore
    prepare_pool: Executor
    model_pool: ThreadPoolExecutor
    auth: Authenticator
    auditor: Auditor
    http: aiohttp.ClientSession | None = None  # image URLs: stage 1 and thumbnails
    redis_ok: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    publisher: Publisher | None = None
    consumers: list[BatchConsumer] = field(default_factory=list)
    # Made by each site's first request; each holds its search snapshots, so only the latest sites' are kept.
    sites: Lru[str, SiteServices] = field(default_factory=lambda: Lru(MAX_SITE_SERVICES))
    archive: Archive | None = None  # the long-term memory (REID_ARCHIVE_URL); None when off
    archive_health: ArchiveHealth = field(default_factory=ArchiveHealth)
    # Held while the outbox of entity updates is read, published and acknowledged: the views (an operator's
    # correction) and the pipeline (its merges) both publish it, and reading the same head twice published
    # an update twice.
    outbox_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


    def site(self, site_id: str) -> SiteServices:
        def make() -> SiteServices:
            store = self.store.for_site(site_id)
            corrections = Corrections(store)
            return SiteServices(store, corrections, Watchlist(store, corrections),
                                SearchService(store, self.encoder, self.settings, self.model_pool))

        return self.sites.get_or_make(site_id, make)


class ReidApp(faust.App):
    """The Faust app with the worker's runtime attached, so views reach it with its type."""

    runtime: Runtime


def build_runtime(settings: Settings, encoder: Encoder) -> Runtime:
    return Runtime(
        settings=settings,
        encoder=encoder,
        store=ReidStore.from_settings(settings),
        prepare_pool=process_pool(settings.decode_workers),
        model_pool=ThreadPoolExecutor(1, thread_name_prefix="reid-model"),
        auth=Authenticator.from_settings(settings),
        auditor=Auditor(settings.audit_log, settings.audit_log_file),
        archive=Archive(settings) if settings.archive_url else None,
    )


async def retry_forever(what: str, op: Callable[[], Awaitable[T]], metrics: Metrics | None = None) -> T:
    """Retry an infrastructure step with capped exponential backoff; the batch stays unacked meanwhile.

    If the worker is told to stop while the step still fails, it exits at once: the batch stays
    uncommitted and is redelivered to whichever worker takes its partitions.
    """
    delay = BACKOFF_START_S
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            log.critical("stopping while %s still failing: exiting without committing this batch", what)
            os._exit(75)
        except (RedisError, OSError, RuntimeError, KafkaError) as exc:
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            if metrics is not None:
                metrics.retries.labels(what).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
