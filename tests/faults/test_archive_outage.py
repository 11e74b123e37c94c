"""A1: the archive's PostgreSQL stopped in the middle of a stream. Every match event is still published (the
pipeline never waits for the archive), the worker stays ready, and once PostgreSQL is back the archive catches up
with every appearance, none lost and none twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from reid_stream.infra.services import InfraConfig, postgres_down, postgres_up
from tests.e2e.harness import Collector, Worker, free_port, get_json, worker_env
from tests.faults.report import record
from tests.faults.test_outages import paced

pytestmark = pytest.mark.faults
BOOTSTRAP = "127.0.0.1:9092"


async def archive_rows(url: str, tag: str) -> tuple[int, int]:
    """(appearances, distinct detections) of this run in the archive."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT detection_id) AS d FROM archive_appearances "
                                  "WHERE detection_id LIKE $1 AND seen_at IS NOT NULL", f"{tag}-%")
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


async def test_a1_postgres_down_mid_stream_degrades_and_loses_nothing(infra: InfraConfig, unique, tmp_path: Path):
    # A private server (its own port and data dir), so that stopping it touches nobody else.
    port = free_port()
    cfg = replace(infra, cache_dir=tmp_path / "cache", archive_url=f"postgresql://reid@127.0.0.1:{port}/reid")
    url = postgres_up(cfg)
    env = worker_env(unique, REID_ENCODER="null", REID_ARCHIVE_URL=url)
    worker = Worker(env, tmp_path / "worker.log").start()
    n, rate = 400, 25.0  # 16 s of traffic: the outage begins once the archive has some of it
    try:
        await worker.wait_ready()
        async with Collector(BOOTSTRAP, env["REID_TOPIC_MATCHES"]) as matches:
            stream = asyncio.create_task(paced(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], unique, 0, n, rate))
            deadline = time.monotonic() + 30
            while (await get_json(f"{worker.base}/ready"))[1]["checks"]["archive"]["archived"] < 20:
                assert time.monotonic() < deadline and not stream.done(), "nothing archived before the outage"
                await asyncio.sleep(0.2)
            postgres_down(cfg)
            down_at = time.monotonic()
            await asyncio.sleep(3)
            status, ready, _ = await get_json(f"{worker.base}/ready")
            assert status == 200 and ready["ready"], ready  # the stream does not need the archive
            assert not ready["checks"]["archive"]["ok"]
            assert ready["checks"]["archive"]["error_code"] == "archive_unreachable"
            await stream
            # Every match event is published while PostgreSQL is still down.
            await matches.until(lambda items: len({e["detection_id"] for e in items}) >= n, 60, "every match event")
            published_down = time.monotonic() - down_at
            status, ready, _ = await get_json(f"{worker.base}/ready")
            assert ready["checks"]["archive"]["archiving"] is False
            assert ready["checks"]["archive"]["archiving_error_code"] in ("archive_unreachable", "archive_timeout",
                                                                          "archive_error")
        before = ready["checks"]["archive"]["archived"]
        assert 20 <= before < n, "the outage began in the middle of the stream"
        postgres_up(cfg)
        up_at = time.monotonic()
        deadline = up_at + 60
        # Caught up by what PostgreSQL holds, not by /ready's count of rows stored new: a batch whose commit went
        # through as the server stopped (the client saw an error) is stored again as "already there" on the retry,
        # and that count never sees it (seen in CI: 394 of 400 counted, all 400 stored).
        while await archive_rows(url, unique) != (n, n):
            assert time.monotonic() < deadline, f"the archive did not catch up: {await archive_rows(url, unique)}"
            await asyncio.sleep(0.5)
        status, ready, _ = await get_json(f"{worker.base}/ready")
        caught_up = time.monotonic() - up_at
        assert ready["checks"]["archive"]["ok"] and ready["checks"]["archive"]["archiving"]
        assert await archive_rows(url, unique) == (n, n)  # none lost, none twice

        # Down again, and the worker stopped while a batch waits: it exits at once and cleanly, commits nothing of
        # that batch, and the next worker archives it.
        postgres_down(cfg)
        await paced(BOOTSTRAP, env["REID_TOPIC_DETECTIONS"], unique, n, 50, 50.0)
        await asyncio.sleep(3)
        t0 = time.monotonic()
        assert worker.stop(timeout=30) == 0
        stopped_in = time.monotonic() - t0
        postgres_up(cfg)
        worker = Worker(env, tmp_path / "worker2.log").start()
        await worker.wait_ready()
        deadline = time.monotonic() + 60
        while await archive_rows(url, unique) != (n + 50, n + 50):
            assert time.monotonic() < deadline, f"not archived by the next worker: {await archive_rows(url, unique)}"
            await asyncio.sleep(0.5)
        assert worker.stop() == 0
        record("A1 archive outage", {"detections": n + 50, "archived_before_outage": before,
                                     "seconds_down_until_all_published": round(published_down, 1),
                                     "seconds_to_catch_up": round(caught_up, 1),
                                     "seconds_to_stop_while_down": round(stopped_in, 1), "lost": 0})
    finally:
        worker.stop()
        postgres_down(cfg)
