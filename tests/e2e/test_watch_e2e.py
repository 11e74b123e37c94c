"""Watch lists driven as a user would: an entity watched and an image enrolled over HTTP, detections into Kafka,
alerts read from `entity-alerts`, the list and the entity read over HTTP.

The null encoder makes looks exact (the same pixels give the same vector, other pixels a near-orthogonal one), so
the enrolled upload and a detection of the same crop match at 1.0 and nothing else comes near.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import Collector, auth_headers, get_json, running_worker, worker_env
from tests.e2e.test_operator_e2e import BOOTSTRAP, Stream, detection, event_of, frames, send_json

pytestmark = pytest.mark.e2e
QUIET_S = 3.0  # after the last match event: alerts are published right behind their batch's match events


async def post_image(url: str, data: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
            url, data=data, headers={**auth_headers(), "Content-Type": content_type}) as r:
        return r.status, await r.json()


async def test_watched_entity_and_enrolled_image_alert_once_on_entity_alerts(infra, unique, tmp_path: Path):
    root = frames(tmp_path, "abc")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_ALERT_COOLDOWN_SECONDS="60")
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Collector(
                BOOTSTRAP, env["REID_TOPIC_ALERTS"]) as alerts, Stream(env["REID_TOPIC_DETECTIONS"]) as stream:
            await stream.send([detection(unique, root, "a", "porch", n, "1") for n in range(3)])
            await matches.until(lambda items: len(items) >= 3, 60, "the porch tracklet")
            ann = event_of(matches.items, f"{unique}-a0")["entity_id"]

            # Watch her; enrol a look nobody has shown yet.
            status, entry = await send_json(f"{base}/api/watchlist", "POST", {"entity_id": ann, "label": "Ann's ex"})
            assert status == 201, entry
            assert (entry["kind"], entry["watch_id"], entry["entity_id"], entry["label"], entry["by"]) == (
                "entity", ann, ann, "Ann's ex", "tester")
            assert entry["created_at"] is not None
            status, enrolled = await post_image(f"{base}/api/watchlist?label=van%20driver&entity_type=person",
                                                (root / "b.png").read_bytes())
            assert status == 201, enrolled
            assert enrolled["kind"] == "image" and enrolled["by"] == "tester"
            status, listing, _ = await get_json(f"{base}/api/watchlist")
            assert status == 200 and [e["watch_id"] for e in listing["entries"]] == [ann, enrolled["watch_id"]]
            status, detail, _ = await get_json(f"{base}/api/entities/{ann}")
            assert detail["watch"] == "Ann's ex" and detail["retained_until"] is not None
            assert alerts.items == []  # watching alerts on what comes next, not on what was

            # She comes back on the gate for four frames; the enrolled look shows twice on the drive; a stranger.
            await stream.send([detection(unique, root, "a", "gate", 100 + n, "2") for n in range(4)]
                              + [detection(unique, root, "b", "drive", 200 + n, "3") for n in range(2)]
                              + [detection(unique, root, "c", "drive", 300, None)])
            await matches.until(lambda items: len(items) >= 10, 60, "ten match events")
            await alerts.until(lambda items: len(items) >= 2, 30, "two alerts")
            await asyncio.sleep(QUIET_S)
            await alerts.until(lambda items: True, 1, "late alerts")
            by_kind = {a["kind"]: a for a in alerts.items}
            assert len(alerts.items) == 2 and set(by_kind) == {"entity", "image"}, alerts.items
            seen = by_kind["entity"]
            assert (seen["entity_id"], seen["watch_id"], seen["label"], seen["camera_id"], seen["detection_id"]) == (
                ann, ann, "Ann's ex", "gate", f"{unique}-a100")
            assert seen["similarity"] == event_of(matches.items, f"{unique}-a100")["candidates"][0]["similarity"]
            look = by_kind["image"]
            driver = event_of(matches.items, f"{unique}-b200")["entity_id"]
            assert (look["watch_id"], look["label"], look["entity_id"], look["detection_id"], look["camera_id"]) == (
                enrolled["watch_id"], "van driver", driver, f"{unique}-b200", "drive")
            assert look["similarity"] > 0.999 and look["alert_id"] == f"{unique}-b200/{enrolled['watch_id']}"

            # Removed from the list: the look raises nothing more, and the entity stays, unwatched.
            status, gone = await send_json(f"{base}/api/watchlist/{enrolled['watch_id']}", "DELETE", None)
            assert status == 200 and gone["removed"]["watch_id"] == enrolled["watch_id"]
            status, gone = await send_json(f"{base}/api/watchlist/{ann}", "DELETE", None)
            assert status == 200 and gone["removed"]["kind"] == "entity"
            await stream.send([detection(unique, root, "b", "street", 900, None),
                               detection(unique, root, "a", "street", 1000, None)])
            await matches.until(lambda items: len(items) >= 12, 60, "twelve match events")
            await asyncio.sleep(QUIET_S)
            await alerts.until(lambda items: True, 1, "late alerts")
            assert len(alerts.items) == 2
            status, listing, _ = await get_json(f"{base}/api/watchlist")
            assert listing == {"entries": [], "count": 0}
            status, detail, _ = await get_json(f"{base}/api/entities/{ann}")
            assert status == 200 and detail["watch"] is None

            # Clear, machine-readable refusals.
            for method, path, kwargs, want, code in [
                ("DELETE", "/api/watchlist/nobody", {}, 404, "watch_not_found"),
                ("POST", "/api/watchlist", {"json": {"entity_id": "nobody", "label": "x"}}, 404, "entity_not_found"),
                ("POST", "/api/watchlist", {"json": {"entity_id": ann}}, 422, "invalid_body"),
                ("POST", "/api/watchlist", {"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415,
                 "unsupported_media_type"),
                ("POST", "/api/watchlist", {"data": (root / "a.png").read_bytes(),
                                            "headers": {"Content-Type": "image/png"}}, 422, "invalid_label"),
                ("POST", "/api/watchlist?label=x&entity_type=cat", {"data": (root / "a.png").read_bytes(),
                                                                    "headers": {"Content-Type": "image/png"}},
                 422, "invalid_entity_type"),
                ("POST", "/api/watchlist?label=x", {"data": b"not an image",
                                                   "headers": {"Content-Type": "image/png"}}, 400,
                 "image_decode_failed"),
            ]:
                headers = {**auth_headers(), **kwargs.pop("headers", {})}
                async with aiohttp.ClientSession() as http, http.request(method, base + path, headers=headers,
                                                                         **kwargs) as r:
                    body = await r.json()
                    assert (r.status, body.get("error_code")) == (want, code), (method, path, body)
