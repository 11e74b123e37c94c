"""What the stages and the HTTP views share inside one worker process, and the app type that carries it.

The views reach it through `ReidApp.runtime`, typed by reid_stream.api.context's protocol, so they never
import this package: imports run worker -> api, never back.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp
import faust

from reid_stream.api.auth import Auditor, Authenticator
from reid_stream.api.context import SiteServices
from reid_stream.api.search import SearchService
from reid_stream.api.spaces import SpaceViews
from reid_stream.config import Settings
from reid_stream.encoders import Encoder
from reid_stream.lru import Lru
from reid_stream.memory.archive import Archive, ArchiveHealth
from reid_stream.metrics import Metrics
from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.spaces import SpaceStore
from reid_stream.store.watch import Watchlist
from reid_stream.stream.kafka_io import BatchConsumer, Publisher
from reid_stream.stream.prepare import process_pool

log = logging.getLogger(__name__)
MAX_SITE_SERVICES = 64


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
                                SearchService(store, self.encoder, self.settings, self.model_pool),
                                SpaceViews(SpaceStore(store)))

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
