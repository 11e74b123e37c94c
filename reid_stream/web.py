"""The HTTP views (Faust web). They only read, through the store."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View
from redis.exceptions import RedisError

from reid_stream.events import ENTITY_TYPES, EntityHistory, EntityList
from reid_stream.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from reid_stream.app import Runtime

log = logging.getLogger(__name__)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50


class ParamError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _int_param(query: Any, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(name, f"{name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise ParamError(name, f"{name} must be between {lo} and {hi}" if hi else f"{name} must be >= {lo}")
    return value


def parse_list_params(query: Any) -> dict[str, Any]:
    """Validated query parameters of GET /api/entities; ParamError names the bad one."""
    entity_type = query.get("entity_type") or None
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise ParamError("entity_type", f"entity_type must be one of {', '.join(ENTITY_TYPES)}")
    camera_id = query.get("camera_id") or None
    if camera_id is not None and len(camera_id) > 256:
        raise ParamError("camera_id", "camera_id is longer than 256 characters")
    since = None
    if query.get("since"):
        try:
            when = datetime.fromisoformat(query["since"])
        except ValueError:
            raise ParamError("since", "since must be an ISO 8601 date-time") from None
        if when.tzinfo is None:
            raise ParamError("since", "since must carry a time zone, e.g. 2026-01-01T00:00:00Z")
        since = when.timestamp()
    return {
        "entity_type": entity_type,
        "camera_id": camera_id,
        "since": since,
        "limit": _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        "offset": _int_param(query, "offset", 0, 0, None),
    }


def _param_error(view: View, err: ParamError) -> Response:
    return view.json({"detail": [{"loc": ["query", err.param], "msg": err.message, "type": "value_error"}]},
                     status=422)


def _unavailable(view: View) -> Response:
    return view.json({"detail": "storage unavailable (Redis); retry later"}, status=503)


def register_views(app: faust.App, runtime: Runtime) -> None:
    store = runtime.store

    @app.page("/api/entities")
    class EntityListView(View):
        async def get(self, request: Request) -> Response:
            try:
                params = parse_list_params(request.query)
            except ParamError as err:
                return _param_error(self, err)
            try:
                entities, total = await store.list_entities(**params)
            except (RedisError, OSError) as exc:
                # The design's fallback: an empty page, flagged, and the worker stays up.
                log.warning("entity list without Redis: %r", exc)
                body = EntityList(entities=[], count=0, limit=params["limit"], offset=params["offset"])
                return self.json(body.model_dump(mode="json"), headers={"X-Reid-Degraded": "redis-unavailable"})
            body = EntityList(entities=entities, count=total, limit=params["limit"], offset=params["offset"])
            return self.json(body.model_dump(mode="json"))

    @app.page("/api/entities/{entity_id}")
    class EntityDetailView(View):
        async def get(self, request: Request, entity_id: str) -> Response:
            try:
                detail = await store.get_entity(entity_id)
            except (RedisError, OSError):
                return _unavailable(self)
            if detail is None:
                return self.json({"detail": f"entity {entity_id!r} not found"}, status=404)
            return self.json(detail.model_dump(mode="json"))

    @app.page("/api/entities/{entity_id}/history")
    class EntityHistoryView(View):
        async def get(self, request: Request, entity_id: str) -> Response:
            try:
                detail = await store.get_entity(entity_id)
            except (RedisError, OSError):
                return _unavailable(self)
            if detail is None:
                return self.json({"detail": f"entity {entity_id!r} not found"}, status=404)
            body = EntityHistory(entity_id=detail.entity_id, entity_type=detail.entity_type,
                                 appearances=detail.appearances, count=len(detail.appearances))
            return self.json(body.model_dump(mode="json"))

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset inside content_type=, so the exposition type goes in as a header.
            return self.bytes(runtime.metrics.render(app), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/ready")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            checks = {
                "kafka": await _check_kafka(app),
                "redis": await _check_redis(runtime),
                "model": {"ok": True, "model": runtime.encoder.model_id, "device": runtime.encoder.device},
            }
            ready = all(c["ok"] for c in checks.values())
            return self.json({"ready": ready, "status": "ready" if ready else "degraded", "checks": checks},
                             status=200 if ready else 503)


async def _check_redis(runtime: Runtime) -> dict[str, Any]:
    try:
        await asyncio.wait_for(runtime.store.ping(), timeout=2)
        return {"ok": True, "pipeline_storing": runtime.redis_ok}
    except (RedisError, OSError, TimeoutError) as exc:
        return {"ok": False, "error": repr(exc)}


async def _check_kafka(app: faust.App) -> dict[str, Any]:
    client = getattr(getattr(app.producer, "_producer", None), "client", None)
    if client is None:
        return {"ok": False, "error": "producer not started"}
    try:
        ok = await asyncio.wait_for(client.fetch_all_metadata(), timeout=3) is not None
        return {"ok": ok, "rebalancing": bool(app.rebalancing)}
    except Exception as exc:  # any client error means "not reachable now"
        return {"ok": False, "error": repr(exc)}
