"""A demo producer: synthetic identities walk past several cameras; prints match events and the entity list."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import uuid
from datetime import UTC, datetime

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image, ImageDraw

from reid_stream.config import Settings


def render_identity(seed: int, kind: str) -> Image.Image:
    """A crop with its own colours and stripes, so different identities embed differently."""
    rng = random.Random(seed)
    w, h = (48, 112) if kind == "person" else (128, 72)
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        draw.rectangle((x0, y0, x0 + rng.randrange(4, w), y0 + rng.randrange(4, h // 2)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def frame_with(crop: Image.Image, seed: int) -> tuple[bytes, dict[str, int]]:
    """Paste the crop into a camera frame at a random place; returns PNG bytes and the bbox."""
    rng = random.Random(seed)
    frame = Image.new("RGB", (320, 240), (rng.randrange(60), rng.randrange(60), rng.randrange(60)))
    x, y = rng.randrange(320 - crop.width), rng.randrange(240 - crop.height)
    frame.paste(crop, (x, y))
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    return buf.getvalue(), {"x1": x, "y1": y, "x2": x + crop.width, "y2": y + crop.height}


def demo_detections(count: int, cameras: int, identities: int = 5, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    kinds = {i: ("person" if i % 2 == 0 else "vehicle") for i in range(identities)}
    crops = {i: render_identity(1000 + i, kinds[i]) for i in range(identities)}
    out = []
    for n in range(count):
        ident = n if n < identities else rng.randrange(identities)  # everyone appears at least once
        cam = f"cam-{rng.randrange(cameras) + 1}"
        data, bbox = frame_with(crops[ident], seed * 100_000 + n)
        out.append({
            "detection_id": f"demo-{uuid.uuid4().hex[:12]}",
            "camera_id": cam,
            "camera_name": f"Camera {cam[4:]}",
            "entity_type": kinds[ident],
            "timestamp": datetime.now(UTC).isoformat(),
            "bbox": bbox,
            "image_b64": base64.b64encode(data).decode(),
            "attributes": {"confidence": round(rng.uniform(0.6, 0.99), 2), "demo_identity": ident},
        })
    return out


async def run_demo(settings: Settings, count: int, cameras: int, wait_seconds: float) -> int:
    consumer = AIOKafkaConsumer(settings.topic_matches, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"reid-demo-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest")
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        while not consumer.assignment():  # wait for the group join, so no match event is missed
            await asyncio.sleep(0.1)
        await consumer.seek_to_end()
        dets = demo_detections(count, cameras)
        ids = {d["detection_id"] for d in dets}
        for d in dets:
            await producer.send_and_wait(settings.topic_detections, json.dumps(d).encode(),
                                         key=d["camera_id"].encode())
        print(f"produced {len(dets)} detections of 5 identities from {cameras} cameras "
              f"to '{settings.topic_detections}'")
        seen: set[str] = set()
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while seen != ids and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    ev = json.loads(rec.value)
                    if ev["detection_id"] not in ids or ev["detection_id"] in seen:
                        continue
                    seen.add(ev["detection_id"])
                    best = ev["matches"][0]["similarity"] if ev["matches"] else None
                    print(f"  {ev['camera_id']:6} {ev['entity_type']:7} {ev['detection_id']} -> entity "
                          f"{ev['entity_id']} {'NEW' if ev['is_new_entity'] else 'match'}"
                          + (f" (similarity {best:.3f})" if best is not None else ""))
        print(f"received {len(seen)}/{len(ids)} match events from '{settings.topic_matches}'")
        url = f"http://{settings.web_host}:{settings.web_port}/api/entities?limit=10"
        token = settings.api_tokens[0].partition(":")[2] if settings.api_tokens else ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
            print(f"GET {url} -> {resp.status}")
            print(json.dumps(await resp.json(), indent=2))
        print(f"Try it: curl -H 'Authorization: Bearer {token}' '{url}'")
        return 0 if seen == ids else 1
    finally:
        await producer.stop()
        await consumer.stop()
