"""Retrying an infrastructure step (Redis, Kafka, PostgreSQL) with capped exponential backoff.

The stages and the archiver share it: a batch stays uncommitted while its step fails, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from reid_stream.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0


async def retry_forever(what: str, op: Callable[[], Awaitable[T]], metrics: Metrics | None = None) -> T:
    """Retry an infrastructure step with capped exponential backoff; the batch stays unacked meanwhile.

    If the worker is told to stop while the step still fails, it exits at once: the batch stays
    uncommitted and is redelivered to whichever worker takes its partitions.
    """
    delay = BACKOFF_START_S
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            log.critical("stopping while %s still failing: exiting without committing this batch", what)
            os._exit(75)
        except (RedisError, OSError, RuntimeError, KafkaError) as exc:
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            if metrics is not None:
                metrics.retries.labels(what).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
