"""A site's learned similarity spaces in Redis: each version's bytes, the current one, and their history.

Adopting a version sets it current and moves the (model, type)'s compare-and-set version in one MULTI, so the
writer's next commit on its old copy fails, and it reads the rows again through the new space: a site is
wholly in the old version or wholly in the new one, whatever crashes in between, and no two writers use two
versions at once.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError, WatchError

from reid_stream.store.reid_store import ReidStore

# What a lost or refusing Redis raises, for callers outside this package (the `adapt` command) to catch.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class SpaceStore:
    def __init__(self, store: ReidStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.ttl = store.settings.adapt_retention_seconds

    async def current(self, model: str, etype: str) -> tuple[int, bytes | None]:
        """(version, its bytes); (0, None) for the encoder's own space."""
        raw = await self.redis.get(self.keys.space_current(model, etype))
        version = int(raw or 0)
        if not version:
            return 0, None
        return version, await self.redis.get(self.keys.space(model, etype, version))

    async def current_version(self, model: str, etype: str) -> tuple[int, None]:
        """The current version alone (the views': no arrays read)."""
        return int(await self.redis.get(self.keys.space_current(model, etype)) or 0), None

    async def blob(self, model: str, etype: str, version: int) -> bytes | None:
        return await self.redis.get(self.keys.space(model, etype, version))

    async def next_version(self, model: str, etype: str) -> int:
        key = self.keys.space_next(model, etype)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int((await pipe.execute())[0])

    async def save(self, model: str, etype: str, version: int, data: bytes, summary: dict[str, Any]) -> None:
        """Keep a fitted version (not yet adopted): the bytes first, then its line in the history."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.space(model, etype, version), data, ex=self.ttl)
        pipe.hset(self.keys.space_log(model, etype), str(version), json.dumps(summary))
        pipe.expire(self.keys.space_log(model, etype), self.ttl)
        await pipe.execute()

    async def adopt(self, model: str, etype: str, version: int, summary: dict[str, Any]) -> None:
        """Make `version` current (0: back to the encoder's own space) atomically with the writer's version."""
        if version and not await self.redis.exists(self.keys.space(model, etype, version)):
            raise LookupError(f"space version {version} of {model}/{etype} is not stored (expired or never fitted)")
        cas = self.keys.version(model, etype)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(cas)
                    ttl = max(int(await pipe.ttl(cas)), self.store.settings.embedding_ttl_seconds)
                    pipe.multi()
                    pipe.set(self.keys.space_current(model, etype), version, ex=self.ttl)
                    pipe.incr(cas)
                    pipe.expire(cas, ttl)
                    if version:
                        pipe.expire(self.keys.space(model, etype, version), self.ttl)
                    pipe.hset(self.keys.space_log(model, etype), str(version), json.dumps(summary))
                    pipe.expire(self.keys.space_log(model, etype), self.ttl)
                    await pipe.execute()
                    return
                except WatchError:
                    continue  # a commit moved the version meanwhile: adopt on top of it

    async def models(self, etype: str) -> list[str]:
        """The models with stored rows of this type at the site."""
        start = f"{self.keys.prefix}:idx:"
        found = {k.decode()[len(start):].rpartition(":")[0] async for k in self.redis.scan_iter(
            match=f"{start}*:{etype}", count=1000)}
        return sorted(found)

    async def raw_dim(self, model: str, etype: str) -> int | None:
        """The dimension of the stored raw vectors a space of (model, type) projects (None: none stored)."""
        members = await self.redis.zrange(self.keys.index(model, etype), 0, 0)
        if not members:
            return None
        day, _, det = members[0].decode().partition("|")
        raw = await self.redis.hget(self.keys.vec_prefix(model, etype) + day, det)
        if raw is None:
            return None
        return len(raw) // (2 if self.store.settings.vector_dtype == "float16" else 4)

    async def lock(self, model: str, etype: str, owner: str, seconds: int) -> bool:
        """One fit of (model, type) at a time across workers; the lock expires if its holder dies."""
        return bool(await self.redis.set(self.keys.space(model, etype, 0) + ":lock", owner, nx=True, ex=seconds))

    async def unlock(self, model: str, etype: str) -> None:
        await self.redis.delete(self.keys.space(model, etype, 0) + ":lock")

    async def history(self, model: str, etype: str) -> dict[int, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.space_log(model, etype))
        return {int(k): json.loads(v) for k, v in raw.items()}

    async def touch(self, model: str, etype: str) -> None:
        """A site still learning keeps its spaces: every key of them lives another retention period."""
        version = int(await self.redis.get(self.keys.space_current(model, etype)) or 0)
        pipe = self.redis.pipeline(transaction=False)
        keys = [self.keys.space_current(model, etype), self.keys.space_log(model, etype),
                self.keys.space_next(model, etype)]
        for key in keys + ([self.keys.space(model, etype, version)] if version else []):
            pipe.expire(key, self.ttl)
        await pipe.execute()
