"""What every benchmark shares: the machine description, result files, a worker process, and traffic."""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from tests.e2e.harness import Worker, free_port  # noqa: E402
from tests.e2e.harness import worker_env as _harness_env  # noqa: E402

__all__ = ["REPO", "RESULTS", "Worker", "free_port", "worker_env"]
_RUNS: set[str] = set()  # the tags of this process's workers: their topics and keys go when it exits


def worker_env(tag: str, repo: Path = REPO, **extra: str) -> dict[str, str]:
    """The test harness's worker environment (topics and keys of its own per tag), remembered for clean-up."""
    env = _harness_env(tag, repo, **extra)
    if not _RUNS:
        atexit.register(forget_runs)
    _RUNS.add(tag)
    return env


def forget_runs() -> None:
    """Delete the benchmark's topics and Redis keys. The broker and Redis outlive it (and serve the tests):
    left behind, a day of benchmarks was 5 GB of Kafka logs and ~360,000 Redis keys, and the tests' key scans
    slowed a hundredfold (0.26 s -> 34 s for one test's teardown)."""
    import redis

    from reid_stream.config import Settings
    from tests.conftest import _TAGS, _delete_test_topics

    wanted = ("REID_KAFKA_BOOTSTRAP", "REID_REDIS_URL")
    settings = Settings.from_env({k: v for k, v in os.environ.items() if k in wanted})
    _TAGS.update(_RUNS)  # the tests' own clean-up deletes the topics of the tags it knows

    try:
        asyncio.run(_delete_test_topics(settings.kafka_bootstrap))
        client = redis.Redis.from_url(settings.redis_url)
        for tag in _RUNS:
            batch = []
            for key in client.scan_iter(match=f"reide2e:{tag}:*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        client.close()
    except Exception as exc:  # housekeeping must not hide the results
        print(f"   clean-up incomplete: {exc!r}")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cores": os.cpu_count(), "cpu": cpu, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "when": datetime.now(UTC).isoformat()}


def announce(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    info = machine()
    print(f"== {name} on {info['cores']} cores, {info['cpu']}, torch threads {info['torch_threads']}")
    print(f"   settings: {json.dumps(settings)}")
    return info


def write_results(name: str, payload: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def bar_plot(name: str, title: str, labels: list[str], values: list[float], ylabel: str,
             target: float | None = None) -> None:
    """A labelled bar chart, with the target as a dashed line, saved as bench/results/<name>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(labels, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.3g")
    if target is not None:
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g}")
        ax.legend()
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": statistics.median(ordered), "p95": at(0.95), "p99": at(0.99), "n": len(ordered)}


def crop_jpeg(seed: int, size: tuple[int, int] = (64, 128)) -> bytes:
    """A small camera-like crop; distinct per seed (the tests' pattern images, as JPEG)."""
    from tests.conftest import encode_jpeg, pattern_image

    return encode_jpeg(pattern_image(seed, size), quality=90)


def detection_message(i: int, image: bytes, tag: str) -> tuple[bytes, bytes]:
    cam = f"cam-{i % 8}"
    det = {"detection_id": f"{tag}-{i}", "camera_id": cam, "entity_type": "person" if i % 3 else "vehicle",
           "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 64, "y2": 128},
           "image_b64": base64.b64encode(image).decode()}
    return cam.encode(), json.dumps(det).encode()


async def create_topics(env: dict[str, str]) -> None:
    """The worker's topics, made before it starts, so a backlog can wait for it."""
    from reid_stream.config import Settings
    from reid_stream.stream.topics import ensure_topics

    await ensure_topics(Settings.from_env(env))


async def produce_fast(bootstrap: str, topic: str, messages: Any) -> None:
    """Many sends in flight at once; returns once the broker acknowledged every one."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def cpu_times(workers: Collection[int] = ()) -> tuple[dict[str, float], float]:
    """CPU seconds so far by process role (worker, decoders, kafka, redis, other), and the machine's total.

    With `workers` (pids), only those workers and their own decode processes count as worker and decoders:
    other workers on a shared machine (another checkout's tests) are outside load, not this run's CPU."""
    tick = os.sysconf("SC_CLK_TCK")
    roles: dict[str, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        role = ("decoders" if "multiprocessing.spawn" in cmd else "worker" if "reid_stream worker" in cmd else
                "kafka" if "kafka" in cmd and "java" in cmd else "redis" if "redis-server" in cmd else "other")
        if workers and role in ("worker", "decoders"):
            mine = int(pid) in workers if role == "worker" else int(fields[1]) in workers  # fields[1]: parent
            role = role if mine else "other"
        roles[role] = roles.get(role, 0.0) + used
    total = sum(int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]) / tick
    return roles, total


def cpu_share(before: tuple[dict[str, float], float], after: tuple[dict[str, float], float]) -> dict[str, float]:
    """Each role's share of the machine (1.0 = all cores) between two cpu_times() snapshots."""
    span = max(1e-9, after[1] - before[1])
    return {role: round((after[0].get(role, 0.0) - before[0].get(role, 0.0)) / span, 3)
            for role in sorted(after[0])}


def start_worker(tag: str, log: Path, **env: str) -> Worker:
    return Worker(worker_env(tag, REID_WEB_PORT=str(free_port()), REID_LOG_LEVEL="warning", **env), log).start()


async def drain_matches(bootstrap: str, topic: str, expected: int, timeout: float,
                        on_record: Callable[[Any], None] | None = None, progress: Any = None) -> float:
    """Consume `expected` match events; returns the wall time of the last one."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"bench-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
                                max_poll_records=2000)
    await consumer.start()
    seen: set[bytes] = set()
    last = time.time()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            now = time.time()
            for records in batch.values():
                for rec in records:
                    det_id = json.loads(rec.value)["detection_id"].encode()
                    if det_id in seen:
                        continue
                    seen.add(det_id)
                    last = now
                    if on_record is not None:
                        on_record(rec)
                    if progress is not None:
                        progress.update(1)
    finally:
        await consumer.stop()
    if len(seen) < expected:
        raise RuntimeError(f"only {len(seen)}/{expected} match events within {timeout}s")
    return last


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def passthrough_drain(bootstrap: str, n: int, crops: list[bytes], partitions: int = 6) -> dict[str, Any]:
    """The same backlog the pipeline drains, moved by bare aiokafka: consume in batches (getmany), produce each
    message's value to another topic, wait for the acknowledgements, commit; as the pipeline's stages do, without
    their work. Its rate is what Kafka and this client allow one process: the pipeline's ceiling."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-pt-in-{tag}", f"bench-pt-out-{tag}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in (source, sink)])
        await produce_fast(bootstrap, source, (detection_message(i, crops[i % len(crops)], tag) for i in range(n)))
        consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=f"bench-pt-{tag}", enable_auto_commit=False, max_poll_records=2000)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True)
        await consumer.start()
        await producer.start()
        stamps: list[int] = []
        try:
            moved = 0
            while moved < n:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                futures = [await producer.send(sink, r.value, key=r.key) for rs in batch.values() for r in rs]
                for meta in await asyncio.gather(*futures):
                    stamps.append(meta.timestamp)
                moved += len(futures)
                if futures:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()
    finally:
        try:
            await admin.delete_topics([source, sink])
        finally:
            await admin.close()
    return {"per_s": (n - 1) / max(1e-9, (max(stamps) - min(stamps)) / 1000), "n": n}
