"""What the HTTP views use of the process they run in: each site's services, and the parts the stages share.

The worker builds the one object that has all of this and attaches it to the app as `app.runtime`; the views
read it through `view_runtime()`, typed by the protocol below, so imports run worker -> api and never back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, cast

import aiohttp
import faust

from reid_stream.api.auth import Auditor, Authenticator
from reid_stream.api.search import SearchService
from reid_stream.api.spaces import SpaceViews
from reid_stream.config import Settings
from reid_stream.encoders import Encoder
from reid_stream.memory.archive import Archive, ArchiveHealth
from reid_stream.metrics import Metrics
from reid_stream.store.corrections import Corrections
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.watch import Watchlist
from reid_stream.stream.kafka_io import BatchConsumer, Publisher


@dataclass
class SiteServices:
    """What the views use of one site: its store, the operators' writes, the search, and its learned spaces."""

    store: ReidStore
    corrections: Corrections
    watchlist: Watchlist
    search: SearchService
    spaces: SpaceViews


class ViewRuntime(Protocol):
    """The worker's shared parts that the views read (the worker's `Runtime` has them all)."""

    settings: Settings
    encoder: Encoder
    store: ReidStore
    auth: Authenticator
    auditor: Auditor
    http: aiohttp.ClientSession | None
    redis_ok: bool  # the pipeline's latest store write went through
    metrics: Metrics
    publisher: Publisher | None  # None until the pipeline has started
    consumers: list[BatchConsumer]
    archive: Archive | None  # None: no long-term memory configured
    archive_health: ArchiveHealth
    outbox_lock: asyncio.Lock

    def site(self, site_id: str) -> SiteServices: ...


def view_runtime(app: faust.App) -> ViewRuntime:
    """The runtime the worker attached to its app (see reid_stream.worker.app.create_app)."""
    return cast(ViewRuntime, app.runtime)  # type: ignore[attr-defined]
