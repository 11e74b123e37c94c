"""The HTTP views (Faust web). They read through the store; the writes are an erasure (DELETE) and the
operator's corrections (PATCH names and trust, POST merge and split, through `corrections`).

Each view reaches the worker's runtime through its app (`api.context.view_runtime`); this package never
imports the worker that builds the app.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, TypeVar, cast

import faust
from aiokafka.errors import KafkaTimeoutError
from faust.web import Request, Response, View
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from reid_stream.api.context import SiteServices, ViewRuntime, view_runtime
from reid_stream.api.openapi import build_openapi
from reid_stream.api.params import MAX_ID, ParamError, parse_list_params, site_param, source_param
from reid_stream.api.search import (
    UPLOAD_TYPES,
    Filters,
    SearchResults,
    parse_filters,
    read_upload,
)
from reid_stream.api.ui import UI_ROUTES
from reid_stream.errors import ApiError, DetectionError, DimensionMismatch
from reid_stream.events import (
    BBox,
    Correction,
    EntityDetail,
    EntityHistory,
    EntityList,
    EntityPatch,
    EntityUpdate,
    MergeRequest,
    SplitRequest,
    WatchList,
    WatchRequest,
)
from reid_stream.memory.archive import ARCHIVE_ERRORS
from reid_stream.metrics import CONTENT_TYPE
from reid_stream.store.corrections import update_messages
from reid_stream.store.watch import WatchError, check_label, check_type
from reid_stream.vision.images import fetch_url, read_path, thumbnail_jpeg

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BODY = 256 * 1024  # a split of 1,000 ids of 256 characters fits
OUTBOX_WAIT_S = 2.0  # an operator's correction waits this long for the pipeline to finish publishing the outbox
ARCHIVE_WAIT_S = 5.0  # a view waits this long for the archive (PostgreSQL) before answering without it
B = TypeVar("B", bound=BaseModel)


class ApiView(View):
    """Checks the bearer token, answers JSON errors, and audits entity queries."""

    @property
    def runtime(self) -> ViewRuntime:
        return view_runtime(self.app)

    def at(self, request: Request) -> SiteServices:
        """The site the request is about (?site_id=, default `default`); a malformed one raises ApiError."""
        try:
            return self.runtime.site(site_param(request.query))
        except ParamError as err:
            raise ApiError(422, "invalid_parameter", [{"loc": ["query", err.param], "msg": err.message,
                                                       "type": "value_error"}]) from None

    @staticmethod
    def audited(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "site_id": request.query["site_id"]} if "site_id" in request.query else params

    def guard(self, request: Request, protected: bool = True) -> tuple[str | None, Response | None]:
        auth = self.runtime.auth
        if not protected or not auth.required:
            return None, None
        who = auth.identify(request.headers.get("Authorization"))
        if who is None:
            return None, self.json({"detail": "missing or invalid bearer token"}, status=401,
                                   headers={"WWW-Authenticate": 'Bearer realm="reid-stream"'})
        return who, None

    def done(self, request: Request, who: str | None, params: dict[str, Any], response: Response) -> Response:
        self.runtime.auditor.record(who, request.method, request.path, params, response.status)
        return response

    def model(self, body: BaseModel, status: int = 200) -> Response:
        # pydantic's own serializer: several times faster than model_dump() followed by json.dumps().
        return self.bytes(body.model_dump_json().encode(), status=status,
                          headers={"Content-Type": "application/json"})

    def error(self, status: int, code: str, detail: Any) -> Response:
        return self.json({"detail": detail, "error_code": code}, status=status)

    def refused(self, err: ApiError) -> Response:
        return self.error(err.status, err.code, err.detail)

    def unavailable(self) -> Response:
        return self.json({"detail": "storage unavailable (Redis); retry later"}, status=503)

    def not_found(self, entity_id: str) -> Response:
        return self.json({"detail": f"Entity with id '{entity_id}' not found"}, status=404)

    async def entity(self, site: SiteServices, entity_id: str) -> EntityDetail | None:
        """The entity from Redis; when Redis no longer holds it (or is down), from the archive, if one is on."""
        rt = self.runtime
        try:
            found = await site.store.get_entity(entity_id)
        except (RedisError, OSError):
            if rt.archive is None:
                raise
            found, redis_down = None, True
        else:
            redis_down = False
        if found is not None or rt.archive is None:
            return found
        try:
            return await asyncio.wait_for(rt.archive.get_entity(site.store.site, entity_id), ARCHIVE_WAIT_S)
        except ARCHIVE_ERRORS as exc:
            log.warning("entity %s: archive unavailable (%r)", entity_id, exc)
            what = "Redis and the archive" if redis_down else "the archive"
            raise ApiError(503, "archive_unavailable", f"storage unavailable ({what}); retry later") from None

    def bad_id(self, name: str) -> Response:
        return self.json({"detail": [{"loc": ["path", name], "type": "value_error",
                                      "msg": f"{name} must have 1 to {MAX_ID} characters"}]}, status=422)

    async def on_entity(self, request: Request, entity_id: str,
                        fetch: Callable[[SiteServices, str], Awaitable[T | None]],
                        render: Callable[[T], Response], id_name: str = "entity_id") -> Response:
        """The shared path of the per-item routes: token, id and site checks, Redis errors, 404, audit."""
        who, denied = self.guard(request)
        if denied:
            return denied
        params = self.audited(request, {id_name: entity_id})
        if not 0 < len(entity_id) <= MAX_ID:
            return self.done(request, who, params, self.bad_id(id_name))
        try:
            found = await fetch(self.at(request), entity_id)
        except ApiError as err:
            return self.done(request, who, params, self.refused(err))
        except (RedisError, OSError):
            return self.done(request, who, params, self.unavailable())
        if found is None:
            return self.done(request, who, params, self.not_found(entity_id))
        return self.done(request, who, params, render(found))


class BodyError(ValueError):
    def __init__(self, response: Response) -> None:
        super().__init__("bad body")
        self.response = response


class CorrectionView(ApiView):
    """The shared path of the operator's writes: token, id, JSON body, Redis errors, audit, and publishing
    the update at once (the pipeline would otherwise publish it with the type's next batch)."""

    async def body(self, request: Request, model: type[B]) -> B:
        raw = await self.read_body(request)
        try:
            return model.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                      for e in exc.errors(include_url=False, include_input=False, include_context=False)]
            raise BodyError(self.json({"error_code": "invalid_body", "detail": errors}, status=422)) from None

    async def read_body(self, request: Request) -> bytes:
        """The body, read as it arrives and refused past MAX_BODY: aiohttp's own limit (1 MiB, on read())
        would answer a plain-text 413 instead of this JSON one."""
        stream = cast(Any, request)
        too_large = BodyError(self.error(413, "body_too_large", f"the body is over {MAX_BODY} bytes"))
        if (stream.content_length or 0) > MAX_BODY:
            raise too_large
        body = bytearray()
        while chunk := await stream.content.readany():
            body.extend(chunk)
            if len(body) > MAX_BODY:
                raise too_large
        return bytes(body)

    async def correct(self, request: Request, entity_id: str, model: type[B], audited: Callable[[B], dict[str, Any]],
                      act: Callable[[SiteServices, str | None, B], Awaitable[Response]]) -> Response:
        who, denied = self.guard(request)
        if denied:
            return denied
        params: dict[str, Any] = self.audited(request, {"entity_id": entity_id})
        if not 0 < len(entity_id) <= MAX_ID:
            return self.done(request, who, params, self.bad_id("entity_id"))
        try:
            site = self.at(request)
            body = await self.body(request, model)
            params.update(audited(body))
            response = await act(site, who, body)
        except BodyError as err:
            response = err.response
        except ApiError as err:  # a CorrectionError
            response = self.refused(err)
        except (RedisError, OSError):
            response = self.unavailable()
        return self.done(request, who, params, response)

    async def publish(self, update: EntityUpdate) -> None:
        await self.publish_outbox(update.site_id, update.entity_type)

    async def publish_outbox(self, site_id: str, entity_type: str) -> None:
        """Best effort: what is not published here stays in the outbox for the pipeline."""
        rt = self.runtime
        if rt.publisher is None:
            return
        try:
            # Not longer than a request should wait: the pipeline may hold it through a Kafka outage.
            await asyncio.wait_for(rt.outbox_lock.acquire(), OUTBOX_WAIT_S)
        except TimeoutError:
            log.warning("entity update left in the outbox for the pipeline: it is publishing")
            return
        store = rt.store.for_site(site_id)
        try:
            raw = await store.pending_raw(entity_type)
            if raw:
                await rt.publisher.publish(update_messages(rt.settings.topic_updates, raw))
                await store.ack_published(entity_type, raw)
        except Exception as exc:  # Kafka or Redis: the pipeline publishes it with the next batch
            log.warning("entity update left in the outbox for the pipeline: %r", exc)
        finally:
            rt.outbox_lock.release()

    async def outcome(self, update: EntityUpdate, ids: list[str]) -> Response:
        await self.publish(update)
        store = self.runtime.store.for_site(update.site_id)
        return self.model(Correction(update=update, entities=await store.summaries(ids)))


class EntityListView(ApiView):
    async def get(self, request: Request) -> Response:
        who, denied = self.guard(request)
        if denied:
            return denied
        query = dict(request.query)
        try:
            params = parse_list_params(request.query)
            site_id = site_param(request.query)
            store = self.runtime.store.for_site(site_id)
            if source_param(request.query) == "archive":
                if self.runtime.archive is None:
                    raise ParamError("source", "the archive is off on this worker (REID_ARCHIVE_URL)")
                return self.done(request, who, query, await self._archived(site_id, params))
        except ParamError as err:
            return self.done(request, who, query, self.json(
                {"error_code": "invalid_parameter",
                 "detail": [{"loc": ["query", err.param], "msg": err.message, "type": "value_error"}]}, status=422))
        try:
            entities, total = await store.list_entities(**params)
        except (RedisError, OSError) as exc:
            # Without Redis the list degrades to an empty page, flagged, and the worker stays up.
            log.warning("entity list without Redis: %r", exc)
            body = EntityList(entities=[], count=0, limit=params["limit"], offset=params["offset"])
            return self.done(request, who, query, self.json(
                body.model_dump(mode="json"), headers={"X-Reid-Degraded": "redis-unavailable"}))
        body = EntityList(entities=entities, count=total, limit=params["limit"], offset=params["offset"])
        return self.done(request, who, query, self.model(body))

    async def _archived(self, site_id: str, params: dict[str, Any]) -> Response:
        """The long-term memory's list: entities Redis may no longer hold, for as long as the archive keeps them."""
        assert self.runtime.archive is not None
        try:
            entities, total = await asyncio.wait_for(self.runtime.archive.list_entities(site_id, **params),
                                                     ARCHIVE_WAIT_S)
        except ARCHIVE_ERRORS as exc:
            log.warning("entity list: archive unavailable (%r)", exc)
            return self.error(503, "archive_unavailable", "storage unavailable (the archive); retry later")
        return self.model(EntityList(entities=entities, count=total, limit=params["limit"], offset=params["offset"]))


class EntityDetailView(CorrectionView):
    async def get(self, request: Request, entity_id: str) -> Response:
        async def detail(site: SiteServices, eid: str) -> EntityDetail | None:
            found = await self.entity(site, eid)
            if found is not None and found.source == "live":
                found.space_version = await site.spaces.version(self.runtime.encoder.model_id, found.entity_type)
            return found

        return await self.on_entity(request, entity_id, detail, self.model)

    async def patch(self, request: Request, entity_id: str) -> Response:
        async def annotate(site: SiteServices, who: str | None, patch: EntityPatch) -> Response:
            target = await site.corrections.annotate(entity_id, patch.model_dump(include=patch.model_fields_set), who)
            log.info("entity %s annotated by %s: %s", target, who, sorted(patch.model_fields_set))
            detail = await site.store.get_entity(target)
            if detail is None:  # erased or expired in between
                return self.not_found(entity_id)
            await self.publish_outbox(site.store.site, detail.entity_type)  # `annotated`: for the archive and others
            if target != entity_id:
                detail.resolved_from = entity_id
            return self.model(detail)

        # The audit names the fields changed, never their values: a name is personal data, and audit lines
        # outlive erasure.
        return await self.correct(request, entity_id, EntityPatch,
                                  lambda p: {"fields": sorted(p.model_fields_set)}, annotate)

    async def delete(self, request: Request, entity_id: str) -> Response:
        who = self.runtime.auth.identify(request.headers.get("Authorization"))

        def erased(purged: dict[str, Any]) -> Response:
            log.info("entity %s erased (%d detections)", purged["entity_id"], len(purged["detections"]))
            return self.json({"purged": purged})

        return await self.on_entity(request, entity_id, lambda site, eid: self.erase(site, eid, who), erased)

    async def erase(self, site: SiteServices, entity_id: str, who: str | None) -> dict[str, Any] | None:
        """Redis first (its erasure queues an `erased` update, which reaches the archive even if it is down now),
        then the archive at once; an entity only the archive still holds is erased there alone."""
        rt, site_id = self.runtime, site.store.site
        purged = await site.store.purge_entity(entity_id, by=who)
        if purged is not None:
            await self.publish_outbox(site_id, purged["entity_type"])
        if rt.archive is None:
            return purged
        try:
            return await rt.archive.erase_after_redis(site_id, entity_id, purged, ARCHIVE_WAIT_S)
        except ARCHIVE_ERRORS:
            raise ApiError(503, "archive_unavailable", "the archive is unavailable: the entity may still be kept "
                           "there; retry later") from None


class EntityMergeView(CorrectionView):
    async def post(self, request: Request, entity_id: str) -> Response:
        async def merge(site: SiteServices, who: str | None, body: MergeRequest) -> Response:
            update = await site.corrections.merge(entity_id, body.other_id, who)
            log.info("entity %s merged into %s by %s", update.merged, update.survivor, who)
            return await self.outcome(update, [update.survivor])

        return await self.correct(request, entity_id, MergeRequest, lambda b: {"other_id": b.other_id}, merge)


class EntitySplitView(CorrectionView):
    async def post(self, request: Request, entity_id: str) -> Response:
        async def split(site: SiteServices, who: str | None, body: SplitRequest) -> Response:
            update = await site.corrections.split(entity_id, body.detection_ids, who)
            log.info("%d detections split from %s into %s by %s", len(body.detection_ids), update.survivor,
                     update.created, who)
            return await self.outcome(update, [update.survivor, update.created or ""])

        return await self.correct(request, entity_id, SplitRequest,
                                  lambda b: {"detection_ids": b.detection_ids}, split)


class EntityHistoryView(ApiView):
    async def get(self, request: Request, entity_id: str) -> Response:
        return await self.on_entity(request, entity_id, self.entity,
                                    lambda detail: self.model(EntityHistory.of(detail)))


# Why a stored image can no longer give a thumbnail, as (HTTP status, error code).
IMAGE_ERRORS = {
    "image_not_found": (410, "image_gone"),
    "path_not_allowed": (403, "image_not_allowed"),
    "url_not_allowed": (403, "image_not_allowed"),
    "image_fetch_failed": (502, "image_fetch_failed"),
}


class DetectionImageView(ApiView):
    """The detection's crop as a JPEG, cut on demand from its original image: Redis keeps only where
    the image is (path or URL, and the box), with the detection's TTL, and erasure removes it."""

    async def get(self, request: Request, detection_id: str) -> Response:
        async def thumbnail(site: SiteServices, det_id: str) -> Response:  # always an answer: its own 404s say which
            return await self._thumbnail(det_id, await site.store.image_ref(det_id))

        return await self.on_entity(request, detection_id, thumbnail, lambda r: r, id_name="detection_id")

    async def _thumbnail(self, detection_id: str, ref: dict[str, Any] | None) -> Response:
        if ref is None:
            return self.error(404, "detection_not_found",
                              f"Detection with id '{detection_id}' not found (unknown, expired or erased)")
        if not ref:
            return self.error(404, "image_not_kept", "the detection's image was not kept: it was sent inline "
                              "(image_b64), which is never stored, or stored before thumbnails existed")
        s = self.runtime.settings
        x1, y1, x2, y2 = ref["bbox"]
        box = BBox(x1=x1, y1=y1, x2=x2, y2=y2)
        try:
            if "path" in ref:
                data = await asyncio.to_thread(read_path, ref["path"], s.image_roots, s.max_image_bytes)
            elif self.runtime.http is None:
                raise DetectionError("image_fetch_failed", "the worker's HTTP client is not running", "thumbnail")
            else:
                data = await fetch_url(self.runtime.http, ref["url"], s.url_allowed_hosts, s.max_image_bytes,
                                       s.url_timeout_seconds)
            jpeg = await asyncio.to_thread(thumbnail_jpeg, data, box, s.thumbnail_max_side, s.max_image_pixels)
        except OSError as exc:  # not Redis: the image itself (e.g. a directory now stands at the path)
            return self.error(422, "image_unusable", f"no thumbnail for detection '{detection_id}': {exc!r}")
        except DetectionError as err:
            status, code = IMAGE_ERRORS.get(err.code, (422, "image_unusable"))
            return self.error(status, code, f"no thumbnail for detection '{detection_id}': {err.message}")
        return self.bytes(jpeg, headers={"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=300"})


class SearchView(ApiView):
    """The shared path of the search routes: token, filters, search errors, Redis errors, audit."""

    async def answer(self, request: Request, params: dict[str, Any],
                     run: Callable[[Filters], Awaitable[SearchResults]]) -> Response:
        who, denied = self.guard(request)
        if denied:
            return denied
        try:
            response = self.model(await run(parse_filters(request.query)))
        except ApiError as err:  # a SearchError
            response = self.refused(err)
        except DimensionMismatch as err:  # stored vectors of this model id that this model cannot have made
            log.error("search: %s", err)
            response = self.error(409, "dimension_mismatch", str(err))
        except (RedisError, OSError):
            response = self.unavailable()
        return self.done(request, who, params, response)


class SimilarDetectionView(SearchView):
    async def get(self, request: Request, detection_id: str) -> Response:
        if not 0 < len(detection_id) <= MAX_ID:
            who, denied = self.guard(request)
            return denied or self.done(request, who, {"detection_id": detection_id}, self.bad_id("detection_id"))
        return await self.answer(request, {"detection_id": detection_id, **request.query},
                                 lambda f: self.at(request).search.similar(detection_id, f))


class TextSearchView(SearchView):
    async def get(self, request: Request) -> Response:
        return await self.answer(request, dict(request.query),
                                 lambda f: self.at(request).search.by_text(request.query.get("text"), f))


class ImageSearchView(SearchView):
    """The image is the raw body (Content-Type image/jpeg or image/png), never stored."""

    async def post(self, request: Request) -> Response:
        raw = cast(Any, request)  # aiohttp's request: its body is read as a stream, with a limit
        params = {**request.query, "content_type": raw.content_type, "content_length": raw.content_length}

        async def run(f: Filters) -> SearchResults:
            site = self.at(request)
            data = await read_upload(raw.content_type, raw.content_length, raw.content.readany,
                                     self.runtime.settings.max_image_bytes)
            return await site.search.by_image(data, f)

        return await self.answer(request, params, run)


class WatchlistView(CorrectionView, SearchView):
    """GET the watch list; POST a JSON body to watch an entity, or an image (raw body) to enrol a look."""

    async def get(self, request: Request) -> Response:
        who, denied = self.guard(request)
        if denied:
            return denied
        try:
            entries = await self.at(request).watchlist.entries(self.runtime.encoder.model_id)
            response = self.model(WatchList(entries=entries, count=len(entries)))
        except ApiError as err:
            response = self.refused(err)
        except (RedisError, OSError):
            response = self.unavailable()
        return self.done(request, who, self.audited(request, {}), response)

    async def post(self, request: Request) -> Response:
        who, denied = self.guard(request)
        if denied:
            return denied
        raw = cast(Any, request)
        # The label is personal data (audit lines outlive erasure): the audit names the kind and the entity only.
        params: dict[str, Any] = self.audited(request, {"content_type": raw.content_type})
        try:
            site = self.at(request)
            if raw.content_type in UPLOAD_TYPES:
                params["kind"] = "image"
                label, etype = check_label(request.query.get("label")), check_type(request.query.get("entity_type"))
                data = await read_upload(raw.content_type, raw.content_length, raw.content.readany,
                                         self.runtime.settings.max_image_bytes)
                vector = await site.search.embed_image(data)
                entry = await site.watchlist.enrol(self.runtime.encoder.model_id, etype, vector, label, who)
                log.info("image enrolled on the watch list as %s by %s", entry.watch_id, who)
            elif raw.content_type in ("application/json", "application/octet-stream", ""):
                body = await self.body(request, WatchRequest)
                params.update(kind="entity", entity_id=body.entity_id)
                entry = await site.watchlist.watch_entity(body.entity_id, body.label, who)
                log.info("entity %s watched by %s", entry.watch_id, who)
                await self.publish_outbox(site.store.site, entry.entity_type)
            else:
                raise WatchError(415, "unsupported_media_type", "send JSON {\"entity_id\", \"label\"} to watch an "
                                 "entity, or the raw image (image/jpeg or image/png) with ?label= to enrol one")
            response = self.model(entry, status=201)
        except BodyError as err:
            response = err.response
        except ApiError as err:  # the watch list's, the corrections' (an unknown entity) or the upload's
            response = self.refused(err)
        except (RedisError, OSError):
            response = self.unavailable()
        return self.done(request, who, params, response)


class WatchEntryView(CorrectionView):
    async def delete(self, request: Request, watch_id: str) -> Response:
        async def remove(site: SiteServices, wid: str) -> Response:  # always an answer: its own 404 says which
            try:
                entry = await site.watchlist.remove(self.runtime.encoder.model_id, wid)
            except ApiError as err:
                return self.refused(err)
            if entry.kind == "entity":
                await self.publish_outbox(site.store.site, entry.entity_type)
            return self.json({"removed": entry.model_dump(mode="json")})

        return await self.on_entity(request, watch_id, remove, lambda r: r, id_name="watch_id")


@cache
def _openapi(archive: bool) -> dict[str, Any]:
    return build_openapi(archive)


class SpacesView(ApiView):
    async def get(self, request: Request) -> Response:
        """The site's learned similarity spaces, one per entity type, for the worker's model."""
        _, denied = self.guard(request)
        if denied:
            return denied
        try:
            site = self.at(request)
            return self.model(await site.spaces.describe(self.runtime.encoder.model_id))
        except ApiError as err:
            return self.refused(err)
        except (RedisError, OSError):
            return self.unavailable()


class OpenApiView(ApiView):
    async def get(self, request: Request) -> Response:
        _, denied = self.guard(request)
        return denied or self.json(_openapi(self.runtime.archive is not None))


class HealthView(ApiView):
    async def get(self, request: Request) -> Response:
        _, denied = self.guard(request, self.runtime.settings.protect_ops)
        return denied or self.json({"status": "ok"})


class MetricsView(ApiView):
    async def get(self, request: Request) -> Response:
        _, denied = self.guard(request, self.runtime.settings.protect_ops)
        if denied:
            return denied
        rt = self.runtime
        await rt.metrics.update_lag(rt.consumers)
        # aiohttp refuses a charset inside content_type=, so the exposition type goes in as a header.
        return self.bytes(rt.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


class ReadyView(ApiView):
    async def get(self, request: Request) -> Response:
        rt = self.runtime
        _, denied = self.guard(request, rt.settings.protect_ops)
        if denied:
            return denied
        checks = {
            "kafka": await _check_kafka(rt),
            "redis": await _check_redis(rt),
            "model": {"ok": True, "model": rt.encoder.model_id, "device": rt.encoder.device},
        }
        ready = all(c["ok"] for c in checks.values())
        if rt.archive is not None:  # reported, never required: without it the stream goes on and catches up later
            checks["archive"] = await _check_archive(rt)
        return self.json({"ready": ready, "status": "ready" if ready else "degraded", "checks": checks},
                         status=200 if ready else 503)


ROUTES: dict[str, type[ApiView]] = {
    "/api/entities": EntityListView,
    "/api/entities/{entity_id}": EntityDetailView,
    "/api/entities/{entity_id}/history": EntityHistoryView,
    "/api/entities/{entity_id}/merge": EntityMergeView,
    "/api/entities/{entity_id}/split": EntitySplitView,
    "/api/detections/{detection_id}/image": DetectionImageView,
    "/api/detections/{detection_id}/similar": SimilarDetectionView,
    "/api/search": TextSearchView,
    "/api/search/image": ImageSearchView,
    "/api/watchlist": WatchlistView,
    "/api/watchlist/{watch_id}": WatchEntryView,
    "/api/spaces": SpacesView,
    "/api/openapi.json": OpenApiView,
    "/health": HealthView,
    "/metrics": MetricsView,
    "/ready": ReadyView,
}


def route_pattern(path: str) -> str:
    """The router's pattern of a route: each `{name}` takes any text up to the next "/". aiohttp's default
    refuses "{" and "}", which ids may hold; an id's own "/" arrives as %2F, which the router hands over decoded."""
    return re.sub(r"\{(\w+)\}", r"{\1:[^/]+}", path)


def register_views(app: faust.App) -> None:
    rt = view_runtime(app)
    if rt.auth.required and not rt.auth.tokens:
        log.warning("REID_API_AUTH is on but no tokens are configured (REID_API_TOKENS / REID_API_TOKEN_FILE): "
                    "every /api request will get 401")
    for path, view in ROUTES.items():
        app.page(route_pattern(path))(view)
    # Registered before Faust's own blueprints, so the entity browser, not Faust's status index, answers "/".
    for path, page in UI_ROUTES.items():
        app.page(path)(page)


# /ready is often open (REID_PROTECT_OPS=false) and an error's text names hosts and ports: the answer
# carries a stable error_code only, and the details go to the worker's log.
REDIS_PING_TIMEOUT_S = 2
KAFKA_METADATA_TIMEOUT_S = 3


def _failed(code: str, what: str, exc: BaseException | None = None) -> dict[str, Any]:
    detail = (str(exc) or type(exc).__name__) if exc is not None else ""  # str: redis-py 7 repr omits the address
    log.warning("/ready: %s (%s) %s", what, code, detail)
    return {"ok": False, "error_code": code}


async def _check_redis(runtime: ViewRuntime) -> dict[str, Any]:
    try:
        await asyncio.wait_for(runtime.store.ping(), timeout=REDIS_PING_TIMEOUT_S)
        return {"ok": True, "pipeline_storing": runtime.redis_ok}
    except (TimeoutError, RedisTimeoutError) as exc:
        return _failed("redis_timeout", f"Redis did not answer PING within {REDIS_PING_TIMEOUT_S}s", exc)
    except (RedisError, OSError) as exc:
        return _failed("redis_unreachable", "Redis PING failed", exc)


ARCHIVE_PING_TIMEOUT_S = 2


async def _check_archive(runtime: ViewRuntime) -> dict[str, Any]:
    health = runtime.archive_health
    state = {"required": False, "archiving": health.ok, "archived": health.archived}
    if health.ok is False:
        state["archiving_error_code"] = health.error_code
    assert runtime.archive is not None
    try:
        await asyncio.wait_for(runtime.archive.ping(), timeout=ARCHIVE_PING_TIMEOUT_S)
    except TimeoutError as exc:
        return {**_failed("archive_timeout", f"the archive did not answer within {ARCHIVE_PING_TIMEOUT_S}s", exc),
                **state}
    except ARCHIVE_ERRORS as exc:
        return {**_failed("archive_unreachable", "the archive (PostgreSQL) is unreachable", exc), **state}
    return {"ok": True, **state}


async def _check_kafka(runtime: ViewRuntime) -> dict[str, Any]:
    if runtime.publisher is None:
        return _failed("kafka_not_started", "the Kafka producer is not started")
    try:
        metadata = await asyncio.wait_for(runtime.publisher.client.fetch_all_metadata(),
                                          timeout=KAFKA_METADATA_TIMEOUT_S)
    except (TimeoutError, KafkaTimeoutError) as exc:
        return _failed("kafka_timeout", f"Kafka metadata not fetched within {KAFKA_METADATA_TIMEOUT_S}s", exc)
    except Exception as exc:  # any client error means "not reachable now"
        return _failed("kafka_unreachable", "Kafka metadata request failed", exc)
    return {"ok": True} if metadata is not None else _failed("kafka_unreachable", "Kafka returned no metadata")
