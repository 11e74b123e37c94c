"""The demo producer: replays a synthetic multi-camera site (`reid-stream synth`) into Kafka as an NVR would,
prints every match event with its similarity, and ends with how well the entities match the true people."""

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

SPEEDUP = 20.0  # the site's minutes play in seconds, in the recorded order


def site_detections(site: Path, run: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The site's stream as NVR events (fresh ids, timestamps moved to now) and the true id of each."""
    lines = [json.loads(x) for x in (site / "stream.jsonl").read_text().splitlines() if x.strip()]
    if not lines:
        raise ValueError(f"{site}/stream.jsonl holds no detections")
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


async def run_demo(settings: Settings, site: Path, wait_seconds: float) -> int:
    run = f"demo{uuid.uuid4().hex[:6]}"
    events, truth = site_detections(site, run)
    consumer = AIOKafkaConsumer(settings.topic_matches, settings.topic_updates,
                                bootstrap_servers=settings.kafka_bootstrap, group_id=f"reid-demo-{run}",
                                auto_offset_reset="latest")
    await consumer.start()
    try:
        while not consumer.assignment():  # wait for the group join, so no match event is missed
            await asyncio.sleep(0.1)
        await consumer.seek_to_end()
        print(f"streaming {len(events)} detections of {len(set(truth.values()) - {0})} people from "
              f"{len({e['camera_id'] for e in events})} cameras ({site}) to '{settings.topic_detections}'")
        producing = asyncio.create_task(_produce(settings, events))
        entity_of: dict[str, str] = {}
        merged_into: dict[str, str] = {}
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
                    if det not in truth or det in entity_of:
                        continue
                    entity_of[det] = ev["entity_id"]
                    print(_line(ev, truth))
        await producing
    finally:
        await consumer.stop()
    print(f"\nreceived {len(entity_of)}/{len(events)} match events from '{settings.topic_matches}'")
    if entity_of:
        done = [d for d in truth if d in entity_of]

        def resolved(entity: str) -> str:  # a merged entity's detections now belong to the survivor
            while entity in merged_into:
                entity = merged_into[entity]
            return entity

        q = clustering_metrics([scored_id(truth[d], d) for d in done], [resolved(entity_of[d]) for d in done])
        people = len({truth[d] for d in done} - {0})
        print(f"quality: {people} people (and {sum(truth[d] == 0 for d in done)} junk boxes) became "
              f"{q.num_predicted} entities; pairwise precision "
              f"{q.pairwise_precision:.3f}, recall {q.pairwise_recall:.3f}, F1 {q.pairwise_f1:.3f}; false merges "
              f"{q.false_merge_rate:.1%} of same-entity pairs; {q.fragmentation:.2f} entities per person")
    await _show_entities(settings)
    return 0 if len(entity_of) == len(events) else 1


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

