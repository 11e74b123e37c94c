"""The long-term memory, driven as a user would: detections into Kafka, corrections over HTTP; once Redis has
forgotten the entities, the views answer from the archive (a real PostgreSQL), and an erasure reaches it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from reid_stream.config import Settings
from tests.e2e.harness import REPO, Collector, get_json, running_worker, worker_env
from tests.e2e.test_operator_e2e import BOOTSTRAP, Stream, detection, event_of, frames, send_json

pytestmark = pytest.mark.e2e


async def archived(base: str, at_least: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until the archiver stored this many appearances (as /ready reports it)."""
    deadline = time.monotonic() + timeout
    while True:
        _, ready, _ = await get_json(f"{base}/ready")
        check = ready["checks"]["archive"]
        if check["archived"] >= at_least:
            return check
        assert time.monotonic() < deadline, f"archived {check} of {at_least}"
        await asyncio.sleep(0.3)


async def forget(prefix: str) -> int:
    """What the TTL would do, at once: every Redis key of this worker goes."""
    client = aioredis.Redis.from_url(Settings.from_env().redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def until_archived(url: str, check, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = await get_json(url)
        if status == 200 and check(body):
            return body
        assert time.monotonic() < deadline, f"{url}: {status} {body}"
        await asyncio.sleep(0.3)


async def test_views_answer_from_the_archive_once_redis_forgot(infra, archive_url, unique, tmp_path: Path):
    root = frames(tmp_path, "yw")
    env = worker_env(unique, REID_ENCODER="null", REID_IMAGE_ROOTS=str(root), REID_SIMILARITY_THRESHOLD="0.9",
                     REID_ARCHIVE_URL=archive_url)
    async with running_worker(env, tmp_path / "worker.log") as worker:
        base = worker.base
        status, ready, _ = await get_json(f"{base}/ready")
        assert status == 200 and ready["checks"]["archive"]["ok"] and not ready["checks"]["archive"]["required"]
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches, Stream(
                env["REID_TOPIC_DETECTIONS"]) as stream:
            await stream.send([detection(unique, root, "y", "porch", n, "1") for n in range(3)]
                              + [detection(unique, root, "w", "yard", n, "2") for n in range(2)]
                              # The same person and detection ids at another site: another entity, archived apart.
                              + [{**detection(unique, root, "y", "porch", n, "1"), "site_id": "annex"}
                                 for n in range(3)])
            await matches.until(lambda items: len(items) >= 8, 60, "eight match events")
        ann, other = event_of(matches.items, f"{unique}-y0")["entity_id"], \
            event_of(matches.items, f"{unique}-w0")["entity_id"]
        status, body = await send_json(f"{base}/api/entities/{ann}", "PATCH", {"name": "Ann", "trust": "trusted"})
        assert status == 200, body
        status, body = await send_json(f"{base}/api/entities/{ann}/merge", "POST", {"other_id": other})
        assert status == 200, body
        live = await until_archived(f"{base}/api/entities/{ann}", lambda b: b["appearance_count"] == 5)
        assert live["source"] == "live"
        await archived(base, 8)

        assert await forget(env["REID_REDIS_PREFIX"]) > 0
        # The name and the merge travel on entity-updates: the archive has them a moment after the rows.
        detail = await until_archived(f"{base}/api/entities/{other}", lambda b: b["name"] == "Ann")
        assert (detail["source"], detail["id"], detail["resolved_from"], detail["trust"]) == (
            "archive", ann, other, "trusted")
        assert detail["merged_ids"] == [other] and detail["cameras_seen"] == ["porch", "yard"]
        # The same appearances, in the same order (time, then id), with the same scores as Redis gave them.
        assert [(a["detection_id"], a["similarity_score"], a["timestamp"]) for a in detail["appearances"]] == [
            (a["detection_id"], a["similarity_score"], a["timestamp"]) for a in live["appearances"]]
        assert {a["detection_id"] for a in detail["appearances"]} == {f"{unique}-{d}" for d in
                                                                       ("y0", "y1", "y2", "w0", "w1")}
        status, history, _ = await get_json(f"{base}/api/entities/{ann}/history")
        assert status == 200 and (history["source"], history["count"]) == ("archive", 5)
        status, annex, _ = await get_json(f"{base}/api/entities/{ann}?site_id=annex")
        assert status == 200 and (annex["source"], annex["site_id"], annex["appearance_count"], annex["name"]) == (
            "archive", "annex", 3, None), "the other site's entity: its own rows, not the name given at this one"
        assert all(a["thumbnail_url"].endswith("?site_id=annex") for a in annex["appearances"])
        # The live list has forgotten them; the archive's lists them, per site, merged entity folded in.
        status, listed, _ = await get_json(f"{base}/api/entities")
        assert status == 200 and listed["count"] == 0
        # (The archive is a database that outlives test runs: this run's entities are the ones named after it.)
        status, listed, _ = await get_json(f"{base}/api/entities?source=archive&camera_id=porch&limit=1000")
        assert status == 200 and [(e["id"], e["source"], e["merged_ids"], e["name"], e["appearance_count"])
                                  for e in listed["entities"] if e["id"].startswith(unique)] == [
            (ann, "archive", [other], "Ann", 5)]
        status, listed, _ = await get_json(f"{base}/api/entities?source=archive&site_id=annex&limit=1000")
        assert status == 200 and [(e["id"], e["site_id"], e["appearance_count"]) for e in listed["entities"]
                                  if e["id"].startswith(unique)] == [(ann, "annex", 3)]
        status, bad, _ = await get_json(f"{base}/api/entities?source=attic")
        assert status == 422 and bad["detail"][0]["loc"] == ["query", "source"]

        # Erasure reaches the archive, and what only the archive holds is erased there.
        status, erased, _ = await get_json(f"{base}/api/entities/{ann}", method="DELETE")
        assert status == 200, erased
        assert (erased["purged"]["source"], erased["purged"]["archive"]) == ("archive", "erased")
        assert sorted(erased["purged"]["detections"]) == sorted(a["detection_id"] for a in detail["appearances"])
        for eid in (ann, other):
            status, _, _ = await get_json(f"{base}/api/entities/{eid}")
            assert status == 404
        status, annex, _ = await get_json(f"{base}/api/entities/{ann}?site_id=annex")
        assert status == 200 and annex["appearance_count"] == 3, "an erasure at one site leaves the other's"
        # The CLI erases what only the archive holds, at the site it names.
        done = subprocess.run([sys.executable, "-m", "reid_stream", "purge", "--site", "annex", "--entity", ann],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        purged = json.loads(done.stdout)["purged"]
        assert (purged["source"], purged["archive"], len(purged["detections"])) == ("archive", "erased", 3)
        status, _, _ = await get_json(f"{base}/api/entities/{ann}?site_id=annex")
        assert status == 404
