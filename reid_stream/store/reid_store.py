"""Redis persistence of embeddings, entities and TTLs; the only module that talks to Redis."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import WatchError

from reid_stream.config import Settings
from reid_stream.errors import DimensionMismatch
from reid_stream.events import (
    DEFAULT_SITE,
    ENTITY_TYPES,
    EntityAppearance,
    EntityDetail,
    EntitySummary,
    EntityUpdate,
    MatchEvent,
    WatchAlert,
)
from reid_stream.identity.matching import Assignment, EntityEmbedding, VectorIndex
from reid_stream.identity.plates import entity_plates
from reid_stream.lru import Lru
from reid_stream.store.erasure import others_named, plan_erasure, queue_erasure
from reid_stream.store.keys import KEPT_DAY, PAIR_SEP, Keys, day_of


def lua_script(name: str) -> str:
    """A correction script with the helpers they share (prelude.lua) in front."""
    return (LUA_DIR / "prelude.lua").read_text() + (LUA_DIR / name).read_text()


LUA_DIR = Path(__file__).resolve().parent / "lua"
COMMIT_LUA = (LUA_DIR / "store.lua").read_text()
MERGE_LUA = lua_script("merge.lua")
# Pops the outbox's head while it is the next update published (by content: see ack_published).
ACK_LUA = """
local n = 0
for i = 1, #ARGV do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
return n
"""
T = TypeVar("T")
MAX_SITE_VIEWS = 4096
MAX_ALIAS_HOPS = 32  # merges flatten chains, so one hop is the rule; more only mid-merge or from stale keys


def redis_client(url: str) -> aioredis.Redis:
    """A client for a Redis URL; `redis+cluster://` (or `rediss+cluster://`) names one node of a cluster.

    Both clients answer the same commands here: every script and transaction touches one site's keys, which
    share a hash slot (see Keys), and the pipelines that span sites are not transactions.
    """
    timeouts: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
    scheme, sep, rest = url.partition("://")
    if scheme.endswith("+cluster"):
        node = f"{scheme.removesuffix('+cluster')}{sep}{rest}"
        return cast(aioredis.Redis, RedisCluster.from_url(node, **timeouts))
    return aioredis.Redis.from_url(url, health_check_interval=15, **timeouts)


def stored_vector(raw: bytes, dim: int, stored_dim: int | None = None, model: str = "") -> np.ndarray:
    """A vector as stored, float32 or float16, as float32; DimensionMismatch unless it has `dim` numbers.

    `stored_dim` is the row's own count (its meta's "d"); rows stored before it was kept are told apart by
    length alone, which cannot tell 2n float16 numbers from n float32 ones.
    """
    if stored_dim is None:
        stored_dim = dim if len(raw) in (2 * dim, 4 * dim) else len(raw) // 4
    if stored_dim != dim or len(raw) not in (2 * dim, 4 * dim):
        raise DimensionMismatch(dim, stored_dim, model)
    if len(raw) == 2 * dim:
        vec = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)  # rounding moved it off the unit sphere
    return np.frombuffer(raw, dtype=np.float32)


@dataclass(frozen=True)
class PlannedWrite:
    """One detection ready to be stored: its vector, its assignment and the match event it produces."""

    event: MatchEvent
    vector: np.ndarray
    assignment: Assignment
    fingerprint: str
    appearance: EntityAppearance
    stored_at: float
    image_ref: dict[str, Any] | None = None  # where a thumbnail can be cut again; no image bytes are stored
    track_key: str = ""  # its tracklet, "camera_id|track_id"; "" without a track_id
    quality: float = 1.0  # its weight in the tracklet's and the entity's mean
    alert: WatchAlert | None = None  # raised with it, unless the rate limit holds it back (see store.lua)
    _json: str | None = field(default=None, repr=False)

    def event_json(self) -> str:
        """The match event as JSON, serialised once: the marker stores it and Kafka gets the same text."""
        if self._json is None:
            object.__setattr__(self, "_json", self.event.model_dump_json())  # a cache on a frozen record
        assert self._json is not None
        return self._json


@dataclass(frozen=True)
class CommitResult:
    status: str  # ok | dup | conflict | gone (merge: an entity no longer exists)
    version: int | None = None
    evicted: tuple[str, ...] = ()
    marker: dict[str, Any] | None = None
    alert: str = ""  # a stored detection's alert: raised | limited (held back by the rate limit) | "" (none)


_json_str = json.encoder.encode_basestring_ascii  # json.dumps of a str (ensure_ascii), quotes included


def _json_number(x: float) -> str:
    """json.dumps of a number: repr for a finite float, as json's encoder writes it."""
    return float.__repr__(x) if type(x) is float and math.isfinite(x) else json.dumps(x)


def resolve_alias(aliases: Mapping[str, str], entity_id: str) -> str:
    """The live entity an id now is: aliases followed to the end; a cycle (never written, but keys expire
    independently) stops where it closes rather than looping."""
    seen = {entity_id}
    while (nxt := aliases.get(entity_id)) is not None and nxt not in seen and len(seen) < MAX_ALIAS_HOPS:
        seen.add(nxt)
        entity_id = nxt
    return entity_id


def pair_member(a: str, b: str) -> str:
    """A cannot-link pair as stored: the two ids sorted, so either order finds it, joined by a character no id
    may hold (ids are control-character free)."""
    return PAIR_SEP.join(sorted((a, b)))


def operator_fields(h: Mapping[str, str]) -> dict[str, Any]:
    """Name, notes, trust, watch and retention of an entity hash (decoded), as the views show them."""
    until = float(h.get("keep_until", 0) or 0)
    return {"name": h.get("name"), "notes": h.get("notes"), "trust": h.get("trust", "unknown"), "watch": h.get("watch"),
            "retained_until": datetime.fromtimestamp(until, UTC) if until > time.time() else None}


def _sorted_ids(raw: Iterable[bytes]) -> list[str]:
    return sorted(r.decode() for r in raw)


class ReidStore:
    """One site's view of the store; `for_site` gives another site's, sharing the client and the scripts."""

    def __init__(self, client: aioredis.Redis, settings: Settings, site: str = DEFAULT_SITE) -> None:
        self.redis = client
        self.settings = settings
        self.site = site
        self.keys = Keys.of(settings.redis_prefix, site)
        self._sites: Lru[str, ReidStore] = Lru(MAX_SITE_VIEWS)  # shared by every site's view
        self._sites.put(site, self)
        # redis-py keeps the script's SHA and loads it again itself after a Redis restart (NOSCRIPT).
        self._commit_script = client.register_script(COMMIT_LUA)
        self._merge_script = client.register_script(MERGE_LUA)
        self._ack_script = client.register_script(ACK_LUA)
        self._dtype = np.float16 if settings.vector_dtype == "float16" else np.float32

    @classmethod
    def from_settings(cls, settings: Settings) -> ReidStore:
        return cls(redis_client(settings.redis_url), settings)

    def for_site(self, site: str) -> ReidStore:
        """The same store, keyed for another site."""
        def make() -> ReidStore:
            found = copy.copy(self)  # shallow: the client, the scripts and the map of sites are shared
            found.site, found.keys = site, Keys.of(self.settings.redis_prefix, site)
            return found

        return self._sites.get_or_make(site, make)

    async def close(self) -> None:
        await self.redis.aclose()

    async def forget_everything(self) -> int:
        """Delete every key under this store's prefix, of every site: a scratch store's clean-up (eval replays)."""
        keys = [k async for k in self.redis.scan_iter(match=f"{self.settings.redis_prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self.redis.delete(*keys[start:start + 1000])
        return len(keys)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- the writer side ----------------------------------------------------------------------

    async def version(self, model: str, etype: str) -> int:
        return int(await self.redis.get(self.keys.version(model, etype)) or 0)

    async def load_index(self, model: str, etype: str, dim: int, ann: bool = True) -> tuple[int, VectorIndex]:
        """A consistent snapshot: re-read until the version did not move during the read."""
        while True:
            before = await self.version(model, etype)
            # Rows keep the entity id they were stored with; a merge since then renamed it (merges bump the
            # version, so the aliases belong to this snapshot).
            aliases = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(
                self.keys.aliases(model, etype))).items()}
            members = await self.redis.zrange(self.keys.index(model, etype), 0, -1, withscores=True)
            by_day: dict[str, list[tuple[str, float]]] = {}
            for member, score in members:
                day, _, det = member.decode().partition("|")
                by_day.setdefault(day, []).append((det, score))
            pipe = self.redis.pipeline(transaction=False)
            for day, items in by_day.items():
                dets = [d for d, _ in items]
                pipe.hmget(self.keys.vec_prefix(model, etype) + day, dets)
                pipe.hmget(self.keys.meta_prefix(model, etype) + day, dets)
            replies = await pipe.execute() if by_day else []
            index = VectorIndex(dim, capacity=max(1024, len(members)))
            for n, (_day, items) in enumerate(by_day.items()):
                vecs, metas = replies[2 * n], replies[2 * n + 1]
                for (det, score), vec, meta in zip(items, vecs, metas, strict=True):
                    if vec is None or meta is None:
                        continue
                    m = json.loads(meta)
                    index.add(EntityEmbedding(
                        detection_id=det, entity_id=resolve_alias(aliases, m["e"]), entity_type=etype, camera_id=m["c"],
                        timestamp=datetime.fromisoformat(m["t"]),
                        embedding=stored_vector(vec, dim, m.get("d"), model),
                        model=model, stored_at=score, track_key=m.get("k", ""), quality=m.get("q", 1.0),
                        plate=m.get("p")))
            if await self.version(model, etype) == before:
                if ann:  # built once, in the background, from all rows
                    index.enable_ann(self.settings.ann_min_size)
                return before, index

    async def batch_state(self, detections: dict[str, list[str]], shards: list[tuple[str, str, str]]
                          ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[tuple[str, str, str], int]]:
        """What a stage-2 batch reads first, for all its sites in one round trip: the markers of its detection
        ids by site, and the version of each (site, model, type). One command per site, so each names one slot
        of a cluster (a cluster pipeline sends each node its own)."""
        pipe = self.redis.pipeline(transaction=False)
        sites = [(site, ids) for site, ids in detections.items() if ids]
        for site, ids in sites:
            keys = self.for_site(site).keys
            # As a raw command: redis-py's cluster pipeline refuses mget() for fear of keys in several slots,
            # but a site's keys share one (its hash tag), so the pipeline sends it to that slot's node.
            pipe.execute_command("MGET", *(keys.marker(d) for d in ids))
        for site, model, etype in shards:
            pipe.get(self.for_site(site).keys.version(model, etype))
        raw = await pipe.execute()
        markers = {site: {d: json.loads(r) for d, r in zip(ids, found, strict=True) if r is not None}
                   for (site, ids), found in zip(sites, raw[:len(sites)], strict=True)}
        versions = {shard: int(v or 0) for shard, v in zip(shards, raw[len(sites):], strict=True)}
        return markers, versions

    async def markers(self, detection_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not detection_ids:
            return {}
        raw = await self.redis.mget([self.keys.marker(d) for d in detection_ids])
        return {d: json.loads(r) for d, r in zip(detection_ids, raw, strict=True) if r is not None}

    async def plates(self, model: str, etype: str, entity_id: str) -> set[str]:
        """The licence plates on an entity's stored rows: a plate is forgotten with its rows (TTL, erasure)."""
        k = self.keys
        rows = await self.redis.zrange(k.order(entity_id), 0, -1, withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        for det, ts in rows:
            pipe.hget(k.meta_prefix(model, etype) + day_of(datetime.fromtimestamp(ts, UTC)), det)
            pipe.hget(k.meta_prefix(model, etype) + KEPT_DAY, det)  # a retained entity's rows
        metas = await pipe.execute() if rows else []
        return {p for m in metas if m is not None and (p := json.loads(m).get("p"))}

    @staticmethod
    def _commit_fields(w: PlannedWrite) -> list[str]:
        """One detection's text fields in the batch commit (see store.lua); none holds a newline."""
        ev = w.event
        at = ev.timestamp.isoformat()
        # What json.dumps of {"e", "c", "t", "k", "q", "d"[, "p"]} writes, byte for byte (tests/unit/store/
        # test_fields.py), without building and walking a dict per detection. A plate lives with its row; "d", the
        # vector's length, tells a reader whether the row is of its model's dimension (see stored_vector).
        meta = (f'{{"e": {_json_str(ev.entity_id)}, "c": {_json_str(ev.camera_id)}, "t": {_json_str(at)}, '
                f'"k": {_json_str(w.track_key)}, "q": {_json_number(w.quality)}, "d": {len(w.vector)}'
                + (f', "p": {_json_str(ev.plate)}}}' if ev.plate else "}"))
        # The event is serialised once, straight into the marker's JSON text.
        marker = (f'{{"fp": {json.dumps(w.fingerprint)}, "event": {w.event_json()}, '
                  f'"ref": {json.dumps(w.image_ref)}}}')
        named = sorted(others_named(ev.entity_id, (m.entity_id for m in ev.matches),
                                    (c.entity_id for c in ev.candidates),
                                    ev.tracklet.redecided_from if ev.tracklet is not None else None))
        alert = w.alert
        return [ev.detection_id, day_of(ev.timestamp), meta, marker, ev.camera_id, repr(ev.timestamp.timestamp()),
                at, w.appearance.model_dump_json(), ev.entity_id, str(len(named)), *named,
                alert.model_dump_json() if alert else "", alert.watch_id + PAIR_SEP + alert.camera_id if alert else ""]

    async def commit(self, writes: list[PlannedWrite], expected_version: int) -> list[CommitResult]:
        """Store a batch of one (model, type) in one script call; write i expects version expected + i.

        redis-py's Script loads the script again itself after a Redis restart (NOSCRIPT)."""
        if not writes:
            return []
        model, etype = writes[0].event.model, writes[0].event.entity_type
        if any((w.event.model, w.event.entity_type) != (model, etype) for w in writes):
            raise ValueError("one commit holds detections of one model and entity type")
        k, s = self.keys, self.settings
        keys = [k.version(model, etype), k.index(model, etype), k.by_type(etype), k.aliases(model, etype)]
        vectors = np.ascontiguousarray(np.stack([w.vector for w in writes]), dtype=self._dtype)
        fields: list[str] = []
        for w in writes:
            fields.extend(self._commit_fields(w))
        fields.append("")  # every field ends with a newline
        args: list[Any] = [expected_version, s.embedding_ttl_seconds, s.max_embeddings,
                           max(w.stored_at for w in writes), etype, model, k.prefix, len(writes),
                           vectors.shape[1] * vectors.itemsize, vectors.tobytes(), "\n".join(fields),
                           s.alert_cooldown_seconds]
        replies = await self._commit_script(keys=keys, args=args)
        out = []
        for reply in replies:
            status, _, rest = reply.decode().partition("\n")
            if status == "ok":
                version, alert, *evicted = rest.split("\n")
                out.append(CommitResult("ok", int(version), tuple(evicted[:-1]), alert=alert))
            elif status == "dup":
                out.append(CommitResult("dup", marker=json.loads(rest)))
            else:
                out.append(CommitResult("conflict", int(rest)))
        return out

    async def merge(self, model: str, etype: str, survivor: str, merged: str, similarity: float | None,
                    expected_version: int, at: datetime, by: str | None = None,
                    pinned: Iterable[str] = ()) -> CommitResult:
        """Merge one entity into another in one atomic script (see merge.lua): ok with the new version,
        conflict (with the current one) when the version moved, gone when either entity no longer exists,
        apart when an operator split the two apart."""
        if survivor == merged:
            raise ValueError(f"cannot merge entity {survivor} into itself")
        k = self.keys
        keys = [k.version(model, etype), k.entity(survivor), k.cameras(survivor), k.appearances(survivor),
                k.order(survivor), k.merged_ids(survivor), k.entity(merged), k.cameras(merged),
                k.appearances(merged), k.order(merged), k.merged_ids(merged), k.by_type(etype),
                k.aliases(model, etype), k.outbox(etype), k.refs(survivor), k.refs(merged), k.apart(model, etype),
                k.named(etype), k.pinned(model, etype)]
        update = EntityUpdate(type="merged", survivor=survivor, merged=merged, entity_type=etype, site_id=self.site,
                              similarity=similarity, at=at, by=by)
        args = [expected_version, self.settings.embedding_ttl_seconds, survivor, merged, update.model_dump_json(),
                k.camera_prefix(etype), k.alias_prefix(), pair_member(survivor, merged), *pinned]
        status, version = await self._merge_script(keys=keys, args=args)
        return CommitResult(status.decode(), int(version))

    # --- the outbox: merges waiting to be published on entity-updates ------------------------

    async def pending_updates(self, etype: str, limit: int = 100) -> list[EntityUpdate]:
        """The oldest unpublished updates of a type, oldest first; they stay until acknowledged."""
        raw = await self.redis.lrange(self.keys.outbox(etype), 0, limit - 1)
        return [EntityUpdate.model_validate_json(r) for r in raw]

    async def pending_raw(self, etype: str, limit: int = 100) -> list[bytes]:
        """The oldest unpublished updates of a type as stored (JSON), oldest first."""
        return list(await self.redis.lrange(self.keys.outbox(etype), 0, limit - 1))

    async def ack_published(self, etype: str, published: list[bytes]) -> int:
        """Drop published updates from the head of the outbox, each only if it is still there: the views publish
        an operator's correction at once while the pipeline may be publishing the same head, and a count
        would then drop an update neither published. Returns how many were dropped."""
        return int(await self._ack_script(keys=[self.keys.outbox(etype)], args=published))

    async def pending_outboxes(self, shards: list[tuple[str, str]], limit: int = 100,
                               alert_limit: int = 500) -> dict[tuple[str, str], tuple[list[bytes], list[bytes]]]:
        """Of these (site, type)s, those whose outboxes hold something: (updates, alerts) as stored, oldest
        first. One round trip for all (a cluster's pipeline goes to each primary once)."""
        pipe = self.redis.pipeline(transaction=False)
        for site, etype in shards:
            k = self.for_site(site).keys
            pipe.lrange(k.outbox(etype), 0, limit - 1)
            pipe.lrange(k.alerts(etype), 0, alert_limit - 1)
        replies = await pipe.execute() if shards else []
        return {shard: (list(replies[2 * n]), list(replies[2 * n + 1])) for n, shard in enumerate(shards)
                if replies[2 * n] or replies[2 * n + 1]}

    async def pending_alerts(self, etype: str, limit: int = 500) -> list[bytes]:
        """The oldest unpublished watch list alerts of a type as stored (JSON), oldest first."""
        return list(await self.redis.lrange(self.keys.alerts(etype), 0, limit - 1))

    async def ack_alerts(self, etype: str, published: list[bytes]) -> int:
        """Drop published alerts from the head of their outbox (by content, as ack_published)."""
        return int(await self._ack_script(keys=[self.keys.alerts(etype)], args=published))

    async def ack_updates(self, etype: str, count: int) -> None:
        """Drop the first `count` updates once Kafka has them: a crash before this publishes them again."""
        if count > 0:
            await self.redis.ltrim(self.keys.outbox(etype), count, -1)

    # --- the reader side (HTTP views) ---------------------------------------------------------

    async def list_entities(self, entity_type: str | None, camera_id: str | None, since: float | None,
                            limit: int, offset: int) -> tuple[list[EntitySummary], int]:
        """Most recently seen first. Each (type, camera) index is merged, so paging stays exact."""
        types = [entity_type] if entity_type else list(ENTITY_TYPES)
        index_keys = [self.keys.by_camera(t, camera_id) if camera_id else self.keys.by_type(t) for t in types]
        low = "-inf" if since is None else since
        pipe = self.redis.pipeline(transaction=False)
        for key in index_keys:
            pipe.zrevrangebyscore(key, "+inf", low, start=0, num=offset + limit, withscores=True)
            pipe.zcount(key, low, "+inf")
        replies = await pipe.execute()
        merged: list[tuple[float, str]] = []
        total = 0
        for i in range(len(index_keys)):
            merged.extend((score, member.decode()) for member, score in replies[2 * i])
            total += int(replies[2 * i + 1])
        merged.sort(key=lambda sm: (-sm[0], sm[1]))
        ids = [eid for _, eid in merged[offset: offset + limit]]
        summaries = await self._summaries(ids)
        return [s for s in summaries if s is not None], total

    async def summaries(self, entity_ids: list[str]) -> list[EntitySummary]:
        """The live ones of these entities, in order."""
        return [s for s in await self._summaries(entity_ids) if s is not None]

    async def _summaries(self, entity_ids: list[str]) -> list[EntitySummary | None]:
        pipe = self.redis.pipeline(transaction=False)
        for eid in entity_ids:
            pipe.hgetall(self.keys.entity(eid))
            pipe.smembers(self.keys.cameras(eid))
            pipe.hlen(self.keys.appearances(eid))
            pipe.smembers(self.keys.merged_ids(eid))
        replies = await pipe.execute() if entity_ids else []
        out: list[EntitySummary | None] = []
        for i, eid in enumerate(entity_ids):
            h, cams, count, merged = replies[4 * i: 4 * i + 4]
            if not h:  # expired since the index was read
                out.append(None)
                continue
            h = {k.decode(): v.decode() for k, v in h.items()}
            out.append(EntitySummary(
                id=eid, entity_id=eid, entity_type=h["entity_type"], site_id=self.site, first_seen=h["first_seen"],
                last_seen=h["last_seen"], appearance_count=int(count), cameras_seen=sorted(c.decode() for c in cams),
                thumbnail_url=self._entity_thumbnail(eid, h), merged_ids=_sorted_ids(merged),
                **operator_fields(h)))
        return out

    def _entity_thumbnail(self, entity_id: str, h: dict[str, str]) -> str:
        """The latest appearance's thumbnail (its source is the least likely to be gone); entities stored
        before the latest one was recorded show their founding detection, whose id the entity carries."""
        return self.settings.thumbnail_url(h.get("last_cam", h.get("first_cam", "")),
                                           h.get("last_det", entity_id), self.site)

    async def get_entity(self, entity_id: str) -> EntityDetail | None:
        """The entity, or the one it was merged into (with resolved_from naming the id asked for)."""
        found = await self._follow_aliases(entity_id, self._detail)
        if found is None:
            return None
        target, detail = found
        if target != entity_id:
            detail.resolved_from = entity_id
        return detail

    async def resolve(self, entity_id: str) -> str | None:
        """The live entity an id names: itself, the survivor of its merges, or None (unknown, expired)."""
        async def live(eid: str) -> bool | None:
            return True if await self.redis.exists(self.keys.entity(eid)) else None

        found = await self._follow_aliases(entity_id, live)
        return None if found is None else found[0]

    async def _follow_aliases(self, entity_id: str, read: Callable[[str], Awaitable[T | None]]) -> tuple[str, T] | None:
        """Read the id, else the id its alias names, and so on; (the id read, what was read) or None.

        One alias read at a time, not a snapshot: a merge happening between two reads is simply followed.
        """
        target, seen = entity_id, {entity_id}
        while (found := await read(target)) is None:
            nxt = await self.redis.get(self.keys.alias(target))
            if nxt is None or nxt.decode() in seen or len(seen) > MAX_ALIAS_HOPS:
                return None
            target = nxt.decode()
            seen.add(target)
        return target, found

    async def _detail(self, entity_id: str) -> EntityDetail | None:
        """One round trip: the entity, its cameras, its appearances in time order and its merged ids."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.entity(entity_id))
        pipe.smembers(k.cameras(entity_id))
        pipe.zrange(k.order(entity_id), 0, -1)
        pipe.hgetall(k.appearances(entity_id))
        pipe.smembers(k.merged_ids(entity_id))
        h, cams, order, apps, merged = await pipe.execute()
        if not h:
            return None
        h = {key.decode(): v.decode() for key, v in h.items()}
        appearances = [EntityAppearance.model_validate_json(apps[d]) for d in order if d in apps]
        for app in appearances:  # filled on read, so a changed REID_THUMBNAIL_URL_TEMPLATE applies at once
            app.thumbnail_url = self.settings.thumbnail_url(app.camera_id, app.detection_id, self.site)
        return EntityDetail(id=entity_id, entity_id=entity_id, entity_type=h["entity_type"], site_id=self.site,
                            first_seen=h["first_seen"], last_seen=h["last_seen"], appearance_count=len(apps),
                            cameras_seen=sorted(c.decode() for c in cams), appearances=appearances,
                            thumbnail_url=self._entity_thumbnail(entity_id, h), merged_ids=_sorted_ids(merged),
                            plates=entity_plates(h["entity_type"], appearances), **operator_fields(h))

    async def entity_names(self, entity_ids: list[str]) -> dict[str, str]:
        """The names operators gave these entities (those without one are left out), in one round trip."""
        if not entity_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for eid in entity_ids:
            pipe.hget(self.keys.entity(eid), "name")
        return {eid: n.decode() for eid, n in zip(entity_ids, await pipe.execute(), strict=True) if n is not None}

    async def image_ref(self, detection_id: str) -> dict[str, Any] | None:
        """Where a stored detection's crop can be cut again: {"bbox": [...], "path" or "url": ...}.

        None when the detection is unknown, expired or erased; {} when its image was sent inline (not kept).
        """
        raw = await self.redis.get(self.keys.marker(detection_id))
        if raw is None:
            return None
        return json.loads(raw).get("ref") or {}

    async def detection_vector(self, detection_id: str, dim: int) -> tuple[dict[str, Any], np.ndarray | None] | None:
        """A stored detection's match event and its vector (None if it is gone, e.g. evicted by the cap), or
        None when the detection is unknown, expired or erased. The vector is read in the event's model's space;
        DimensionMismatch when it does not have `dim` numbers."""
        raw = await self.redis.get(self.keys.marker(detection_id))
        if raw is None:
            return None
        event = json.loads(raw)["event"]
        model, etype = event["model"], event["entity_type"]
        pipe = self.redis.pipeline(transaction=False)
        # A named or trusted/untrusted entity's rows live in the kept hash instead of their day's.
        for day in (day_of(datetime.fromisoformat(event["timestamp"])), KEPT_DAY):
            pipe.hget(self.keys.vec_prefix(model, etype) + day, detection_id)
            pipe.hget(self.keys.meta_prefix(model, etype) + day, detection_id)
        vec, meta, kept_vec, kept_meta = await pipe.execute()
        if vec is None:
            vec, meta = kept_vec, kept_meta
        if vec is None:
            return event, None
        return event, stored_vector(vec, dim, json.loads(meta).get("d") if meta else None, model)

    async def attributes(self, rows: list[EntityEmbedding]) -> None:
        """Fill each row's attributes with those its detection came with, as its stored appearance holds them
        (they are not kept beside the vectors, which every reload reads whole)."""
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.hget(self.keys.appearances(row.entity_id or row.detection_id), row.detection_id)
        for row, raw in zip(rows, await pipe.execute() if rows else [], strict=True):
            given = json.loads(raw).get("attributes") if raw is not None else None
            row.attributes = given or None

    async def purge_entity(self, entity_id: str, by: str | None = None) -> dict[str, Any] | None:
        """Erase an entity (right to erasure): its appearances, its detections' markers and embeddings, its
        aliases and merged ids, and every mention of it in other detections' stored match events. An `erased`
        entity update (ids only) is queued in the same transaction, so that whoever keeps entities longer (the
        archive, through entity-updates) erases them too.

        An alias id erases the entity it was merged into: after a merge they are one person.
        Optimistic: WATCHed keys make the delete all-or-nothing against a writer adding an appearance or
        merging (both bump the version). Bumping the version makes the single writer drop its local copy.
        """
        for _ in range(20):
            target = await self.resolve(entity_id)
            if target is None:
                return None
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    plan = await plan_erasure(pipe, self.keys, target)
                    if plan is None:  # merged or erased between resolving and watching: resolve again
                        await pipe.unwatch()
                        continue
                    pipe.multi()
                    queue_erasure(pipe, self.keys, plan, self.site, self.settings.embedding_ttl_seconds, by)
                    await pipe.execute()
                except WatchError:
                    continue
            return {"entity_id": plan.entity_id, "entity_type": plan.etype,
                    "detections": [d for d, _ in plan.detections], "cameras": plan.cameras,
                    "merged_ids": plan.merged_ids, "resolved_from": entity_id if entity_id != target else None}
        raise RuntimeError(f"entity {entity_id} kept changing; purge gave up after 20 attempts")

    async def nearest(self, query_embedding: np.ndarray, entity_type: str, model: str, camera_id: str | None = None,
                      min_similarity: float | None = None, limit: int = 10,
                      exclude_detection_id: str | None = None) -> list[tuple[EntityEmbedding, float]]:
        """Stored embeddings of one type and model closest to the query, best first, at or above the
        threshold (the configured one when min_similarity is None); optionally of one camera only, and without
        one detection (who else looks like it). Each carries the attributes its detection came with.
        DimensionMismatch (a ValueError) when the query's length is not that of the model's stored vectors."""
        query = np.asarray(query_embedding, dtype=np.float32)
        if query.ndim != 1 or query.shape[0] == 0:
            raise ValueError(f"the query must be one vector of numbers, not an array of shape {query.shape}")
        _, index = await self.load_index(model, entity_type, dim=query.shape[0], ann=False)  # one query: exact
        index.expire(time.time() - self.settings.embedding_ttl_seconds)
        if exclude_detection_id is not None:
            index.remove([exclude_detection_id])
        threshold = self.settings.similarity_threshold if min_similarity is None else min_similarity
        found = index.search(query, limit, min_similarity=threshold, camera_id=camera_id)
        await self.attributes([row for row, _ in found])
        return found
