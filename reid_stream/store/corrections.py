"""The operator's corrections in Redis: names, trust and watching (with their retention), merges and splits.

Every correction is a compare-and-set on the (model, type) version, like the single writer's own commits: it
either lands on exactly the state it read or is retried on the new one, and moving the version makes the assign
stage reload before its next commit (its commit against the old version fails with 'conflict'), so a
correction and the stream never interleave, and no appearance is lost or counted twice.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reid_stream.errors import ApiError
from reid_stream.events import Annotation, EntityUpdate
from reid_stream.identity.gallery import plates_conflict
from reid_stream.store.erasure import named_entities
from reid_stream.store.keys import KEPT_DAY, PAIR_SEP, day_of
from reid_stream.store.reid_store import ReidStore, lua_script, pair_member, resolve_alias

log = logging.getLogger(__name__)
RETAIN_LUA = lua_script("retain.lua")
SPLIT_LUA = lua_script("split.lua")
MAX_ATTEMPTS = 50  # each attempt loses only to a commit that landed in between: a few at most under load


class CorrectionError(ApiError):
    """A correction that cannot be made."""


OPERATOR_FIELDS = ("name", "notes", "trust", "watch", "watch_by", "watch_at")


@dataclass(frozen=True)
class Named:
    """What the assign stage knows of an entity an operator touched: its match events' name and trust, and the
    watch list label its appearances raise alerts under."""

    name: str | None
    trust: str | None
    watch: str | None = None


def update_messages(topic: str, raw: list[bytes]) -> list[tuple[str, bytes | None, bytes]]:
    """Outbox entries as entity-updates messages: published as stored, keyed by the entity that remains."""
    return [(topic, EntityUpdate.model_validate_json(r).survivor.encode(), r) for r in raw]


def _days(rows: list[tuple[bytes, float]]) -> list[str]:
    """(detection, day) pairs, flat, for a script's arguments: the day names the hash of its embedding."""
    out: list[str] = []
    for det, ts in rows:
        out += [det.decode(), day_of(datetime.fromtimestamp(ts, UTC))]
    return out


class Corrections:
    def __init__(self, store: ReidStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.settings = store.settings
        self._retain = self.redis.register_script(RETAIN_LUA)
        self._split = self.redis.register_script(SPLIT_LUA)

    def retention(self, fields: dict[str, Any]) -> int:
        """Seconds a named, trusted/untrusted or watched entity is kept from its latest change or appearance; 0
        for the others, which live by the embedding TTL. Untrusted and watched count too: marking somebody so is
        precisely so as to recognise them when they come back."""
        if fields.get("name") or fields.get("watch") or fields.get("trust") in ("trusted", "untrusted"):
            return max(self.settings.named_retention_seconds, self.settings.embedding_ttl_seconds + 1)
        return 0

    async def _entity(self, entity_id: str) -> tuple[str, dict[str, str]]:
        """The live entity an id names and its hash (decoded); 404 when unknown, expired or erased."""
        target = await self.store.resolve(entity_id)
        h = await self.redis.hgetall(self.keys.entity(target)) if target else {}
        if not target or not h:
            raise CorrectionError(404, "entity_not_found", f"Entity with id '{entity_id}' not found")
        return target, {k.decode(): v.decode() for k, v in h.items()}

    # --- names and trust ----------------------------------------------------------------------

    async def annotate(self, entity_id: str, patch: dict[str, Any], by: str | None = None) -> str:
        """Set name, notes, trust and/or watch (a key given as null clears it); returns the live entity's id.
        A watch label changed or cleared records who did it and when (the watch list shows them). A change (an
        empty patch only refreshes the retention) is queued as an `annotated` update for entity-updates."""
        for _attempt in range(MAX_ATTEMPTS):
            target, h = await self._entity(entity_id)
            fields = {f: h.get(f) for f in OPERATOR_FIELDS}
            fields.update(patch)
            if "watch" in patch and patch["watch"] != h.get("watch"):
                watched = patch["watch"] is not None
                fields["watch_by"] = by if watched else None
                fields["watch_at"] = repr(time.time()) if watched else None
            if fields.get("trust") == "unknown":
                fields["trust"] = None  # the default: stored as absent
            update = EntityUpdate(
                type="annotated", survivor=target, entity_type=h["entity_type"], site_id=self.store.site,
                at=datetime.now(UTC), by=by,
                annotation=Annotation(**{f: fields.get(f) for f in ("name", "notes", "trust", "watch")})) \
                if patch else None
            status = await self._apply(target, h, fields, update)
            if status == "ok":
                return target
            log.info("annotating %s: the stream moved the version; retrying", target)
        raise CorrectionError(503, "correction_conflict", "the stream kept changing the entity; retry")

    async def _apply(self, target: str, h: dict[str, str], fields: dict[str, Any],
                     update: EntityUpdate | None) -> str:
        model, etype, k = h.get("model", ""), h["entity_type"], self.keys
        version = await self.store.version(model, etype)
        rows = await self.redis.zrange(k.order(target), 0, -1, withscores=True)
        retention = self.retention(fields)
        entry = json.dumps({"name": fields.get("name"), "trust": fields.get("trust"), "watch": fields.get("watch")}) \
            if fields.get("name") or fields.get("trust") or fields.get("watch") else ""
        keys = [k.version(model, etype), k.entity(target), k.order(target), k.index(model, etype), k.named(etype),
                k.by_type(etype), k.outbox(etype)]
        args = [version, self.settings.embedding_ttl_seconds, retention, time.time(), self.keys.prefix,
                model, etype, target, json.dumps(fields), entry, update.model_dump_json() if update else "",
                *_days(rows)]
        status, _ = await self._retain(keys=keys, args=args)
        if status.decode() == "gone":
            raise CorrectionError(404, "entity_not_found", f"Entity with id '{target}' not found")
        return status.decode()

    async def names(self, etype: str) -> dict[str, Named]:
        """Every named or trusted entity of a type: what the assign stage puts in match events."""
        raw = await self.redis.hgetall(self.keys.named(etype))
        out = {}
        for eid, entry in raw.items():
            v = json.loads(entry)
            out[eid.decode()] = Named(v.get("name"), v.get("trust"), v.get("watch"))
        return out

    async def _track_keys(self, model: str, etype: str, entity_ids: list[str]) -> list[str]:
        """The tracklets of these entities' stored rows (read before a compare-and-set that checks them)."""
        k = self.keys
        dets: list[tuple[bytes, float]] = []
        for eid in entity_ids:
            dets += await self.redis.zrange(k.order(eid), 0, -1, withscores=True)
        pairs = _days(dets)
        pipe = self.redis.pipeline(transaction=False)
        for det, day in zip(pairs[::2], pairs[1::2], strict=True):
            pipe.hget(k.meta_prefix(model, etype) + day, det)
            pipe.hget(k.meta_prefix(model, etype) + KEPT_DAY, det)
        metas = await pipe.execute() if dets else []
        return sorted({json.loads(m).get("k", "") for m in metas if m is not None} - {""})

    async def pinned(self, model: str, etype: str) -> set[str]:
        """Tracklets an operator's merge confirmed, still in force."""
        return {m.decode() for m in await self.redis.zrangebyscore(self.keys.pinned(model, etype), time.time(),
                                                                    "+inf")}

    async def apart(self, model: str, etype: str) -> set[frozenset[str]]:
        """Cannot-link pairs still in force, with ids resolved through merges since (a pair outlives an
        automatic merge of either side into a third entity)."""
        k = self.keys
        pairs = await self.redis.zrangebyscore(k.apart(model, etype), time.time(), "+inf")
        if not pairs:
            return set()
        aliases = {a.decode(): b.decode() for a, b in (await self.redis.hgetall(k.aliases(model, etype))).items()}
        out = set()
        for p in pairs:
            a, _, b = p.decode().partition(PAIR_SEP)
            ra, rb = resolve_alias(aliases, a), resolve_alias(aliases, b)
            if ra != rb:
                out.add(frozenset((ra, rb)))
        return out

    # --- merge and split ----------------------------------------------------------------------

    async def merge(self, entity_id: str, other_id: str, by: str | None) -> EntityUpdate:
        """Merge `other_id` into `entity_id` (which survives), unless an operator split them apart."""
        for _attempt in range(MAX_ATTEMPTS):
            survivor, h = await self._entity(entity_id)
            merged, h2 = await self._entity(other_id)
            if survivor == merged:
                raise CorrectionError(409, "same_entity", f"'{entity_id}' and '{other_id}' are already one entity "
                                      f"('{survivor}')")
            model, etype = h.get("model", ""), h["entity_type"]
            if (h2.get("model", ""), h2["entity_type"]) != (model, etype):
                raise CorrectionError(409, "entity_type_mismatch", f"'{survivor}' is a {etype} and '{merged}' a "
                                      f"{h2['entity_type']} (or their embeddings are of different models)")
            at = datetime.now(UTC)
            version = await self.store.version(model, etype)
            # Read after the version: a plate stored in between moves it, and the merge is tried again.
            if plates_conflict(await self.store.plates(model, etype, survivor),
                               await self.store.plates(model, etype, merged)):
                raise CorrectionError(409, "plate_conflict", f"'{survivor}' and '{merged}' carry different licence "
                                      "plates; split off or erase the appearances that are wrong first")
            pinned = await self._track_keys(model, etype, [survivor, merged])
            res = await self.store.merge(model, etype, survivor, merged, None, version, at, by=by, pinned=pinned)
            if res.status == "apart":
                raise CorrectionError(409, "entities_split_apart", f"'{survivor}' and '{merged}' were split apart "
                                      "by an operator; erase or wait for the pair's retention to end")
            if res.status == "ok":
                if self.retention(h) or self.retention(h2):  # the merged rows are kept as long as the survivor
                    await self.annotate(survivor, {})
                return EntityUpdate(type="merged", survivor=survivor, merged=merged, entity_type=etype,
                                    site_id=self.store.site, similarity=None, at=at, by=by)
            log.info("merging %s into %s: %s; retrying", merged, survivor, res.status)
        raise CorrectionError(503, "correction_conflict", "the stream kept changing the entities; retry")

    async def _moved_markers(self, detection_ids: list[str], created: str) -> dict[str, tuple[str, str]]:
        """Per detection a split moves: its stored match event rewritten to name the new entity (without the name
        and trust of the one it leaves), and the other entities that event names, joined by PAIR_SEP. A
        redelivery publishes the event as it now is, and erasing the entity it left scrubs it (erasure.py).
        Read before the split script, which stores them only if the version did not move meanwhile."""
        raw = await self.redis.mget([self.keys.marker(d) for d in detection_ids])
        out: dict[str, tuple[str, str]] = {}
        for det, found in zip(detection_ids, raw, strict=True):
            if found is None:
                out[det] = ("", "")
                continue
            marker = json.loads(found)
            event = marker["event"]
            event.update(entity_id=created, entity_name=None, trust=None)
            out[det] = (json.dumps(marker), PAIR_SEP.join(sorted(named_entities(event))))
        return out

    async def split(self, entity_id: str, detection_ids: list[str], by: str | None) -> EntityUpdate:
        """Move the detections into a new entity (a random id: the first detection's id, the convention for
        new entities, may be the source's own id or an alias of an entity merged into it)."""
        if len(set(detection_ids)) != len(detection_ids):
            raise CorrectionError(422, "duplicate_detections", "detection_ids lists a detection twice")
        created = f"split-{uuid.uuid4().hex[:16]}"
        for _attempt in range(MAX_ATTEMPTS):
            source, h = await self._entity(entity_id)
            model, etype, k = h.get("model", ""), h["entity_type"], self.keys
            version = await self.store.version(model, etype)
            scores = await self.redis.zmscore(k.order(source), detection_ids)
            missing = [d for d, s in zip(detection_ids, scores, strict=True) if s is None]
            if missing:
                raise CorrectionError(422, "detection_not_in_entity", f"not appearances of entity '{source}': "
                                      f"{', '.join(missing[:10])}")
            at = datetime.now(UTC)
            update = EntityUpdate(type="split", survivor=source, created=created, detections=detection_ids,
                                  entity_type=etype, site_id=self.store.site, at=at, by=by)
            keys = [k.version(model, etype), k.index(model, etype), k.by_type(etype), k.apart(model, etype),
                    k.outbox(etype)]
            days = _days([(d.encode(), s) for d, s in zip(detection_ids, scores, strict=True)])
            moved = await self._moved_markers(detection_ids, created)
            args = [version, self.settings.embedding_ttl_seconds, time.time(), self.keys.prefix, model,
                    etype, source, created, update.model_dump_json(), pair_member(source, created),
                    *(x for det, day in zip(days[::2], days[1::2], strict=True) for x in (det, day, *moved[det]))]
            status, detail = await self._split(keys=keys, args=args)
            status = status.decode()
            if status == "ok":
                return update
            log.info("splitting %s: %s; retrying", source, status)
            if status == "all":
                raise CorrectionError(422, "split_takes_everything", "a split must leave the entity at least one "
                                      "appearance (to rename it, use PATCH)")
            if status == "taken":
                created = f"split-{uuid.uuid4().hex[:16]}"
            elif status == "not_member":  # moved by a concurrent correction between the read and the script
                raise CorrectionError(422, "detection_not_in_entity",
                                      f"not an appearance of entity '{source}': {detail.decode()}")
        raise CorrectionError(503, "correction_conflict", "the stream kept changing the entities; retry")
