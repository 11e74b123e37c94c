"""The worker under faults it must survive: Redis going away, and configurations it must refuse."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import (
    REPO,
    Collector,
    Worker,
    free_port,
    get_json,
    produce,
    start_redis,
    stop_redis,
    worker_env,
)

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"


def detections(tag: str, n: int, start: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        png = encode_png(pattern_image(1000 + i))
        det = {"detection_id": f"{tag}-{i}", "camera_id": f"cam-{i % 3}", "entity_type": "person",
               "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
               "image_b64": base64.b64encode(png).decode()}
        out.append((det["camera_id"].encode(), json.dumps(det).encode()))
    return out


async def test_redis_outage_pauses_without_loss_and_views_degrade(infra, unique, tmp_path: Path):
    port = free_port()
    rdir = tmp_path / "redis"
    start_redis(port, rdir)
    env = worker_env(unique, REID_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], detections(unique, 5, 0))
            await matches.until(lambda items: len(items) >= 5, 60, "the first 5 match events")

            stop_redis(port)
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], detections(unique, 5, 5))
            await asyncio.sleep(3)
            status, body, headers = await get_json(f"{worker.base}/api/entities")
            assert status == 200 and body == {"entities": [], "count": 0, "limit": 50, "offset": 0}
            assert headers.get("X-Reid-Degraded") == "redis-unavailable"
            status, ready, _ = await get_json(f"{worker.base}/ready")
            assert status == 503 and ready["status"] == "degraded" and not ready["checks"]["redis"]["ok"]
            status, _, _ = await get_json(f"{worker.base}/api/entities/{unique}-0")
            assert status == 503
            assert worker.alive()
            assert len(matches.items) == 5, "nothing may be published while it cannot be stored"

            start_redis(port, rdir)  # an empty Redis: the first five are gone with it, the rest must arrive
            await matches.until(lambda items: {f"{unique}-{i}" for i in range(5, 10)}
                                <= {e["detection_id"] for e in items}, 90, "the 5 detections sent during the outage")
        status, body, _ = await get_json(f"{worker.base}/api/entities?limit=100")
        assert status == 200 and body["count"] >= 1
        await worker.wait_ready(30)
    finally:
        code = worker.stop()
        if (rdir / "redis.pid").exists():
            stop_redis(port)
    assert code == 0, worker.log_tail()


def run_worker_expecting_failure(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reid_stream", "worker"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_invalid_configuration_exits_naming_the_variable(unique):
    done = run_worker_expecting_failure(worker_env(unique, REID_SIMILARITY_THRESHOLD="very"))
    assert done.returncode == 2 and "REID_SIMILARITY_THRESHOLD" in done.stderr


def test_missing_weights_exit_at_start_saying_how_to_provide_them(unique, tmp_path: Path):
    done = run_worker_expecting_failure(worker_env(unique, REID_CLIP_PRETRAINED=str(tmp_path / "none.pt")))
    assert done.returncode == 3
    assert "REID_CLIP_PRETRAINED" in done.stderr and "checkpoint" in done.stderr
