"""The whole pipeline as a user drives it: Kafka in, Kafka out, HTTP views, with the real services."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, Worker, auth_headers, get_json, produce, worker_env

pytestmark = pytest.mark.e2e


def frame(crop: Image.Image, at: tuple[int, int]) -> tuple[bytes, dict[str, int]]:
    img = Image.new("RGB", (200, 160), (20, 30, 40))
    img.paste(crop, at)
    return encode_png(img), {"x1": at[0], "y1": at[1], "x2": at[0] + crop.width, "y2": at[1] + crop.height}


def detection(det_id: str, camera: str, bbox: dict[str, int], **ref: str) -> dict:
    return {"detection_id": det_id, "camera_id": camera, "camera_name": camera.upper(), "entity_type": "person",
            "timestamp": datetime.now(UTC).isoformat(), "bbox": bbox, "attributes": {"color": "test"}, **ref}


def msg(det: dict) -> tuple[bytes, bytes]:
    return det["camera_id"].encode(), json.dumps(det).encode()


@pytest.fixture
def worker(infra, unique, image_root: Path, tmp_path: Path):
    w = Worker(worker_env(unique, REID_IMAGE_ROOTS=str(image_root)), tmp_path / "worker.log").start()
    yield w
    code = w.stop()
    assert code == 0, f"worker did not stop cleanly ({code}):\n{w.log_tail()}"


async def test_detections_become_entities_matches_and_dead_letters(worker: Worker, image_root: Path, unique: str):
    ready = await worker.wait_ready()
    assert ready["checks"]["model"]["model"] == "reid-tiny-vit.random0"
    env = worker.env
    bootstrap = "127.0.0.1:9092"

    person, stranger, third = pattern_image(11), pattern_image(22), pattern_image(33)
    png_a, bbox_a = frame(person, (10, 20))
    (image_root / "cam1.png").write_bytes(png_a)
    png_b, bbox_b = frame(person, (120, 40))  # the same person, elsewhere in another camera's frame
    png_c, bbox_c = frame(stranger, (50, 50))
    png_d, bbox_d = frame(third, (30, 10))
    (image_root.parent / "outside.png").write_bytes(png_c)

    a = detection(f"A-{unique}", "cam-1", bbox_a, image_path=str(image_root / "cam1.png"))
    b = detection(f"B-{unique}", "cam-2", bbox_b, image_b64=base64.b64encode(png_b).decode())
    c = detection(f"C-{unique}", "cam-2", bbox_c, image_b64=base64.b64encode(png_c).decode())
    d = detection(f"D-{unique}", "cam-1", bbox_d, image_b64=base64.b64encode(png_d).decode())
    escape = detection(f"X-{unique}", "cam-1", bbox_a, image_path="../outside.png")
    messages = [msg(a), (b"cam-1", b'{"detection_id": "broken", '), msg(escape), msg(b), msg(c), msg(d), msg(a)]

    async with Collector(bootstrap, env["REID_TOPIC_MATCHES"]) as matches, \
            Collector(bootstrap, env["REID_TOPIC_DLQ"]) as dlq:
        await produce(bootstrap, env["REID_TOPIC_DETECTIONS"], messages)
        await produce(bootstrap, env["REID_TOPIC_EMBEDDED"], [(b"person", b"not a record of ours")])
        events = await matches.until(
            lambda items: sum(1 for e in items if e["detection_id"] == a["detection_id"]) >= 2
            and {a["detection_id"], b["detection_id"], c["detection_id"], d["detection_id"]}
            <= {e["detection_id"] for e in items},
            timeout=120, what="match events for A (twice), B, C, D")
        letters = await dlq.until(lambda items: len(items) >= 3, timeout=60, what="three dead letters")

    by_id: dict[str, list[dict]] = {}
    for e in events:
        by_id.setdefault(e["detection_id"], []).append(e)
    ea, eb, ec, ed = (by_id[x["detection_id"]][0] for x in (a, b, c, d))
    # The same crop on two cameras: one entity. Partitions are keyed by camera, so either may come first.
    assert ea["entity_id"] == eb["entity_id"]
    assert {ea["is_new_entity"], eb["is_new_entity"]} == {True, False}
    joined = eb if not eb["is_new_entity"] else ea
    assert joined["matches"][0]["similarity"] >= 0.9995
    assert ec["is_new_entity"] and ec["entity_id"] == c["detection_id"]
    assert ed["is_new_entity"]  # processed although bad events came before it
    for e in (ea, eb, ec, ed):
        assert e["model"] == "reid-tiny-vit.random0" and e["entity_type"] == "person"
        sims = [m["similarity"] for m in e["matches"]]
        assert sims == sorted(sims, reverse=True)
    # Delivered twice: the second match event repeats the first; nothing is stored twice.
    assert by_id[a["detection_id"]][0] == by_id[a["detection_id"]][1]

    codes = {ltr["error_code"]: ltr for ltr in letters}
    assert set(codes) == {"invalid_json", "path_not_allowed", "internal_record_unreadable"}
    assert base64.b64decode(codes["internal_record_unreadable"]["original_b64"]) == b"not a record of ours"
    assert base64.b64decode(codes["invalid_json"]["original_b64"]) == b'{"detection_id": "broken", '
    assert codes["invalid_json"]["stage"] == "decode" and codes["path_not_allowed"]["stage"] == "load_image"
    assert codes["path_not_allowed"]["detection_id"] == escape["detection_id"]
    assert all(ltr["time"] and ltr["message"] for ltr in letters)

    entity_id = ea["entity_id"]
    status, detail, _ = await get_json(f"{worker.base}/api/entities/{entity_id}")
    assert status == 200
    assert detail["appearance_count"] == 2 and detail["cameras_seen"] == ["cam-1", "cam-2"]
    assert {ap["detection_id"] for ap in detail["appearances"]} == {a["detection_id"], b["detection_id"]}
    assert all(ap["attributes"] == {"color": "test"} and ap["camera_name"] for ap in detail["appearances"])
    assert detail["id"] == detail["entity_id"] == entity_id and isinstance(detail["thumbnail_url"], str)
    apps = {ap["detection_id"]: ap for ap in detail["appearances"]}
    founder, joiner = (a, b) if ea["is_new_entity"] else (b, a)
    assert apps[founder["detection_id"]]["similarity_score"] == 1.0
    # The match event and the appearance report the same value.
    assert apps[joiner["detection_id"]]["similarity_score"] == next(
        c["similarity"] for c in joined["candidates"] if c["entity_id"] == joined["entity_id"])

    # Thumbnails: cut on demand from the original image (A is a file under the roots), served as a JPEG.
    thumb_url = worker.base + apps[a["detection_id"]]["thumbnail_url"]
    assert thumb_url == f"{worker.base}/api/detections/{a['detection_id']}/image"
    async with aiohttp.ClientSession() as http:
        async with http.get(thumb_url, headers=auth_headers()) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
            thumb = Image.open(io.BytesIO(await resp.read()))
        assert thumb.format == "JPEG" and thumb.size == person.size  # the crop, under the 256 px default
        diff = np.abs(np.asarray(thumb.convert("RGB"), np.int16) - np.asarray(person.convert("RGB"), np.int16))
        assert float(diff.mean()) < 8.0  # the person's own pixels, up to JPEG loss
        async with http.get(thumb_url) as resp:
            assert resp.status == 401
    status, body, _ = await get_json(f"{worker.base}/api/detections/{b['detection_id']}/image")
    assert status == 404 and body["error_code"] == "image_not_kept"  # sent inline: no image is kept
    status, body, _ = await get_json(f"{worker.base}/api/detections/no-such-detection/image")
    assert status == 404 and body["error_code"] == "detection_not_found"

    status, history, _ = await get_json(f"{worker.base}/api/entities/{entity_id}/history")
    assert status == 200 and history["count"] == 2 and history["entity_id"] == history["id"] == entity_id
    assert history["entity_type"] == "person" and len(history["appearances"]) == 2

    status, listing, _ = await get_json(f"{worker.base}/api/entities?entity_type=person&limit=10")
    assert status == 200 and listing["limit"] == 10 and listing["offset"] == 0
    ids = {e["entity_id"] for e in listing["entities"]}
    assert all(e["id"] == e["entity_id"] and e["thumbnail_url"] for e in listing["entities"])
    assert {entity_id, c["detection_id"], ed["entity_id"]} <= ids and listing["count"] == 3
    status, cam2, _ = await get_json(f"{worker.base}/api/entities?camera_id=cam-2")
    assert {e["entity_id"] for e in cam2["entities"]} == {entity_id, c["detection_id"]}

    status, body, _ = await get_json(f"{worker.base}/api/entities/no-such-entity")
    assert status == 404 and body["detail"] == "Entity with id 'no-such-entity' not found"
    status, body, _ = await get_json(f"{worker.base}/api/entities?limit=5000")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "limit"]
    assert body["error_code"] == "invalid_parameter"  # as the search routes answer the same filters
    status, body, _ = await get_json(f"{worker.base}/health")
    assert status == 200 and body["status"] == "ok"

    # The source image is gone: the thumbnail says so.
    (image_root / "cam1.png").unlink()
    status, body, _ = await get_json(thumb_url)
    assert status == 410 and body["error_code"] == "image_gone"

    # Metrics moved with the traffic.
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"{worker.base}/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(await resp.text()) for s in fam.samples}
    assert samples[("reid_processed_total", ())] == 5  # A twice, B, C, D
    assert samples[("reid_new_entities_total", ())] + samples[("reid_matched_total", ())] == 5
    assert samples[("reid_dead_lettered_total", (("error_code", "invalid_json"),))] == 1
    assert samples[("reid_dead_lettered_total", (("error_code", "path_not_allowed"),))] == 1
    assert samples[("reid_dead_lettered_total", (("error_code", "internal_record_unreadable"),))] == 1
    assert samples[("reid_batch_size_count", ())] >= 1 and samples[("reid_encode_seconds_count", ())] >= 1
    assert samples[("reid_end_to_end_latency_seconds_count", ())] == 5
    lag = {k: v for k, v in samples.items() if k[0] == "reid_consumer_lag"}
    assert lag and all(v >= 0 for v in lag.values())

    # Privacy: every key the worker wrote expires.
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = [k async for k in r.scan_iter(match=f"{env['REID_REDIS_PREFIX']}:*")]
    assert keys and all([await r.ttl(k) > 0 for k in keys])
    await r.aclose()
    assert worker.alive()


async def test_float16_storage_matches_across_cameras_end_to_end(infra, unique: str, tmp_path: Path):
    import redis.asyncio as aioredis

    env = worker_env(unique, REID_VECTOR_DTYPE="float16")
    w = Worker(env, tmp_path / "worker.log").start()
    try:
        await w.wait_ready()
        person = pattern_image(44)
        (png_a, bbox_a), (png_b, bbox_b) = frame(person, (10, 20)), frame(person, (100, 60))
        a = detection(f"HA-{unique}", "cam-1", bbox_a, image_b64=base64.b64encode(png_a).decode())
        b = detection(f"HB-{unique}", "cam-2", bbox_b, image_b64=base64.b64encode(png_b).decode())
        bootstrap = "127.0.0.1:9092"
        async with Collector(bootstrap, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(bootstrap, env["REID_TOPIC_DETECTIONS"], [msg(a)])
            await matches.until(lambda items: len(items) >= 1, timeout=120, what="A's match event")
            await produce(bootstrap, env["REID_TOPIC_DETECTIONS"], [msg(b)])  # after A is stored, on purpose
            events = await matches.until(lambda items: len(items) >= 2, timeout=120, what="B's match event")
        eb = next(e for e in events if e["detection_id"] == b["detection_id"])
        assert eb["entity_id"] == a["detection_id"] and not eb["is_new_entity"]
        assert eb["matches"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)  # read back from float16
        status, detail, _ = await get_json(f"{w.base}/api/entities/{a['detection_id']}")
        assert status == 200 and detail["appearance_count"] == 2 and detail["cameras_seen"] == ["cam-1", "cam-2"]
        r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            vec_keys = [k async for k in r.scan_iter(match=f"{env['REID_REDIS_PREFIX']}:*:entity_embeddings:*")]
            stored = [v for k in vec_keys if (v := await r.hget(k, a["detection_id"])) is not None]
            assert [len(v) for v in stored] == [2 * 64]  # reid-tiny-vit is 64-d; float16 is 2 bytes each
        finally:
            await r.aclose()
    finally:
        assert w.stop() == 0, w.log_tail()
