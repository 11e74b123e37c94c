"""GET /ready through the real view: stable codes in the answer, the errors' details only in the log."""

from __future__ import annotations

import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from reid_stream.api.auth import Auditor, Authenticator
from reid_stream.api.views import ReadyView
from reid_stream.encoders.null import NullEncoder
from reid_stream.memory.archive import Archive
from reid_stream.store.reid_store import ReidStore
from reid_stream.worker.app import create_app
from reid_stream.worker.runtime import Runtime
from tests.conftest import make_settings


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FailingKafka:
    """A publisher whose metadata request fails the way `exc` says."""

    def __init__(self, exc: BaseException) -> None:
        async def fetch_all_metadata() -> Any:
            raise exc

        self.client = SimpleNamespace(fetch_all_metadata=fetch_all_metadata)


async def ready(redis_port: int, publisher: Any, **overrides: Any) -> tuple[int, dict[str, Any], str]:
    settings = make_settings("ready", redis_url=f"redis://127.0.0.1:{redis_port}/0", **overrides)
    store = ReidStore.from_settings(settings)
    with ThreadPoolExecutor(1) as pool:
        runtime = Runtime(settings=settings, encoder=NullEncoder(dim=8), store=store, prepare_pool=pool,
                          model_pool=pool, auth=Authenticator.from_settings(settings), auditor=Auditor(False),
                          publisher=publisher, archive=Archive(settings) if settings.archive_url else None)
        app, _ = create_app(settings, lambda: runtime)
        resp = await ReadyView(app, app.web).get(SimpleNamespace(headers={}))
    await store.close()
    return resp.status, json.loads(resp.body), resp.body.decode()


async def test_ready_answers_codes_and_logs_the_details(caplog: pytest.LogCaptureFixture):
    port = closed_port()
    kafka = FailingKafka(KafkaConnectionError(f"Unable to bootstrap from [('127.0.0.1', {port + 1})]"))
    with caplog.at_level(logging.WARNING, logger="reid_stream.api.views"):
        status, body, text = await ready(port, kafka)
    assert status == 503 and body["status"] == "degraded"
    assert body["checks"]["redis"] == {"ok": False, "error_code": "redis_unreachable"}
    assert body["checks"]["kafka"] == {"ok": False, "error_code": "kafka_unreachable"}
    for leak in (str(port), str(port + 1), "127.0.0.1", "Error", "refused", "bootstrap"):
        assert leak not in text, f"/ready leaks {leak!r}: {text}"
    logged = caplog.text
    assert str(port) in logged and str(port + 1) in logged  # the operator still gets the details


async def test_ready_codes_for_a_timeout_and_a_producer_not_started():
    port = closed_port()
    _, body, _ = await ready(port, FailingKafka(TimeoutError()))
    assert body["checks"]["kafka"] == {"ok": False, "error_code": "kafka_timeout"}
    _, body, _ = await ready(port, None)
    assert body["checks"]["kafka"] == {"ok": False, "error_code": "kafka_not_started"}


async def test_an_unreachable_archive_is_reported_but_never_required():
    port = closed_port()
    _, body, text = await ready(port, None, archive_url=f"postgresql://reid@127.0.0.1:{port + 2}/reid")
    assert body["checks"]["archive"] == {"ok": False, "error_code": "archive_unreachable", "required": False,
                                         "archiving": None, "archived": 0}
    assert str(port + 2) not in text
    _, without, _ = await ready(port, None)
    assert "archive" not in without["checks"]
