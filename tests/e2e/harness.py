"""Runs the worker as its own process and talks to it only through Kafka and HTTP, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[2]
TEST_TOKEN = "t0k-" + os.urandom(12).hex()  # a fresh API token per test session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(tag: str, repo: Path = REPO, **extra: str) -> dict[str, str]:
    """The worker's environment: fresh topics and Redis keys per tag; `repo` is the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_")}
    env.update({
        "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1",
        "REID_APP_ID": f"reid-e2e-{tag}", "REID_TOPIC_DETECTIONS": f"det-{tag}",
        "REID_TOPIC_MATCHES": f"matches-{tag}", "REID_TOPIC_UPDATES": f"updates-{tag}",
        "REID_TOPIC_DLQ": f"dlq-{tag}", "REID_TOPIC_EMBEDDED": f"emb-{tag}", "REID_TOPIC_ALERTS": f"alerts-{tag}",
        "REID_REDIS_PREFIX": f"reide2e:{tag}", "REID_CLIP_MODEL": "reid-tiny-vit", "REID_CLIP_PRETRAINED": "none",
        "REID_DEVICE": "cpu", "REID_SIMILARITY_THRESHOLD": "0.9995", "REID_BATCH_MAX_LATENCY_MS": "20",
        "REID_WEB_PORT": str(free_port()), "REID_API_TOKENS": f"tester:{TEST_TOKEN}",
        "REID_SESSION_TIMEOUT_SECONDS": "6",
    })
    env.update(extra)
    return env


class Worker:
    """`python -m reid_stream worker` run from `repo` (by default this checkout; the A/B bench passes another)."""

    def __init__(self, env: dict[str, str], log_path: Path, repo: Path = REPO) -> None:
        self.env = env
        self.log_path = log_path
        self.repo = repo
        self.port = int(env["REID_WEB_PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen([sys.executable, "-m", "reid_stream", "worker"], env=self.env, cwd=self.repo,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.alive(), f"worker exited:\n{self.log_tail()}"
                try:
                    async with http.get(self.base + "/ready") as r:
                        if r.status == 200:
                            return await r.json()
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker ignored SIGTERM for {timeout}s:\n{self.log_tail()}") from None


@asynccontextmanager
async def running_worker(env: dict[str, str], log: Path) -> AsyncIterator[Worker]:
    """A worker started and ready; stopped on the way out, and required to exit cleanly (code 0) unless the
    body failed (its own error then says more)."""
    worker = Worker(env, log).start()
    failed = True
    try:
        await worker.wait_ready()
        yield worker
        failed = False
    finally:
        code = worker.stop()
    assert failed or code == 0, f"the worker exited with {code}:\n{worker.log_tail()}"


def start_redis(port: int, workdir: Path) -> None:
    """A private redis-server on loopback, saving to workdir only when told to (SHUTDOWN SAVE)."""
    import shutil

    workdir.mkdir(exist_ok=True)
    subprocess.run([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no", "--daemonize", "yes", "--dir", str(workdir),
                    "--pidfile", str(workdir / "redis.pid")], check=True)
    from reid_stream.infra.services import redis_ping

    deadline = time.monotonic() + 10
    while not redis_ping("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise AssertionError("private redis did not start")
        time.sleep(0.1)


def stop_redis(port: int, save: bool = False) -> None:
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "save" if save else "nosave"], check=False,
                   capture_output=True)


def auth_headers(token: str | None = TEST_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def get_json(url: str, token: str | None = TEST_TOKEN, method: str = "GET") -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=auth_headers(token)) as r:
        return r.status, await r.json(), dict(r.headers)


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset per partition of topic (absent: nothing committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


class Collector:
    """A plain consumer of one topic, from the beginning, collecting JSON values."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         group_id=None, enable_auto_commit=False)
        self.items: list[dict[str, Any]] = []

    async def __aenter__(self) -> Collector:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, done, timeout: float, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.items):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {json.dumps(self.items)[:2000]}")
            batch = await self.consumer.getmany(timeout_ms=300)
            for records in batch.values():
                self.items.extend(json.loads(r.value) for r in records)
        return self.items
