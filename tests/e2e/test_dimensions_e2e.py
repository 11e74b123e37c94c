"""A vector whose length is not that of its model's stored vectors is never compared with them, through the
worker as it runs: the stream dead-letters it, the search routes refuse, in JSON. (The Python API's half is in
tests/integration/test_service_api.py.) Twice the stored length is the case that used to pass quietly: 1536
float32 bytes of a 384-number row read as 768 float16 numbers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis

from reid_stream.config import Settings
from reid_stream.events import Detection
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord, RawEvent, pack, writer_key
from tests.conftest import encode_png, pattern_image
from tests.e2e.harness import Collector, auth_headers, produce, running_worker, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"
MODEL_DIM = 768  # the null encoder's


def detection(det_id: str, seed: int, site: str = "default") -> dict:
    return {"detection_id": det_id, "camera_id": "cam-d", "entity_type": "person", "site_id": site,
            "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
            "image_b64": base64.b64encode(encode_png(pattern_image(seed))).decode()}


def record(det: dict, dim: int, seed: int) -> EmbeddedRecord:
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    raw = json.dumps(det).encode()
    return EmbeddedRecord.of(Detection.model_validate(det), vec / np.linalg.norm(vec), "null", RawEvent(raw))


async def test_the_stream_dead_letters_a_vector_of_another_dimension(infra, unique, tmp_path: Path):
    env = worker_env(unique, REID_ENCODER="null")
    async with running_worker(env, tmp_path / "worker.log"), \
            Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, \
            Collector(BOOTSTRAP, env["REID_TOPIC_DLQ"]) as dlq:
        await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"],
                      [(b"cam-d", json.dumps(detection(f"{unique}-{n}", n)).encode()) for n in range(2)])
        await matches.until(lambda items: len(items) >= 2, 60, "two match events")
        # What a worker with another model under the same id would hand the assign stage.
        odd = record(detection(f"{unique}-odd", 7), 2 * MODEL_DIM, 7)
        await produce(BOOTSTRAP, env["REID_TOPIC_EMBEDDED"], [(writer_key("default", "person"), pack([odd]))])
        letters = await dlq.until(lambda items: len(items) >= 1, 60, "the dead letter")
        assert [(ltr["error_code"], ltr["stage"], ltr["detection_id"]) for ltr in letters] == [
            ("dimension_mismatch", "assign", f"{unique}-odd")]
        assert f"{2 * MODEL_DIM} numbers" in letters[0]["message"] and f"{MODEL_DIM} numbers" in letters[0]["message"]
        assert base64.b64decode(letters[0]["original_b64"]) == odd.source.value
        # The stage goes on, with its stored rows as they were.
        await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], [(b"cam-d", json.dumps(
            detection(f"{unique}-again", 0)).encode())])
        await matches.until(lambda items: any(e["detection_id"] == f"{unique}-again" for e in items), 60, "again")
    assert f"{unique}-odd" not in {e["detection_id"] for e in matches.items}
    again = next(e for e in matches.items if e["detection_id"] == f"{unique}-again")
    assert again["entity_id"] == f"{unique}-0" and again["matches"][0]["similarity"] == pytest.approx(1.0)


async def test_the_search_routes_refuse_stored_vectors_of_another_dimension(infra, unique, tmp_path: Path):
    env = worker_env(unique, REID_ENCODER="null")
    site = f"legacy-{unique}"
    # Rows of half the model's length stored under its id at one site (a worker of another model, same id).
    settings = Settings.from_env({}, redis_prefix=env["REID_REDIS_PREFIX"], embedding_ttl_seconds=600)
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = ReidStore(client, settings)
        _, letters = await Assigner(settings, store).assign(
            [record(detection(f"{unique}-h{n}", n, site), MODEL_DIM // 2, n) for n in range(3)])
        assert not letters
    finally:
        await client.aclose()
    async with running_worker(env, tmp_path / "worker.log") as worker, \
            aiohttp.ClientSession(headers=auth_headers()) as http:
        for method, path, kwargs in (
                ("GET", f"/api/detections/{unique}-h0/similar", {}),
                ("POST", "/api/search/image", {"data": encode_png(pattern_image(3)),
                                               "headers": {"Content-Type": "image/png"}})):
            async with http.request(method, f"{worker.base}{path}", params={"site_id": site}, **kwargs) as r:
                body = await r.json()
                assert (r.status, body.get("error_code")) == (409, "dimension_mismatch"), (path, body)
                assert f"{MODEL_DIM // 2} numbers" in body["detail"], body
        # The default site's vectors are the model's: searching them works as ever.
        async with http.post(f"{worker.base}/api/search/image", data=encode_png(pattern_image(3)),
                             headers={"Content-Type": "image/png"}) as r:
            assert r.status == 200, await r.text()
