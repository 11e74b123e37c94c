"""The background learner: every REID_ADAPT_INTERVAL_SECONDS it has `reid-stream adapt` look at each (site,
model, type) this worker writes, in a process of its own, one at a time.

A child process, not a thread: the fit is seconds of CPU and Python, and the writer's event loop must never
wait for it. A lock in Redis (per site, expiring) keeps two workers from fitting one site at once; adoption
itself is atomic whoever does it (store/spaces.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import mode

from reid_stream.config import Settings
from reid_stream.store.reid_store import ReidStore
from reid_stream.store.spaces import SpaceStore

log = logging.getLogger(__name__)
LOCK_S = 1800  # a fit that takes longer than this lets another worker try


class Learner(mode.Service):
    def __init__(self, settings: Settings, store: ReidStore, shards: Callable[[], Iterable[tuple[str, str, str]]],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.store = store
        self.shards = shards  # (model, site, type) copies the writer holds now

    @mode.Service.task
    async def _learning(self) -> None:  # not `_loop`: mode.Service keeps its event loop there
        interval = self.settings.adapt_interval_seconds
        if not interval:
            return
        while not self.should_stop:
            await self.sleep(interval)
            for model, site, etype in sorted(set(self.shards())):
                if self.should_stop:
                    return
                try:
                    await self.learn(site, model, etype)
                except Exception:  # a failed fit leaves the current space in force; the stream never notices
                    log.exception("background adaptation of %s %s/%s failed", site, model, etype)

    async def learn(self, site: str, model: str, etype: str) -> dict[str, Any] | None:
        spaces = SpaceStore(self.store.for_site(site))
        if not await spaces.lock(model, etype, f"{os.getpid()}", LOCK_S):
            return None  # another worker is at it
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "reid_stream", "adapt", "--site", site, "--model", model, "--type", etype,
                "--if-new", str(self.settings.adapt_min_new), "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
        finally:
            with contextlib.suppress(Exception):
                await spaces.unlock(model, etype)
        if proc.returncode != 0:
            log.warning("adapt %s %s/%s exited %s: %s", site, model, etype, proc.returncode, err.decode()[-500:])
            return None
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        for outcome in lines:
            log.info("site %s %s/%s: %s", site, model, etype,
                     f"adopted v{outcome['version']}" if outcome["adopted"] else outcome["reason"])
        return lines[0] if lines else None
