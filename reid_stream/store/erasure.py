"""The right to erasure in Redis: what an entity leaves behind, read under WATCH and deleted in one MULTI.

`ReidStore.purge_entity` runs it; these functions plan it on the transaction's pipeline and queue it after MULTI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.client import Pipeline

from reid_stream.events import EntityUpdate
from reid_stream.store.keys import KEPT_DAY, PAIR_SEP, Keys, day_of


def others_named(entity_id: str, matches: Iterable[str], candidates: Iterable[str],
                  redecided_from: str | None) -> set[str]:
    """The entities other than its own that a match event names: in its matches, its candidates and its
    tracklet. Erasing one of them rewrites the event's stored copy."""
    names = {*matches, *candidates}
    if redecided_from:
        names.add(redecided_from)
    names.discard(entity_id)
    return names


def named_entities(event: Mapping[str, Any]) -> set[str]:
    """`others_named` of a stored match event (as JSON; events stored before candidates existed included)."""
    return others_named(event["entity_id"], (m["entity_id"] for m in event.get("matches") or ()),
                        (c["entity_id"] for c in event.get("candidates") or ()),
                        (event.get("tracklet") or {}).get("redecided_from"))


def scrub_event(event: dict[str, Any], entities: set[str], detections: set[str]) -> bool:
    """Drop every mention of erased entities and detections from a stored match event; True if it changed."""
    before_matches, before_candidates = event.get("matches") or [], event.get("candidates") or []
    matches = [m for m in before_matches if m["entity_id"] not in entities and m["detection_id"] not in detections]
    candidates = [c for c in before_candidates if c["entity_id"] not in entities]
    changed = len(matches) < len(before_matches) or len(candidates) < len(before_candidates)
    event["matches"] = matches
    if "candidates" in event:
        event["candidates"] = candidates
    tracklet = event.get("tracklet")
    if tracklet and tracklet.get("redecided_from") in entities:
        tracklet["redecided_from"] = None
        changed = True
    return changed


@dataclass
class Erasure:
    """What purge_entity read under WATCH and will delete or rewrite in one MULTI."""

    entity_id: str
    etype: str
    model: str
    cameras: list[str]
    detections: list[tuple[str, float]]  # (detection id, its time as epoch seconds)
    merged_ids: list[str]
    aliases: set[str] = field(default_factory=set)  # alias fields and keys to delete
    unref: dict[str, list[str]] = field(default_factory=dict)  # other entities' refs key -> its detections
    rewrites: dict[str, str] = field(default_factory=dict)  # other detections' marker key -> scrubbed json
    apart: list[str] = field(default_factory=list)  # cannot-link pairs naming it
    alert_fields: list[str] = field(default_factory=list)  # its rate-limit entries (watch id, camera)
    alerts: list[bytes] = field(default_factory=list)  # its alerts not yet published
    annotations: list[bytes] = field(default_factory=list)  # its `annotated` updates not yet published (names)
    pinned: list[str] = field(default_factory=list)  # its tracklets an operator's merge pinned ("camera|track")


def _sorted_ids(raw: Iterable[bytes]) -> list[str]:
    return sorted(r.decode() for r in raw)


async def plan_erasure(pipe: Pipeline, k: Keys, entity_id: str) -> Erasure | None:
    """Everything the erasure touches, read under WATCH (the pipeline answers at once until MULTI)."""
    await pipe.watch(k.entity(entity_id), k.appearances(entity_id), k.merged_ids(entity_id))
    h = await pipe.hgetall(k.entity(entity_id))
    if not h:
        return None
    etype, model = h[b"entity_type"].decode(), h.get(b"model", b"").decode()
    await pipe.watch(k.version(model, etype))
    plan = Erasure(
        entity_id, etype, model, cameras=[c.decode() for c in await pipe.smembers(k.cameras(entity_id))],
        detections=[(d.decode(), ts) for d, ts in await pipe.zrange(k.order(entity_id), 0, -1, withscores=True)],
        merged_ids=_sorted_ids(await pipe.smembers(k.merged_ids(entity_id))))
    erased = {entity_id, *plan.merged_ids}
    # Aliases naming it whose merged-ids set expired first would otherwise outlive it in the hash.
    aliases = await pipe.hgetall(k.aliases(model, etype))
    plan.aliases = set(plan.merged_ids) | {f.decode() for f, v in aliases.items() if v.decode() in erased}
    pairs = await pipe.zrange(k.apart(model, etype), 0, -1)
    plan.apart = [p.decode() for p in pairs if erased & set(p.decode().split(PAIR_SEP))]
    seen = await _seen_at(pipe, k, entity_id, plan.detections)
    await _plan_watch_traces(pipe, k, plan, erased, seen)
    # Its names waiting to be published go too; its other updates name ids only, as the `erased` update does.
    await pipe.watch(k.outbox(etype))
    plan.annotations = [u for u in await pipe.lrange(k.outbox(etype), 0, -1)
                        if (v := json.loads(u)).get("type") == "annotated" and v["survivor"] in erased]
    plan.pinned = await _plan_pinned(pipe, k, plan)
    await _plan_unref(pipe, k, plan, erased)
    await _plan_rewrites(pipe, k, plan, erased)
    return plan


async def _seen_at(pipe: Pipeline, k: Keys, entity_id: str,
                   detections: list[tuple[str, float]]) -> set[tuple[str, float]]:
    """(camera, time as epoch seconds) of each of its appearances."""
    apps = await pipe.hgetall(k.appearances(entity_id))
    times = dict(detections)
    return {(json.loads(raw)["camera_id"], times[det.decode()]) for det, raw in apps.items() if det.decode() in times}


async def _plan_watch_traces(pipe: Pipeline, k: Keys, plan: Erasure, erased: set[str],
                             seen: set[tuple[str, float]]) -> None:
    """Its alerts still waiting to be published, and the rate-limit entries that keep its watch ids or the camera
    and time of one of its detections (an enrolled image's alert it raised)."""
    etype = plan.etype
    await pipe.watch(k.alerts(etype), k.alert_last(etype))
    for field_name, at in (await pipe.hgetall(k.alert_last(etype))).items():
        watch_id, _, camera = field_name.decode().partition(PAIR_SEP)
        if watch_id in erased or (camera, float(at)) in seen:
            plan.alert_fields.append(field_name.decode())
    own = {d for d, _ in plan.detections}
    plan.alerts = [a for a in await pipe.lrange(k.alerts(etype), 0, -1)
                   if (v := json.loads(a))["entity_id"] in erased or v["detection_id"] in own]


async def _plan_pinned(pipe: Pipeline, k: Keys, plan: Erasure) -> list[str]:
    """The tracklets ("camera|track") of its rows that an operator's merge pinned."""
    model, etype = plan.model, plan.etype
    await pipe.watch(k.pinned(model, etype))
    by_day: dict[str, list[str]] = {}
    for det, ts in plan.detections:  # a row lives in its day's hash, or in the kept one
        by_day.setdefault(day_of(datetime.fromtimestamp(ts, UTC)), []).append(det)
    by_day[KEPT_DAY] = [d for d, _ in plan.detections]
    metas = [m for day, dets in by_day.items() if dets
             for m in await pipe.hmget(k.meta_prefix(model, etype) + day, dets)]
    tracks = {json.loads(m).get("k", "") for m in metas if m is not None} - {""}
    if not tracks:
        return []
    scores = await pipe.zmscore(k.pinned(model, etype), sorted(tracks))
    return [t for t, score in zip(sorted(tracks), scores, strict=True) if score is not None]


async def _plan_unref(pipe: Pipeline, k: Keys, plan: Erasure, erased: set[str]) -> None:
    """Its own detections leave the reference sets of the entities their events named."""
    own = [d for d, _ in plan.detections]
    raw = await pipe.mget([k.marker(d) for d in own]) if own else []
    for det, marker in zip(own, raw, strict=True):
        if marker is not None:
            for other in named_entities(json.loads(marker)["event"]) - erased:
                plan.unref.setdefault(k.refs(other), []).append(det)


async def _plan_rewrites(pipe: Pipeline, k: Keys, plan: Erasure, erased: set[str]) -> None:
    """Other detections whose stored event names it: their markers, scrubbed."""
    own = {d for d, _ in plan.detections}
    referrers = sorted({r.decode() for r in await pipe.sunion([k.refs(e) for e in erased])} - own)
    if not referrers:
        return
    marker_keys = [k.marker(d) for d in referrers]
    await pipe.watch(*marker_keys)  # an expiry in between aborts the MULTI, so KEEPTTL never revives one
    for key, raw in zip(marker_keys, await pipe.mget(marker_keys), strict=True):
        if raw is None:
            continue
        marker = json.loads(raw)
        if scrub_event(marker["event"], erased, own):
            plan.rewrites[key] = json.dumps(marker)


def queue_erasure(pipe: Pipeline, k: Keys, plan: Erasure, site: str, ttl: int, by: str | None) -> None:
    """The erasure, queued after MULTI: every key and row of the plan, an `erased` update, the version moved."""
    eid, model, etype = plan.entity_id, plan.model, plan.etype
    for det, ts in plan.detections:
        day = day_of(datetime.fromtimestamp(ts, UTC))
        pipe.hdel(k.vec_prefix(model, etype) + day, det)
        pipe.hdel(k.meta_prefix(model, etype) + day, det)
        pipe.zrem(k.index(model, etype), f"{day}|{det}")
        # A retained entity's rows live under the pseudo-day (see corrections.py).
        pipe.hdel(k.vec_prefix(model, etype) + KEPT_DAY, det)
        pipe.hdel(k.meta_prefix(model, etype) + KEPT_DAY, det)
        pipe.zrem(k.index(model, etype), f"{KEPT_DAY}|{det}")
        pipe.delete(k.marker(det))
    pipe.delete(k.entity(eid), k.cameras(eid), k.appearances(eid), k.order(eid), k.merged_ids(eid),
                *(k.refs(e) for e in (eid, *plan.merged_ids)))
    pipe.zrem(k.by_type(etype), eid)
    for cam in plan.cameras:
        pipe.zrem(k.by_camera(etype, cam), eid)
    if plan.aliases:
        pipe.delete(*(k.alias(a) for a in plan.aliases))
        pipe.hdel(k.aliases(model, etype), *plan.aliases)
    # Its name, notes and trust went with its hash; the name index and the cannot-link pairs naming it go too.
    pipe.hdel(k.named(etype), eid, *plan.merged_ids)
    if plan.apart:
        pipe.zrem(k.apart(model, etype), *plan.apart)
    if plan.alert_fields:
        pipe.hdel(k.alert_last(etype), *plan.alert_fields)
    for alert in plan.alerts:
        pipe.lrem(k.alerts(etype), 0, alert)
    for annotation in plan.annotations:
        pipe.lrem(k.outbox(etype), 0, annotation)
    if plan.pinned:
        pipe.zrem(k.pinned(model, etype), *plan.pinned)
    for refs_key, dets in plan.unref.items():
        pipe.srem(refs_key, *dets)
    for marker_key, marker in plan.rewrites.items():
        pipe.set(marker_key, marker, keepttl=True)
    update = EntityUpdate(type="erased", survivor=eid, entity_type=etype, site_id=site, at=datetime.now(UTC),
                          by=by, erased_ids=plan.merged_ids or None, detections=[d for d, _ in plan.detections])
    pipe.rpush(k.outbox(etype), update.model_dump_json())
    pipe.expire(k.outbox(etype), ttl, nx=True)  # a new list; an older one only ever lives longer
    pipe.expire(k.outbox(etype), ttl, gt=True)
    pipe.incr(k.version(model, etype))
    pipe.expire(k.version(model, etype), ttl)
