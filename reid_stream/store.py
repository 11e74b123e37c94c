"""Redis persistence of embeddings, entities and TTLs; the only module that talks to Redis."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from reid_stream.config import Settings
from reid_stream.events import ENTITY_TYPES, EntityAppearance, EntityDetail, EntitySummary, MatchEvent
from reid_stream.matching import Assignment, EntityEmbedding, VectorIndex

COMMIT_LUA = (Path(__file__).resolve().parent / "store.lua").read_text()


def stored_vector(raw: bytes, dim: int) -> np.ndarray:
    """A vector as stored, float32 or float16 (told apart by length), as float32."""
    if len(raw) == 2 * dim:
        vec = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)  # rounding moved it off the unit sphere
    return np.frombuffer(raw, dtype=np.float32)


@dataclass(frozen=True)
class Keys:
    """Every key name in one place. Embedding keys carry the model id, so vector spaces never mix."""

    prefix: str

    def version(self, model: str, etype: str) -> str:
        return f"{self.prefix}:ver:{model}:{etype}"

    def index(self, model: str, etype: str) -> str:
        return f"{self.prefix}:idx:{model}:{etype}"

    def vec_prefix(self, model: str, etype: str) -> str:
        # One hash of vectors per day (entity_embeddings:{date}), split by model and type.
        return f"{self.prefix}:entity_embeddings:{model}:{etype}:"

    def meta_prefix(self, model: str, etype: str) -> str:
        return f"{self.prefix}:entity_meta:{model}:{etype}:"

    def marker(self, detection_id: str) -> str:
        return f"{self.prefix}:det:{detection_id}"

    def entity(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}"

    def cameras(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:cams"

    def appearances(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:apps"

    def order(self, entity_id: str) -> str:
        return f"{self.prefix}:ent:{entity_id}:order"

    def by_type(self, etype: str) -> str:
        return f"{self.prefix}:entities:{etype}"

    def by_camera(self, etype: str, camera_id: str) -> str:
        return f"{self.prefix}:cam:{etype}:{camera_id}"


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


@dataclass(frozen=True)
class CommitResult:
    status: str  # ok | dup | conflict
    version: int | None = None
    evicted: tuple[str, ...] = ()
    marker: dict[str, Any] | None = None


def day_of(ts: datetime) -> str:
    """The UTC day a detection belongs to, which names its embedding keys."""
    return ts.astimezone(UTC).date().isoformat()


class ReidStore:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        # redis-py keeps the script's SHA and loads it again itself after a Redis restart (NOSCRIPT).
        self._commit_script = client.register_script(COMMIT_LUA)
        self._dtype = np.float16 if settings.vector_dtype == "float16" else np.float32

    @classmethod
    def from_settings(cls, settings: Settings) -> ReidStore:
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=15)
        return cls(client, settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- the writer side ----------------------------------------------------------------------

    async def version(self, model: str, etype: str) -> int:
        return int(await self.redis.get(self.keys.version(model, etype)) or 0)

    async def load_index(self, model: str, etype: str, dim: int, ann: bool = True) -> tuple[int, VectorIndex]:
        """A consistent snapshot: re-read until the version did not move during the read."""
        while True:
            before = await self.version(model, etype)
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
                        detection_id=det, entity_id=m["e"], entity_type=etype, camera_id=m["c"],
                        timestamp=datetime.fromisoformat(m["t"]), embedding=stored_vector(vec, dim),
                        model=model, stored_at=score, track_key=m.get("k", ""), quality=m.get("q", 1.0)))
            if await self.version(model, etype) == before:
                if ann:  # built once, in the background, from all rows
                    index.enable_ann(self.settings.ann_min_size)
                return before, index

    async def markers(self, detection_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not detection_ids:
            return {}
        raw = await self.redis.mget([self.keys.marker(d) for d in detection_ids])
        return {d: json.loads(r) for d, r in zip(detection_ids, raw, strict=True) if r is not None}

    def _commit_args(self, w: PlannedWrite, expected: int) -> tuple[list[str], list[Any]]:
        ev, k, s = w.event, self.keys, self.settings
        model, etype, det, eid = ev.model, ev.entity_type, ev.detection_id, ev.entity_id
        day = day_of(ev.timestamp)
        keys = [k.version(model, etype), k.index(model, etype), k.vec_prefix(model, etype) + day,
                k.meta_prefix(model, etype) + day, k.marker(det), k.entity(eid), k.cameras(eid),
                k.appearances(eid), k.order(eid), k.by_type(etype), k.by_camera(etype, ev.camera_id)]
        meta = json.dumps({"e": eid, "c": ev.camera_id, "t": ev.timestamp.isoformat(), "k": w.track_key,
                           "q": w.quality})
        marker = json.dumps({"fp": w.fingerprint, "event": ev.model_dump(mode="json"), "ref": w.image_ref})
        args = [expected, s.embedding_ttl_seconds, s.max_embeddings, det, f"{day}|{det}",
                np.ascontiguousarray(w.vector, dtype=self._dtype).tobytes(), meta, w.stored_at, marker, etype,
                ev.camera_id, ev.timestamp.timestamp(), ev.timestamp.isoformat(),
                w.appearance.model_dump_json(), k.vec_prefix(model, etype), k.meta_prefix(model, etype),
                model, eid]
        return keys, args

    async def commit(self, writes: list[PlannedWrite], expected_version: int) -> list[CommitResult]:
        """Run the commit script for each write in one round trip; versions expected in sequence."""
        if not writes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        # What `await script(client=pipe)` does per write, done once: the pipeline checks (SCRIPT EXISTS) and
        # loads its registered scripts before it runs, so NOSCRIPT after a Redis restart is redis-py's job.
        pipe.scripts.add(self._commit_script)
        for i, w in enumerate(writes):
            keys, args = self._commit_args(w, expected_version + i)
            pipe.evalsha(self._commit_script.sha, len(keys), *keys, *args)
        replies = await pipe.execute()
        out = []
        for reply in replies:
            status = reply[0].decode()
            if status == "ok":
                out.append(CommitResult("ok", int(reply[1]), tuple(r.decode() for r in reply[2])))
            elif status == "dup":
                out.append(CommitResult("dup", marker=json.loads(reply[1])))
            else:
                out.append(CommitResult("conflict", int(reply[1])))
        return out

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

    async def _summaries(self, entity_ids: list[str]) -> list[EntitySummary | None]:
        pipe = self.redis.pipeline(transaction=False)
        for eid in entity_ids:
            pipe.hgetall(self.keys.entity(eid))
            pipe.smembers(self.keys.cameras(eid))
            pipe.hlen(self.keys.appearances(eid))
        replies = await pipe.execute() if entity_ids else []
        out: list[EntitySummary | None] = []
        for i, eid in enumerate(entity_ids):
            h, cams, count = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            if not h:  # expired since the index was read
                out.append(None)
                continue
            h = {k.decode(): v.decode() for k, v in h.items()}
            out.append(EntitySummary(
                id=eid, entity_id=eid, entity_type=h["entity_type"], first_seen=h["first_seen"],
                last_seen=h["last_seen"], appearance_count=int(count), cameras_seen=sorted(c.decode() for c in cams),
                thumbnail_url=self._entity_thumbnail(eid, h)))
        return out

    def _entity_thumbnail(self, entity_id: str, h: dict[str, str]) -> str:
        """The latest appearance's thumbnail (its source is the least likely to be gone); entities stored
        before the latest one was recorded show their founding detection, whose id the entity carries."""
        return self.settings.thumbnail_url(h.get("last_cam", h.get("first_cam", "")),
                                           h.get("last_det", entity_id))

    async def get_entity(self, entity_id: str) -> EntityDetail | None:
        """One round trip: the entity, its cameras and its appearances in time order."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.entity(entity_id))
        pipe.smembers(k.cameras(entity_id))
        pipe.zrange(k.order(entity_id), 0, -1)
        pipe.hgetall(k.appearances(entity_id))
        h, cams, order, apps = await pipe.execute()
        if not h:
            return None
        h = {key.decode(): v.decode() for key, v in h.items()}
        appearances = [EntityAppearance.model_validate_json(apps[d]) for d in order if d in apps]
        for app in appearances:  # filled on read, so a changed REID_THUMBNAIL_URL_TEMPLATE applies at once
            app.thumbnail_url = self.settings.thumbnail_url(app.camera_id, app.detection_id)
        return EntityDetail(id=entity_id, entity_id=entity_id, entity_type=h["entity_type"],
                            first_seen=h["first_seen"], last_seen=h["last_seen"], appearance_count=len(apps),
                            cameras_seen=sorted(c.decode() for c in cams), appearances=appearances,
                            thumbnail_url=self._entity_thumbnail(entity_id, h))

    async def image_ref(self, detection_id: str) -> dict[str, Any] | None:
        """Where a stored detection's crop can be cut again: {"bbox": [...], "path" or "url": ...}.

        None when the detection is unknown, expired or erased; {} when its image was sent inline (not kept).
        """
        raw = await self.redis.get(self.keys.marker(detection_id))
        if raw is None:
            return None
        return json.loads(raw).get("ref") or {}

    async def purge_entity(self, entity_id: str) -> dict[str, Any] | None:
        """Erase an entity, its appearances, its detections' markers and its embeddings (right to erasure).

        Optimistic: WATCHed keys make the delete all-or-nothing against a writer adding an appearance.
        Bumping the version makes the single writer drop its local copy of the vectors.
        """
        k = self.keys
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(k.entity(entity_id), k.appearances(entity_id))
                    h = await pipe.hgetall(k.entity(entity_id))
                    if not h:
                        await pipe.unwatch()
                        return None
                    etype, model = h[b"entity_type"].decode(), h.get(b"model", b"").decode()
                    await pipe.watch(k.version(model, etype))
                    cams = [c.decode() for c in await pipe.smembers(k.cameras(entity_id))]
                    dets = [(d.decode(), ts) for d, ts in await pipe.zrange(k.order(entity_id), 0, -1,
                                                                             withscores=True)]
                    pipe.multi()
                    for det, ts in dets:
                        day = day_of(datetime.fromtimestamp(ts, UTC))
                        pipe.hdel(k.vec_prefix(model, etype) + day, det)
                        pipe.hdel(k.meta_prefix(model, etype) + day, det)
                        pipe.zrem(k.index(model, etype), f"{day}|{det}")
                        pipe.delete(k.marker(det))
                    pipe.delete(k.entity(entity_id), k.cameras(entity_id), k.appearances(entity_id),
                                k.order(entity_id))
                    pipe.zrem(k.by_type(etype), entity_id)
                    for cam in cams:
                        pipe.zrem(k.by_camera(etype, cam), entity_id)
                    pipe.incr(k.version(model, etype))
                    pipe.expire(k.version(model, etype), self.settings.embedding_ttl_seconds)
                    await pipe.execute()
                    return {"entity_id": entity_id, "entity_type": etype, "detections": [d for d, _ in dets],
                            "cameras": cams}
                except WatchError:
                    continue
        raise RuntimeError(f"entity {entity_id} kept changing; purge gave up after 20 attempts")

    async def nearest(self, query_embedding: np.ndarray, entity_type: str, model: str, camera_id: str | None = None,
                      min_similarity: float | None = None, limit: int = 10) -> list[tuple[EntityEmbedding, float]]:
        """Stored embeddings of one type and model closest to the query, best first, at or above the
        threshold (the configured one when min_similarity is None); optionally of one camera only."""
        query = np.asarray(query_embedding, dtype=np.float32)
        _, index = await self.load_index(model, entity_type, dim=query.shape[0], ann=False)  # one query: exact
        index.expire(time.time() - self.settings.embedding_ttl_seconds)
        threshold = self.settings.similarity_threshold if min_similarity is None else min_similarity
        return index.search(query, limit, min_similarity=threshold, camera_id=camera_id)
