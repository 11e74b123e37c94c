"""The HTTP views (Faust web). They read through the store; the only write is an erasure (DELETE)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from faust.web import Request, Response, View
from pydantic import BaseModel
from redis.exceptions import RedisError

from reid_stream.auth import Auditor, Authenticator
from reid_stream.events import ENTITY_TYPES, EntityDetail, EntityHistory, EntityList
from reid_stream.metrics import CONTENT_TYPE
from reid_stream.openapi import build_openapi

if TYPE_CHECKING:
    from reid_stream.app import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_ID = 256


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
    if camera_id is not None and len(camera_id) > MAX_ID:
        raise ParamError("camera_id", f"camera_id is longer than {MAX_ID} characters")
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
        "offset": _int_param(query, "offset", 0, 0, 10_000_000),
    }


def register_views(app: faust.App, runtime: Runtime) -> None:
    store = runtime.store
    auth = Authenticator.from_settings(runtime.settings)
    auditor = Auditor(runtime.settings.audit_log, runtime.settings.audit_log_file)
    if auth.required and not auth.tokens:
        log.warning("REID_API_AUTH is on but no tokens are configured (REID_API_TOKENS / REID_API_TOKEN_FILE): "
                    "every /api request will get 401")

    class ApiView(View):
        """Checks the bearer token, answers JSON errors, and audits entity queries."""

        audited = True

        def guard(self, request: Request, protected: bool = True) -> tuple[str | None, Response | None]:
            if not protected or not auth.required:
                return None, None
            who = auth.identify(request.headers.get("Authorization"))
            if who is None:
                return None, self.json({"detail": "missing or invalid bearer token"}, status=401,
                                       headers={"WWW-Authenticate": 'Bearer realm="reid-stream"'})
            return who, None

        def done(self, request: Request, who: str | None, params: dict[str, Any], response: Response) -> Response:
            auditor.record(who, request.method, request.path, params, response.status)
            return response

        def model(self, body: BaseModel, status: int = 200) -> Response:
            # pydantic's own serializer: several times faster than model_dump() followed by json.dumps().
            return self.bytes(body.model_dump_json().encode(), status=status,
                              headers={"Content-Type": "application/json"})

        def unavailable(self) -> Response:
            return self.json({"detail": "storage unavailable (Redis); retry later"}, status=503)

        def not_found(self, entity_id: str) -> Response:
            return self.json({"detail": f"entity {entity_id!r} not found"}, status=404)

        async def on_entity(self, request: Request, entity_id: str, fetch: Callable[[str], Awaitable[T | None]],
                            render: Callable[[T], Response]) -> Response:
            """The shared path of the per-entity routes: token, id check, Redis errors, 404, audit."""
            who, denied = self.guard(request)
            if denied:
                return denied
            params = {"entity_id": entity_id}
            if not 0 < len(entity_id) <= MAX_ID:
                return self.done(request, who, params, self.json(
                    {"detail": [{"loc": ["path", "entity_id"], "type": "value_error",
                                 "msg": f"entity_id must have 1 to {MAX_ID} characters"}]}, status=422))
            try:
                found = await fetch(entity_id)
            except (RedisError, OSError):
                return self.done(request, who, params, self.unavailable())
            if found is None:
                return self.done(request, who, params, self.not_found(entity_id))
            return self.done(request, who, params, render(found))

    @app.page("/api/entities")
    class EntityListView(ApiView):
        async def get(self, request: Request) -> Response:
            who, denied = self.guard(request)
            if denied:
                return denied
            query = dict(request.query)
            try:
                params = parse_list_params(request.query)
            except ParamError as err:
                return self.done(request, who, query, self.json(
                    {"detail": [{"loc": ["query", err.param], "msg": err.message, "type": "value_error"}]},
                    status=422))
            try:
                entities, total = await store.list_entities(**params)
            except (RedisError, OSError) as exc:
                # The design's fallback: an empty page, flagged, and the worker stays up.
                log.warning("entity list without Redis: %r", exc)
                body = EntityList(entities=[], count=0, limit=params["limit"], offset=params["offset"])
                return self.done(request, who, query, self.json(
                    body.model_dump(mode="json"), headers={"X-Reid-Degraded": "redis-unavailable"}))
            body = EntityList(entities=entities, count=total, limit=params["limit"], offset=params["offset"])
            return self.done(request, who, query, self.model(body))

    @app.page("/api/entities/{entity_id}")
    class EntityDetailView(ApiView):
        async def get(self, request: Request, entity_id: str) -> Response:
            return await self.on_entity(request, entity_id, store.get_entity, self.model)

        async def delete(self, request: Request, entity_id: str) -> Response:
            def erased(purged: dict[str, Any]) -> Response:
                log.info("entity %s erased (%d detections)", entity_id, len(purged["detections"]))
                return self.json({"purged": purged})

            return await self.on_entity(request, entity_id, store.purge_entity, erased)

    @app.page("/api/entities/{entity_id}/history")
    class EntityHistoryView(ApiView):
        async def get(self, request: Request, entity_id: str) -> Response:
            def history(detail: EntityDetail) -> Response:
                return self.model(EntityHistory(entity_id=detail.entity_id, entity_type=detail.entity_type,
                                                appearances=detail.appearances, count=len(detail.appearances)))

            return await self.on_entity(request, entity_id, store.get_entity, history)

    openapi = build_openapi()

    @app.page("/api/openapi.json")
    class OpenApiView(ApiView):
        async def get(self, request: Request) -> Response:
            _, denied = self.guard(request)
            return denied or self.json(openapi)

    ops = runtime.settings.protect_ops

    @app.page("/health")
    class HealthView(ApiView):
        async def get(self, request: Request) -> Response:
            _, denied = self.guard(request, ops)
            return denied or self.json({"status": "ok"})

    @app.page("/metrics")
    class MetricsView(ApiView):
        async def get(self, request: Request) -> Response:
            _, denied = self.guard(request, ops)
            if denied:
                return denied
            await runtime.metrics.update_lag(runtime.consumers)
            # aiohttp refuses a charset inside content_type=, so the exposition type goes in as a header.
            return self.bytes(runtime.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/ready")
    class ReadyView(ApiView):
        async def get(self, request: Request) -> Response:
            _, denied = self.guard(request, ops)
            if denied:
                return denied
            checks = {
                "kafka": await _check_kafka(runtime),
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


async def _check_kafka(runtime: Runtime) -> dict[str, Any]:
    if runtime.publisher is None:
        return {"ok": False, "error": "producer not started"}
    try:
        ok = await asyncio.wait_for(runtime.publisher.client.fetch_all_metadata(), timeout=3) is not None
        return {"ok": ok}
    except Exception as exc:  # any client error means "not reachable now"
        return {"ok": False, "error": repr(exc)}
