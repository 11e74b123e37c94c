"""Shared fixtures. Tests that need Kafka or Redis start them (or reuse running ones) and never skip."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub

from reid_stream.config import Settings
from reid_stream.infra.services import DEFAULT_ARCHIVE_URL, InfraConfig, postgres_up, up

TINY_MODEL = "reid-tiny-vit"


BROWSER_TESTS = Path(__file__).resolve().parent / "browser"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: the entity browser in headless Chromium (make test-browser)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/browser runs only when named (`make test-browser`), as tests/faults does: `make test` needs no browser."""
    if collection_path != BROWSER_TESTS:
        return None
    named = [(config.invocation_params.dir / a.split("::")[0]).resolve() for a in config.args]
    return not any(p.is_relative_to(BROWSER_TESTS) for p in named) or None


_USED_INFRA: list[InfraConfig] = []
_TAGS: set[str] = set()  # every per-test tag: its topics are deleted when the session ends


@pytest.fixture(scope="session")
def infra() -> InfraConfig:
    """Real Kafka and Redis: started here if they are not running. Failing to start them fails the test."""
    cfg = InfraConfig.from_env()
    up(cfg)
    _USED_INFRA.append(cfg)
    return cfg


@pytest.fixture(scope="session")
def archive_url(infra: InfraConfig) -> str:
    """A real PostgreSQL for the archive (REID_ARCHIVE_URL, or the local default), started here if it is not
    running; failing to start it fails the test, never skips it."""
    from dataclasses import replace

    return postgres_up(replace(infra, archive_url=infra.archive_url or DEFAULT_ARCHIVE_URL))


def _ours(topic: str) -> bool:
    return any(topic.endswith(f"-{tag}") or f"-{tag}-" in topic for tag in _TAGS)


async def _delete_test_topics(bootstrap: str) -> int:
    """Delete this session's topics, so that a long-lived broker does not pile up thousands of partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if _ours(t)]
        for i in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[i:i + 100])
        return len(doomed)
    finally:
        await admin.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Privacy: after a run that used Redis, every key in it must carry a TTL. Then the run's topics go."""
    if not _USED_INFRA:
        return
    import asyncio

    import redis

    client = redis.Redis.from_url(Settings.from_env().redis_url)
    immortal = [k for k in client.scan_iter(count=1000) if client.ttl(k) == -1]
    scanned = client.dbsize()
    client.close()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"privacy scan: {scanned} Redis keys, {len(immortal)} without a TTL")
    if immortal:
        if reporter is not None:
            reporter.write_line(f"keys without TTL: {immortal[:20]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    cfg = _USED_INFRA[0]
    try:
        deleted = asyncio.run(_delete_test_topics(f"{cfg.kafka_host}:{cfg.kafka_port}"))
    except Exception as exc:  # housekeeping must not change the run's verdict
        deleted = f"none ({exc!r})"
    if reporter is not None:
        reporter.write_line(f"topics deleted: {deleted}")


@pytest.fixture
def unique() -> str:
    tag = uuid.uuid4().hex[:10]
    _TAGS.add(tag)
    return tag


def make_settings(tag: str, **overrides: object) -> Settings:
    """Settings isolated by tag: own topics, consumer group and Redis key prefix."""
    _TAGS.add(tag)
    base = dict(
        app_id=f"reid-test-{tag}", topic_detections=f"det-{tag}", topic_matches=f"matches-{tag}",
        topic_updates=f"updates-{tag}", topic_dlq=f"dlq-{tag}", topic_embedded=f"emb-{tag}",
        topic_alerts=f"alerts-{tag}",
        redis_prefix=f"reidtest:{tag}",
        clip_model=TINY_MODEL, clip_pretrained="none", device="cpu", similarity_threshold=0.9995,
    )
    base.update(overrides)
    return Settings.from_env({}, **base)


@pytest.fixture
async def redis_client(infra: InfraConfig) -> AsyncIterator[object]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(Settings.from_env().redis_url)
    yield client
    await client.aclose()


def pattern_image(seed: int, size: tuple[int, int] = (48, 96)) -> Image.Image:
    """A crop with its own colours and stripes; different seeds give clearly different images."""
    import random

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle((x0, y0, x0 + rng.randrange(4, size[0]), y0 + rng.randrange(4, size[1])),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def image_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "images"
    root.mkdir()
    yield root
