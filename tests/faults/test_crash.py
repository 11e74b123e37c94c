"""R1: SIGKILL the worker 5 times while 5,000 detections stream in; nothing is lost or stored twice.

The stream is made of tracklets of 10 frames across 7 cameras; a third of them begin with a frame of nobody's
look, so they found an entity of their own and are merged into the person they show once their aggregate
says so. The null encoder makes looks exact, so those merges certainly happen while the worker is killed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from reid_stream.store import Keys
from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, worker_env
from tests.faults.report import record

pytestmark = pytest.mark.faults
BOOTSTRAP = "127.0.0.1:9092"
N, KILLS, IDENTITIES, FRAMES = 5000, 5, 60, 10


def look(i: int, crops: list[str], poor: list[str]) -> str:
    tracklet, frame = divmod(i, FRAMES)
    if frame == 0 and tracklet % 3 == 0:
        return poor[tracklet // 3]
    return crops[tracklet % IDENTITIES]


async def stream_detections(topic: str, tag: str, rate: float) -> None:
    crops = [base64.b64encode(encode_png(pattern_image(5000 + i))).decode() for i in range(IDENTITIES)]
    poor = [base64.b64encode(encode_png(pattern_image(9000 + i))).decode() for i in range(N // FRAMES // 3 + 1)]
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        start = time.monotonic()
        for i in range(N):
            tracklet = i // FRAMES
            cam = f"cam-{tracklet % 7}"
            det = {"detection_id": f"{tag}-{i}", "camera_id": cam, "entity_type": "person",
                   "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
                   "track_id": f"t{tracklet}", "image_b64": look(i, crops, poor)}
            await producer.send(topic, json.dumps(det).encode(), key=cam.encode())
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()


async def test_sigkill_five_times_loses_nothing_and_stores_once(infra, unique, tmp_path: Path):
    env = worker_env(unique, REID_MAX_EMBEDDINGS="20000", REID_BATCH_SIZE="32", REID_ENCODER="null",
                     REID_SIMILARITY_THRESHOLD="0.95")
    log = tmp_path / "worker.log"
    worker = Worker(env, log).start()
    await worker.wait_ready()
    rng = random.Random(11)
    kills = 0
    producing = asyncio.create_task(stream_detections(env["REID_TOPIC_DETECTIONS"], unique, rate=200))
    t0 = time.monotonic()
    try:
        while kills < KILLS:
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            kills += 1
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            worker = Worker(env, log).start()
            await worker.wait_ready()
        await producing
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= N, 600,
                                f"match events for all {N} detections")
        elapsed = time.monotonic() - t0
    finally:
        producing.cancel()
        code = worker.stop()
    assert code == 0, worker.log_tail()

    events = defaultdict(list)
    for e in matches.items:
        events[e["detection_id"]].append(e)
    assert set(events) == {f"{unique}-{i}" for i in range(N)}, "every detection has a match event"
    for det_id, evs in events.items():  # a duplicate is recognisable: same detection_id, same outcome
        assert len({e["entity_id"] for e in evs}) == 1, det_id

    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = Keys.of(env["REID_REDIS_PREFIX"]).prefix  # the default site's keys
    stored: dict[str, str] = {}  # detection -> the entity holding its appearance
    async for key in r.scan_iter(match=f"{prefix}:ent:*:apps", count=1000):
        entity = key.decode()[len(f"{prefix}:ent:"):-len(":apps")]
        apps = await r.hkeys(key)
        count = int(await r.hlen(key))
        assert count == await r.zcard(f"{prefix}:ent:{entity}:order")
        for det in apps:
            assert det.decode() not in stored, f"{det!r} stored in two entities"
            stored[det.decode()] = entity
    idx = [m async for m in r.scan_iter(match=f"{prefix}:idx:*")]
    indexed = sum([await r.zcard(k) for k in idx])
    markers = len([k async for k in r.scan_iter(match=f"{prefix}:det:*", count=1000)])
    aliases: dict[str, str] = {}
    async for key in r.scan_iter(match=f"{prefix}:aliases:*"):
        aliases.update((k.decode(), v.decode()) for k, v in (await r.hgetall(key)).items())
    await r.aclose()
    assert len(stored) == N and indexed == N and markers == N, "every detection stored exactly once"

    # Every merge stored in Redis is published on entity-updates (at least once), and following the published
    # merges from each detection's event leads to the entity that holds its appearance.
    async with Collector(BOOTSTRAP, env["REID_TOPIC_UPDATES"]) as updates:
        await updates.until(lambda items: set(aliases) <= {u["merged"] for u in items}, 60,
                            f"the {len(aliases)} stored merges on entity-updates")
    published = {u["merged"]: u["survivor"] for u in updates.items}

    def resolve(entity: str) -> str:
        while entity in published:
            entity = published[entity]
        return entity

    assert all(stored[d] == resolve(evs[0]["entity_id"]) for d, evs in events.items())
    decisions = [evs[0]["decision"] for evs in events.values()]
    assert decisions.count("tracklet") > N // 2 and decisions.count("merged") > 0 and published
    duplicates = sum(len(evs) - 1 for evs in events.values())
    record("R1 crash", {"detections": N, "sigkills": kills, "lost": N - len(stored), "stored_twice": 0,
                        "duplicate_match_events": duplicates, "entities": len(set(stored.values())),
                        "merges": len(published), "merge_events": len(updates.items),
                        "tracklet_follows": decisions.count("tracklet"), "seconds": round(elapsed, 1)})
