"""The API under load and under schemathesis, while the pipeline runs."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import TEST_TOKEN, Collector, Worker, auth_headers, worker_env
from tests.faults.report import record
from tests.faults.test_outages import paced

pytestmark = pytest.mark.faults
CLIENTS, SECONDS = 200, 30


@pytest.fixture
async def busy_worker(infra, unique, tmp_path: Path):
    env = worker_env(unique, REID_CLIP_MODEL="reid-tiny-clip")  # tiny-vit's tower, plus a text tower to search
    worker = Worker(env, tmp_path / "worker.log").start()
    await worker.wait_ready()
    await paced("127.0.0.1:9092", env["REID_TOPIC_DETECTIONS"], unique, 0, 200, rate=400)
    async with Collector("127.0.0.1:9092", env["REID_TOPIC_MATCHES"]) as matches:
        await matches.until(lambda items: len(items) >= 200, 120, "the first 200 match events")
    entity_ids = sorted({e["entity_id"] for e in matches.items})
    traffic = asyncio.create_task(paced("127.0.0.1:9092", env["REID_TOPIC_DETECTIONS"], unique, 200, 3000,
                                        rate=60))
    yield worker, entity_ids
    traffic.cancel()
    code = worker.stop()
    assert code == 0, worker.log_tail()


async def test_200_concurrent_readers_for_30s_get_no_errors(busy_worker):
    worker, entity_ids = busy_worker
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + SECONDS

    async def client(n: int, http: aiohttp.ClientSession) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            eid = rng.choice(entity_ids)
            path = rng.choice([f"/api/entities?limit={rng.randint(1, 100)}", f"/api/entities/{eid}",
                               f"/api/entities/{eid}/history", "/api/entities?entity_type=vehicle&camera_id=cam-1"])
            t0 = time.perf_counter()
            try:
                async with http.get(worker.base + path, headers=auth_headers()) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(f"{resp.status} {path}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{exc!r} {path}")
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(client(n, http) for n in range(CLIENTS)))
    assert worker.alive()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    record("API load", {"clients": CLIENTS, "seconds": SECONDS, "requests": len(latencies), "errors": len(errors),
                        "p50_ms": round(1000 * p50, 1), "p99_ms": round(1000 * p99, 1),
                        "requests_per_s": round(len(latencies) / SECONDS)})
    assert errors == []


def test_schemathesis_finds_no_server_errors(busy_worker, tmp_path: Path):
    worker, _ = busy_worker
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{worker.base}/api/openapi.json",
         "-H", f"Authorization: Bearer {TEST_TOKEN}", "--checks", "not_a_server_error", "--max-examples", "60",
         "--seed", "1", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    record("schemathesis", {"server_errors": 0, "summary": done.stdout.strip().splitlines()[-1]})
