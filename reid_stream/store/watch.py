"""The watch list: entities an operator watches, and images enrolled as looks to watch for.

A watched entity is an operator field like a name (set through corrections.py, kept as long as a named one);
an enrolment is a vector and a label per (model, type), its image never kept. The assign stage reads both with
its other state (a change moves the type's version, so it reloads) and raises an alert, written with the
detection in the same script (store.lua), when a detection joins a watched entity or looks like an enrolment.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from reid_stream.errors import ApiError
from reid_stream.events import DEFAULT_SITE, ENTITY_TYPES, WatchAlert, WatchEntry, hidden_character
from reid_stream.store.corrections import Corrections, Named
from reid_stream.store.reid_store import ReidStore

ENROLMENT_PREFIX = "enrol-"
ALERT_DIGITS = 6
MAX_LABEL = 256


def check_label(label: str | None) -> str:
    # Checked before the strip: strip() would quietly drop a trailing line separator instead of refusing it.
    if label is not None and (found := hidden_character(label)) is not None:
        raise WatchError(422, "invalid_label", f"?label= holds {found}: invisible and bidi control characters can "
                         "make a label show as something else")
    label = (label or "").strip()
    if not 0 < len(label) <= MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise WatchError(422, "invalid_label", f"give ?label= with 1 to {MAX_LABEL} characters and no control "
                         "characters: what the alerts will say")
    return label


def check_type(etype: str | None) -> str:
    if etype is None:
        return "person"
    if etype not in ENTITY_TYPES:
        raise WatchError(422, "invalid_entity_type", f"entity_type must be one of {', '.join(ENTITY_TYPES)}")
    return etype


class WatchError(ApiError):
    """A watch list request that cannot be done."""


@dataclass(frozen=True)
class Enrolments:
    """One (model, type)'s enrolled looks, as the assign stage compares them: unit rows of a matrix."""

    ids: list[str]
    labels: list[str]
    matrix: np.ndarray  # n x dim

    @classmethod
    def empty(cls, dim: int) -> Enrolments:
        return cls([], [], np.zeros((0, dim), dtype=np.float32))

    def best(self, vectors: np.ndarray, threshold: float) -> list[tuple[int, float] | None]:
        """Per vector, the enrolment it looks most like at or above the threshold (its row and score)."""
        if not self.ids:
            return [None] * len(vectors)
        scores = vectors @ self.matrix.T
        rows = scores.argmax(axis=1)
        return [(int(r), float(scores[i, r])) if scores[i, r] >= threshold else None for i, r in enumerate(rows)]


def alert_messages(topic: str, raw: list[bytes]) -> list[tuple[str, bytes | None, bytes]]:
    """Outbox entries as entity-alerts messages: published as stored, keyed by the entity."""
    return [(topic, WatchAlert.model_validate_json(r).entity_id.encode(), r) for r in raw]


def alert_for(named: Named | None, enrolled: tuple[str, str, float] | None, *, detection_id: str, entity_id: str,
              is_new: bool, similarity: float, entity_type: str, camera_id: str, camera_name: str | None,
              timestamp: datetime, model: str, now: datetime, site_id: str = DEFAULT_SITE) -> WatchAlert | None:
    """At most one alert per detection: joining a watched entity first (an operator named exactly whom), else
    looking like an enrolled image (watch id, label, score)."""
    if named is not None and named.watch and not is_new:
        watch_id, kind, label, score = entity_id, "entity", named.watch, similarity
    elif enrolled is not None:
        watch_id, label, score = enrolled
        kind = "image"
    else:
        return None
    return WatchAlert(alert_id=f"{detection_id}/{watch_id}", watch_id=watch_id, kind=kind, label=label,
                      entity_id=entity_id, entity_type=entity_type, site_id=site_id,
                      entity_name=named.name if named else None,
                      detection_id=detection_id, camera_id=camera_id, camera_name=camera_name, timestamp=timestamp,
                      similarity=round(score, ALERT_DIGITS), model=model, raised_at=now)


class Watchlist:
    def __init__(self, store: ReidStore, corrections: Corrections) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.settings = store.settings
        self.corrections = corrections

    @property
    def retention(self) -> int:
        """An enrolment lasts as long as a named entity: it is there to recognise somebody who comes back."""
        return max(self.settings.named_retention_seconds, self.settings.embedding_ttl_seconds)

    async def watch_entity(self, entity_id: str, label: str, by: str | None = None) -> WatchEntry:
        target = await self.corrections.annotate(entity_id, {"watch": label}, by)
        entry = await self._entity_entry(target)
        if entry is None:  # erased in between
            raise WatchError(404, "entity_not_found", f"Entity with id '{entity_id}' not found")
        return entry

    async def enrol(self, model: str, etype: str, vector: np.ndarray, label: str, by: str | None) -> WatchEntry:
        """Store the look and move the type's version, so the assign stage reloads and compares it from now."""
        k, now = self.keys, time.time()
        enrol_id = f"{ENROLMENT_PREFIX}{uuid.uuid4().hex[:16]}"
        until = now + self.retention
        meta = {"label": label, "by": by, "at": now, "until": until}
        pipe = self.redis.pipeline(transaction=True)
        for key, value in ((k.enrolments(model, etype), json.dumps(meta)),
                           (k.enrolment_vectors(model, etype), np.asarray(vector, dtype=np.float32).tobytes())):
            pipe.hset(key, enrol_id, value)
            pipe.expire(key, self.retention, nx=True)  # a new hash; then only ever longer
            pipe.expire(key, self.retention, gt=True)
        pipe.incr(k.version(model, etype))
        pipe.expire(k.version(model, etype), self.settings.embedding_ttl_seconds)
        await pipe.execute()
        return _enrolment_entry(enrol_id, etype, model, meta, self.store.site)

    async def enrolments(self, model: str, etype: str, dim: int) -> Enrolments:
        """The live enrolments of a (model, type) whose vectors have this dimension."""
        k, now = self.keys, time.time()
        metas = await self.redis.hgetall(k.enrolments(model, etype))
        if not metas:
            return Enrolments.empty(dim)
        vecs = await self.redis.hgetall(k.enrolment_vectors(model, etype))
        ids, labels, rows = [], [], []
        for eid, raw in sorted(metas.items()):
            meta, vec = json.loads(raw), vecs.get(eid)
            # Enrolments are stored as float32: another length is another dimension, never a float16 reading.
            if meta["until"] > now and vec is not None and len(vec) == 4 * dim:
                ids.append(eid.decode())
                labels.append(meta["label"])
                rows.append(np.frombuffer(vec, dtype=np.float32))
        if not ids:
            return Enrolments.empty(dim)
        return Enrolments(ids, labels, np.stack(rows))

    async def entries(self, model: str) -> list[WatchEntry]:
        """Every entry: watched entities of each type, then this model's enrolments; newest enrolments first."""
        out: list[WatchEntry] = []
        for etype in ENTITY_TYPES:
            for eid, named in sorted((await self.corrections.names(etype)).items()):
                if named.watch and (entry := await self._entity_entry(eid)) is not None:
                    out.append(entry)
        now = time.time()
        for etype in ENTITY_TYPES:
            metas = await self.redis.hgetall(self.keys.enrolments(model, etype))
            enrolled = [_enrolment_entry(i.decode(), etype, model, m, self.store.site) for i, raw in metas.items()
                        if (m := json.loads(raw))["until"] > now]
            out += sorted(enrolled, key=lambda e: e.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return out

    async def remove(self, model: str, watch_id: str) -> WatchEntry:
        """An enrolment is deleted; a watched entity is unwatched (the entity stays). 404 when neither."""
        k = self.keys
        for etype in ENTITY_TYPES:
            raw = await self.redis.hget(k.enrolments(model, etype), watch_id)
            if raw is None:
                continue
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(k.enrolments(model, etype), watch_id)
            pipe.hdel(k.enrolment_vectors(model, etype), watch_id)
            pipe.incr(k.version(model, etype))
            pipe.expire(k.version(model, etype), self.settings.embedding_ttl_seconds)
            await pipe.execute()
            return _enrolment_entry(watch_id, etype, model, json.loads(raw), self.store.site)
        entry = await self._entity_entry(watch_id, resolve=True)
        if entry is None:
            raise WatchError(404, "watch_not_found", f"'{watch_id}' is neither an enrolment nor a watched entity")
        await self.corrections.annotate(entry.watch_id, {"watch": None})
        return entry

    async def _entity_entry(self, entity_id: str, resolve: bool = False) -> WatchEntry | None:
        target = await self.store.resolve(entity_id) if resolve else entity_id
        h = await self.redis.hgetall(self.keys.entity(target)) if target else {}
        d = {key.decode(): v.decode() for key, v in h.items()}
        if not d.get("watch") or target is None:
            return None
        until, at = float(d.get("keep_until", 0) or 0), float(d.get("watch_at", 0) or 0)
        return WatchEntry(watch_id=target, kind="entity", label=d["watch"], entity_type=d["entity_type"],
                          site_id=self.store.site,
                          entity_id=target, created_at=datetime.fromtimestamp(at, UTC) if at else None,
                          by=d.get("watch_by"), retained_until=datetime.fromtimestamp(until, UTC) if until else None)


def _enrolment_entry(enrol_id: str, etype: str, model: str, meta: dict[str, Any], site: str) -> WatchEntry:
    return WatchEntry(watch_id=enrol_id, kind="image", label=meta["label"], entity_type=etype, site_id=site,
                      model=model,
                      created_at=datetime.fromtimestamp(meta["at"], UTC), by=meta.get("by"),
                      retained_until=datetime.fromtimestamp(meta["until"], UTC))
