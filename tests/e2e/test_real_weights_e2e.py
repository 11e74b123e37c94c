"""The real-weights encoder in the running worker, driven as a user would: a synthetic site's detections go
into Kafka, match events come back from Kafka, the entity and its thumbnail are read over HTTP."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from reid_stream.eval.synth import generate
from tests.e2e.harness import Collector, Worker, auth_headers, get_json, produce, worker_env

pytestmark = pytest.mark.e2e
BOOTSTRAP = "127.0.0.1:9092"


async def test_mobilenetv2_worker_matches_a_synthetic_site(infra, unique, tmp_path: Path):
    site = tmp_path / "site"
    generate(site, ids=3, cameras=2, seed=5, visits_per_id=2, shots_per_visit=2)
    lines = [json.loads(x) for x in (site / "stream.jsonl").read_text().splitlines() if x.strip()]
    env = worker_env(unique, REID_ENCODER="mobilenetv2", REID_IMAGE_ROOTS=str(site),
                     REID_SIMILARITY_THRESHOLD="0.89")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        ready = await worker.wait_ready()
        assert ready["checks"]["model"]["model"].startswith("mobilenetv2.imagenet-dsr-")
        dets = [{k: v for k, v in raw.items() if k not in ("true_id", "crop")} | {"detection_id": f"{unique}-{n}"}
                for n, raw in enumerate(lines)]
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            await produce(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"],
                          [(d["camera_id"].encode(), json.dumps(d).encode()) for d in dets])
            events = await matches.until(lambda items: len(items) >= len(dets), 180, "a match event per detection")
        assert {e["detection_id"] for e in events} == {d["detection_id"] for d in dets}
        assert all(e["model"] == ready["checks"]["model"]["model"] for e in events)
        # Real weights: similarities spread below 1.0 (random weights put unrelated crops near 1.0 too).
        scores = [m["similarity"] for e in events for m in e["matches"]]
        assert scores and min(scores) < 0.99 and all(s <= 1.0 + 1e-6 for s in scores)
        joined = [e for e in events if not e["is_new_entity"]]
        assert joined, "shots of one track are near-duplicates: some must join"
        status, detail, _ = await get_json(f"{worker.base}/api/entities/{joined[0]['entity_id']}")
        assert status == 200 and detail["appearance_count"] >= 2
        async with aiohttp.ClientSession() as http, \
                http.get(worker.base + detail["appearances"][0]["thumbnail_url"], headers=auth_headers()) as resp:
            assert resp.status == 200
            thumb = Image.open(io.BytesIO(await resp.read()))
        assert thumb.format == "JPEG" and thumb.height > thumb.width  # a person's crop, taller than wide
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
