"""R2 (Redis stopped for 15 s) and R3 (broker restarted) in the middle of a stream: nothing is lost."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from reid_stream.infra.services import InfraConfig, kafka_up, port_open
from reid_stream.store.keys import Keys
from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import (
    Collector,
    Worker,
    committed,
    free_port,
    get_json,
    start_redis,
    stop_redis,
    worker_env,
)
from tests.faults.report import record

pytestmark = pytest.mark.faults
CROPS = [base64.b64encode(encode_png(pattern_image(7000 + i))).decode() for i in range(50)]


def det(tag: str, i: int) -> tuple[bytes, bytes]:
    cam = f"cam-{i % 4}"
    body = {"detection_id": f"{tag}-{i}", "camera_id": cam, "entity_type": "vehicle" if i % 2 else "person",
            "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
            "image_b64": CROPS[i % len(CROPS)]}
    return cam.encode(), json.dumps(body).encode()


async def paced(bootstrap: str, topic: str, tag: str, start: int, n: int, rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        t0 = time.monotonic()
        for i in range(start, start + n):
            key, value = det(tag, i)
            await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(max(0.0, t0 + (i - start + 1) / rate - time.monotonic()))
    finally:
        await producer.stop()


# --- R2 ------------------------------------------------------------------------------------------

async def test_r2_redis_down_for_15s_pauses_and_loses_nothing(infra, unique, tmp_path: Path):
    port, rdir = free_port(), tmp_path / "redis"
    start_redis(port, rdir)
    env = worker_env(unique, REID_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    worker = Worker(env, tmp_path / "worker.log").start()
    n, rate = 600, 20.0  # 30 s of traffic: 8 s before, 15 s during, 7 s after the outage
    try:
        await worker.wait_ready()
        stream = asyncio.create_task(paced("127.0.0.1:9092", env["REID_TOPIC_DETECTIONS"], unique, 0, n, rate))
        await asyncio.sleep(8)
        # SHUTDOWN SAVE, then the same dump on restart: an outage, not a data loss.
        stop_redis(port, save=True)
        down_at = time.monotonic()
        await asyncio.sleep(3)
        status, ready, _ = await get_json(f"{worker.base}/ready")
        assert status == 503 and ready["status"] == "degraded" and not ready["checks"]["redis"]["ok"]
        status, body, headers = await get_json(f"{worker.base}/api/entities")
        assert status == 200 and body["entities"] == [] and headers.get("X-Reid-Degraded") == "redis-unavailable"
        group = f"{env['REID_APP_ID']}.assign"  # the storing stage's consumer group
        before = await committed("127.0.0.1:9092", group, env["REID_TOPIC_EMBEDDED"])
        assert sum(before.values()) > 0, "8 s of traffic before the outage must have committed something"
        await asyncio.sleep(max(0.0, 15 - (time.monotonic() - down_at) - 1))
        after = await committed("127.0.0.1:9092", group, env["REID_TOPIC_EMBEDDED"])
        assert before == after, "no offset of unstored detections may be committed during the outage"
        assert worker.alive()
        await asyncio.sleep(max(0.0, 15.2 - (time.monotonic() - down_at)))
        start_redis(port, rdir)
        outage = time.monotonic() - down_at
        await stream
        async with Collector("127.0.0.1:9092", env["REID_TOPIC_MATCHES"]) as matches:
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= n, 180,
                                f"match events for all {n} detections")
        await worker.wait_ready(30)
        r = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        markers = [k async for k in r.scan_iter(match=f"{Keys.of(env['REID_REDIS_PREFIX']).prefix}:det:*", count=1000)]
        await r.aclose()
        assert len(markers) == n, "afterwards every detection is stored"
        status, body, _ = await get_json(f"{worker.base}/api/entities?limit=1000")
        assert status == 200 and sum(e["appearance_count"] for e in body["entities"]) == n
    finally:
        code = worker.stop()
        stop_redis(port)
    assert code == 0, worker.log_tail()
    record("R2 redis outage", {"outage_s": round(outage, 1), "detections": n, "stored": len(markers), "lost": 0,
                               "offsets_committed_during_outage": 0})


# --- R3 ------------------------------------------------------------------------------------------

async def test_r3_broker_restart_mid_stream_loses_nothing(infra: InfraConfig, unique, tmp_path: Path):
    port = free_port()
    while port_open("127.0.0.1", port + 1):
        port = free_port()
    cfg = replace(infra, kafka_port=port, cache_dir=tmp_path / "kafka-cache")
    (cfg.cache_dir).mkdir()
    (cfg.cache_dir / infra.kafka_dir.name).symlink_to(infra.kafka_dir)  # the same jars, a private broker
    kafka_up(cfg)
    bootstrap = f"127.0.0.1:{port}"
    env = worker_env(unique, REID_KAFKA_BOOTSTRAP=bootstrap)
    worker = Worker(env, tmp_path / "worker.log").start()
    n1, n2 = 400, 200
    try:
        await worker.wait_ready()
        await paced(bootstrap, env["REID_TOPIC_DETECTIONS"], unique, 0, n1, rate=200)
        # Stop the broker while the worker is still working through the first part, then start it again.
        from reid_stream.infra.services import _stop_pidfile

        _stop_pidfile(cfg.kafka_run_dir / "kafka.pid", "private kafka")
        await asyncio.sleep(5)
        assert worker.alive()
        kafka_up(cfg, keep_data=True)
        restarted_at = time.monotonic()
        await paced(bootstrap, env["REID_TOPIC_DETECTIONS"], unique, n1, n2, rate=100)
        async with Collector(bootstrap, env["REID_TOPIC_MATCHES"]) as matches:
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= n1 + n2, 240,
                                f"match events for all {n1 + n2} detections")
        recovered = time.monotonic() - restarted_at
        assert worker.alive()
    finally:
        code = worker.stop()
        from reid_stream.infra.services import _stop_pidfile

        _stop_pidfile(cfg.kafka_run_dir / "kafka.pid", "private kafka")
    assert code == 0, worker.log_tail()
    ids = {e["detection_id"] for e in matches.items}
    assert ids == {f"{unique}-{i}" for i in range(n1 + n2)}
    record("R3 broker restart", {"detections": n1 + n2, "lost": 0,
                                 "duplicate_match_events": len(matches.items) - len(ids),
                                 "all_matched_s_after_restart": round(recovered, 1)})
