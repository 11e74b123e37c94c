"""The demo producer: replays a synthetic multi-camera site (`reid-stream synth`) into Kafka as an NVR would,
prints every match event with its similarity and how well the entities match the true people; then the site
learns its similarity space from what the worker stored (never the true ids), and a second visit of the same
people shows the cross-camera joins it now makes, right or WRONG."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from reid_stream.config import Settings
from reid_stream.eval.metrics import clustering_metrics
from reid_stream.eval.replay import scored_id
from reid_stream.eval.synth import stream_file

SPEEDUP = 20.0  # the site's minutes play in seconds, in the recorded order


def site_detections(site: Path, run: str, session: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The site's stream as NVR events (fresh ids, timestamps moved to now) and the true id of each."""
    path = stream_file(site, session)
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    if not lines:
        raise ValueError(f"{path} holds no detections")
    t0 = datetime.fromisoformat(lines[0]["timestamp"])
    start = datetime.now(UTC) - (datetime.fromisoformat(lines[-1]["timestamp"]) - t0)
    events, truth = [], {}
    for raw in lines:
        det_id = f"{run}-{raw['detection_id']}"
        truth[det_id] = raw["true_id"]
        cam = raw["camera_id"]
        events.append({
            "detection_id": det_id, "camera_id": cam, "camera_name": f"Camera {cam.rpartition('-')[2]}",
            "entity_type": raw["entity_type"], "bbox": raw["bbox"], "image_path": raw["image_path"],
            "track_id": f"{run}-{raw['track_id']}" if raw.get("track_id") else None,
            "timestamp": (start + (datetime.fromisoformat(raw["timestamp"]) - t0)).isoformat(),
        })
    return events, truth


def describe_update(ev: dict[str, Any]) -> str:
    """One line per entity update: the stream's merges with their similarity, an operator's corrections with who."""
    who = f" by {ev['by']}" if ev.get("by") else ""
    if ev.get("type") == "split":
        return f"{len(ev.get('detections') or [])} detections split from {ev['survivor']} into {ev['created']}{who}"
    if ev.get("type") == "annotated":
        return f"{ev['survivor']} annotated{who}"
    if ev.get("type") == "erased":
        return f"{ev['survivor']} erased{who}"
    sim = f" (similarity {ev['similarity']:.3f})" if ev.get("similarity") is not None else ""
    return f"{ev['merged']} merged into {ev['survivor']}{sim}{who}"

async def _produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        previous = None
        for ev in events:
            when = datetime.fromisoformat(ev["timestamp"])
            if previous is not None and when > previous:  # paced like the site, SPEEDUP times faster
                await asyncio.sleep(min(1.0, (when - previous).total_seconds() / SPEEDUP))
            previous = when
            await producer.send(settings.topic_detections, json.dumps(ev).encode(), key=ev["camera_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def _line(ev: dict[str, Any], truth: dict[str, Any]) -> str:
    """One match event; an entity is named after the detection that founded it, so whom it was founded by
    tells whether a join was right."""
    person = truth[ev["detection_id"]]
    who = "junk box" if person == 0 else f"person {person:>3}"
    refused = sum(c.get("refused") is not None for c in ev.get("candidates", []))
    notes = (" [ambiguous]" if ev.get("ambiguous") else "") + (f" [{refused} refused: space-time]" if refused else "")
    decision = ev.get("decision", "new" if ev["is_new_entity"] else "joined")
    if ev["is_new_entity"]:
        return f"  {ev['timestamp'][11:19]} {ev['camera_id']:6} {who}  NEW entity{notes}"
    # Entities outlive a demo run (their TTL): a rerun's detections may join an earlier run's entity,
    # named `<earlier run>-<site detection>`, so the founder is looked up by the site's detection id.
    run, _, site_det = ev["entity_id"].partition("-")
    founder = truth.get(f"{ev['detection_id'].partition('-')[0]}-{site_det}")
    right = "right" if founder == person else "WRONG: founded by " + (
        "a junk box" if founder == 0 else f"person {founder}")
    earlier = "" if ev["entity_id"] in truth else f" (an entity of the earlier run {run})"
    name = ev["entity_id"].rpartition("-")[2] + earlier
    score = next((c["similarity"] for c in ev.get("candidates", []) if c["entity_id"] == ev["entity_id"]),
                 ev["matches"][0]["similarity"] if ev["matches"] else float("nan"))
    verb = {"tracklet": "follows its tracklet in", "merged": "tracklet recognised: merged into",
            "plate": "joins, by its licence plate,"}.get(decision, "joins")
    return (f"  {ev['timestamp'][11:19]} {ev['camera_id']:6} {who}  {verb} {name} (similarity {score:.3f})  "
            f"{right}{notes}")


async def visit(settings: Settings, site: Path, run: str, session: int, wait_seconds: float,
                truth: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], int]:
    """Stream one session of the site; its match events by detection, the merges seen, and how many were sent."""
    events, found = site_detections(site, run, session)
    truth.update(found)
    consumer = AIOKafkaConsumer(settings.topic_matches, settings.topic_updates,
                                bootstrap_servers=settings.kafka_bootstrap, group_id=f"reid-demo-{run}-{session}",
                                auto_offset_reset="latest")
    await consumer.start()
    entity_of: dict[str, str] = {}
    merged_into: dict[str, str] = {}
    try:
        while not consumer.assignment():  # wait for the group join, so no match event is missed
            await asyncio.sleep(0.1)
        await consumer.seek_to_end()
        print(f"streaming {len(events)} detections of {len(set(found.values()) - {0})} people from "
              f"{len({e['camera_id'] for e in events})} cameras ({stream_file(site, session)}) to "
              f"'{settings.topic_detections}'")
        producing = asyncio.create_task(_produce(settings, events))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds + len(events) / 10
        while len(entity_of) < len(events) and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    ev = json.loads(rec.value)
                    if rec.topic == settings.topic_updates:
                        print(f"  -- entity-updates: {describe_update(ev)}")
                        if ev.get("type", "merged") == "merged":
                            merged_into[ev["merged"]] = ev["survivor"]
                        continue
                    det = ev["detection_id"]
                    if det not in found or det in entity_of:
                        continue
                    entity_of[det] = ev["entity_id"]
                    print(_line(ev, truth) + (f"  [space v{ev['space_version']}]" if ev.get("space_version") else ""))
        await producing
    finally:
        await consumer.stop()
    print(f"\nreceived {len(entity_of)}/{len(events)} match events from '{settings.topic_matches}'")
    return entity_of, merged_into, len(events)


def _quality(label: str, entity_of: dict[str, str], merged_into: dict[str, str], truth: dict[str, Any]) -> None:
    def resolved(entity: str) -> str:  # a merged entity's detections now belong to the survivor
        while entity in merged_into:
            entity = merged_into[entity]
        return entity

    done = [d for d in truth if d in entity_of]
    if not done:
        return
    q = clustering_metrics([scored_id(truth[d], d) for d in done], [resolved(entity_of[d]) for d in done])
    people = len({truth[d] for d in done} - {0})
    print(f"quality ({label}): {people} people (and {sum(truth[d] == 0 for d in done)} junk boxes) became "
          f"{q.num_predicted} entities; pairwise precision {q.pairwise_precision:.3f}, recall "
          f"{q.pairwise_recall:.3f}, F1 {q.pairwise_f1:.3f}; false merges {q.false_merge_rate:.1%} of same-entity "
          f"pairs; {q.fragmentation:.2f} entities per person")


def _cross_camera(entity_of: dict[str, str], merged_into: dict[str, str], truth: dict[str, Any],
                  camera_of: dict[str, str]) -> None:
    """The second visit's entities that span cameras: each one RIGHT (one person) or WRONG (several)."""
    def resolved(entity: str) -> str:
        while entity in merged_into:
            entity = merged_into[entity]
        return entity

    spans: dict[str, tuple[set[str], set[Any]]] = {}
    for det, ent in entity_of.items():
        cams, people = spans.setdefault(resolved(ent), (set(), set()))
        cams.add(camera_of[det])
        people.add(truth[det])
    joins = {e: v for e, v in spans.items() if len(v[0]) > 1}
    print(f"\ncross-camera entities in the second visit: {len(joins)}")
    for ent, (cams, people) in sorted(joins.items()):
        verdict = "RIGHT" if len(people) == 1 and 0 not in people else "WRONG: " + ", ".join(
            "a junk box" if p == 0 else f"person {p}" for p in sorted(people))
        print(f"  {ent.rpartition('-')[2]}: {', '.join(sorted(cams))}  "
              f"{'person ' + str(next(iter(people))) if len(people) == 1 else ''}  {verdict}")


async def _adapt(settings: Settings) -> None:
    """What `reid-stream adapt` does, here: learn the site's space from the worker's stored rows."""
    from reid_stream.learn.adapt import adapt
    from reid_stream.learn.command import _report
    from reid_stream.store.reid_store import ReidStore
    from reid_stream.store.spaces import SpaceStore

    store = ReidStore.from_settings(settings)
    try:
        for model in await SpaceStore(store).models("person"):
            outcome = await adapt(store, model, "person")
            print(_report(outcome))
            if not outcome.adopted and outcome.version is not None and outcome.after:
                # A dozen people are too few for the held-out check to be sure either way: the demo adopts the
                # space anyway (`reid-stream adapt --force`) to show what it does, and says so.
                from reid_stream.learn.adapt import rollback

                await rollback(store, model, "person", outcome.version)
                print(f"  the demo adopts v{outcome.version} anyway, as `reid-stream adapt --force` would")
    finally:
        await store.close()


async def run_demo(settings: Settings, site: Path, wait_seconds: float, adapt: bool = True) -> int:
    run = f"demo{uuid.uuid4().hex[:6]}"
    truth: dict[str, Any] = {}
    entity_of, merged_into, sent = await visit(settings, site, run, 0, wait_seconds, truth)
    _quality("first visit", entity_of, merged_into, truth)
    complete = len(entity_of) == sent
    if adapt and stream_file(site, 1).is_file():
        print("\nlearning the site's similarity space from the stored detections (never their true ids) ...")
        await _adapt(settings)
        print()
        second_truth: dict[str, Any] = {}
        events, _ = site_detections(site, run, 1)
        camera_of = {e["detection_id"]: e["camera_id"] for e in events}
        entity2, merged2, sent2 = await visit(settings, site, run, 1, wait_seconds, second_truth)
        truth.update(second_truth)
        merged_into.update(merged2)
        _quality("second visit", entity2, merged_into, second_truth)
        _quality("both visits", {**entity_of, **entity2}, merged_into, truth)
        _cross_camera(entity2, merged_into, second_truth, camera_of)
        complete = complete and len(entity2) == sent2
    await _show_entities(settings)
    return 0 if complete else 1


async def _show_entities(settings: Settings) -> None:
    url = f"http://{settings.web_host}:{settings.web_port}/api/entities?limit=5"
    token = settings.api_tokens[0].partition(":")[2] if settings.api_tokens else ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        body = await resp.json()
    print(f"GET {url} -> {resp.status}: {body.get('count')} entities; newest:")
    for e in body.get("entities", []):
        print(f"  {e['id']}: {e['appearance_count']} appearances on {', '.join(e['cameras_seen'])}, "
              f"last seen {e['last_seen']}, thumbnail {e['thumbnail_url']}")
    print(f"Try it: curl -H 'Authorization: Bearer {token}' '{url}'")

