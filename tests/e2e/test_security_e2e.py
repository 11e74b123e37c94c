"""API security and erasure, driven through Kafka, HTTP and the CLI against the worker process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from reid_stream.config import Settings
from reid_stream.store.reid_store import ReidStore
from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import REPO, TEST_TOKEN, Collector, Worker, get_json, produce, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"


def det(det_id: str, seed: int, camera: str) -> tuple[bytes, bytes]:
    body = {"detection_id": det_id, "camera_id": camera, "entity_type": "vehicle",
            "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
            "image_b64": base64.b64encode(encode_png(pattern_image(seed))).decode()}
    return camera.encode(), json.dumps(body).encode()


async def test_tokens_audit_openapi_and_erasure(infra, unique, tmp_path: Path):
    audit = tmp_path / "audit.log"
    env = worker_env(unique, REID_AUDIT_LOG="true", REID_AUDIT_LOG_FILE=str(audit))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        await worker.wait_ready()
        ids = [f"{unique}-{n}" for n in ("a1", "a2", "b1", "c1")]
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"],
                          [det(ids[0], 7, "gate"), det(ids[1], 7, "yard"), det(ids[2], 8, "gate"),
                           det(ids[3], 9, "dock")])
            events = await matches.until(lambda items: len(items) >= 4, 60, "four match events")
        entity_a = {e["detection_id"]: e["entity_id"] for e in events}[ids[0]]
        entity_b = {e["detection_id"]: e["entity_id"] for e in events}[ids[2]]
        entity_c = {e["detection_id"]: e["entity_id"] for e in events}[ids[3]]
        assert len({entity_a, entity_b, entity_c}) == 3
        await merge_in_redis(env, survivor=entity_b, merged=entity_c)

        base = worker.base
        for token in (None, "wrong-token-0123456789"):
            status, body, headers = await get_json(f"{base}/api/entities", token=token)
            assert status == 401 and body["detail"] and headers["WWW-Authenticate"].startswith("Bearer")
            status, _, _ = await get_json(f"{base}/api/entities/{entity_a}", token=token)
            assert status == 401
            status, _, _ = await get_json(f"{base}/api/entities/{entity_a}", token=token, method="DELETE")
            assert status == 401
            status, _, _ = await get_json(f"{base}/api/detections/{ids[0]}/image", token=token)
            assert status == 401
        status, body, _ = await get_json(f"{base}/health", token=None)
        assert status == 200  # operations routes are open unless REID_PROTECT_OPS
        status, spec, _ = await get_json(f"{base}/api/openapi.json")
        assert status == 200 and "/api/entities/{entity_id}/history" in spec["paths"]

        status, detail, _ = await get_json(f"{base}/api/entities/{entity_a}")
        assert status == 200 and detail["appearance_count"] == 2
        status, body, _ = await get_json(f"{base}/api/detections/{ids[0]}/image")
        assert status == 404 and body["error_code"] == "image_not_kept"  # inline images are never stored

        # A merged entity's id answers with the entity it became.
        status, detail, _ = await get_json(f"{base}/api/entities/{entity_c}")
        assert status == 200 and detail["id"] == entity_b and detail["resolved_from"] == entity_c
        assert detail["merged_ids"] == [entity_c] and detail["cameras_seen"] == ["dock", "gate"]
        assert sorted(a["detection_id"] for a in detail["appearances"]) == sorted(ids[2:])
        status, history, _ = await get_json(f"{base}/api/entities/{entity_c}/history")
        assert status == 200 and history["id"] == entity_b and history["resolved_from"] == entity_c
        assert history["count"] == 2
        status, detail, _ = await get_json(f"{base}/api/entities/{entity_b}")
        assert status == 200 and detail["resolved_from"] is None and detail["merged_ids"] == [entity_c]
        status, listing, _ = await get_json(f"{base}/api/entities")
        assert {e["entity_id"]: e["merged_ids"] for e in listing["entities"]} == {entity_a: [], entity_b: [entity_c]}
        status, _, _ = await get_json(f"{base}/api/entities/{unique}-nobody")
        assert status == 404

        # Erasure over HTTP: the entity, its appearances, markers and embeddings are gone.
        status, body, _ = await get_json(f"{base}/api/entities/{entity_a}", method="DELETE")
        assert status == 200 and sorted(body["purged"]["detections"]) == sorted(ids[:2])
        status, _, _ = await get_json(f"{base}/api/entities/{entity_a}")
        assert status == 404
        status, body, _ = await get_json(f"{base}/api/detections/{ids[0]}/image")
        assert status == 404 and body["error_code"] == "detection_not_found"  # its image reference went too
        status, listing, _ = await get_json(f"{base}/api/entities")
        assert [e["entity_id"] for e in listing["entities"]] == [entity_b]
        r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        leftovers = []
        async for key in r.scan_iter(match=f"{env['REID_REDIS_PREFIX']}:*"):
            k = key.decode()
            if any(d in k for d in ids[:2]) or entity_a in k:
                leftovers.append(k)
            elif r"entity_embeddings" in k or "entity_meta" in k:
                fields = [f.decode() for f in await r.hkeys(key)]
                leftovers += [f"{k}/{f}" for f in fields if f in ids[:2]]
        await r.aclose()
        assert leftovers == []

        # Erasure from the CLI, by the merged id: it erases the entity it became.
        cli_env = {**env}
        done = subprocess.run([sys.executable, "-m", "reid_stream", "purge", "--entity", entity_c], env=cli_env,
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        purged = json.loads(done.stdout)["purged"]
        assert purged["entity_id"] == entity_b and purged["resolved_from"] == entity_c
        assert sorted(purged["detections"]) == sorted(ids[2:])
        status, _, _ = await get_json(f"{base}/api/entities/{entity_c}")
        assert status == 404
        again = subprocess.run([sys.executable, "-m", "reid_stream", "purge", "--entity", entity_b], env=cli_env,
                               cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "not found" in again.stderr
        status, listing, _ = await get_json(f"{base}/api/entities")
        assert listing["entities"] == [] and listing["count"] == 0
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()

    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert lines and all(x["token"] == "tester" for x in lines)
    assert {"/api/entities", f"/api/entities/{entity_a}"} <= {x["route"] for x in lines}
    assert any(x["method"] == "DELETE" and x["status"] == 200 for x in lines)
    assert TEST_TOKEN not in audit.read_text()


async def merge_in_redis(env: dict[str, str], survivor: str, merged: str) -> None:
    """What the assign stage does when two entities' prototypes converge (the worker reloads on the version)."""
    store = ReidStore.from_settings(Settings.from_env(env))
    try:
        model = (await store.redis.hget(store.keys.entity(survivor), "model")).decode()
        version = await store.version(model, "vehicle")
        res = await store.merge(model, "vehicle", survivor, merged, 0.95, version, datetime.now(UTC))
        assert res.status == "ok", res
    finally:
        await store.close()
