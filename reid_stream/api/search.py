"""Search over stored appearances: similar to a stored detection, to an uploaded image, or to a text (through
the CLIP text tower, where the encoder has one). The views in views.py are thin; the logic is here.

Only vectors of the worker's own model are compared: the model id names the vector space.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from reid_stream.api.params import DEFAULT_LIMIT, ParamError, parse_list_params, time_param
from reid_stream.config import Settings
from reid_stream.encoders import Encoder
from reid_stream.errors import ApiError, DetectionError, DimensionMismatch
from reid_stream.events import ENTITY_TYPES, BBox, EntityType
from reid_stream.identity.matching import EntityEmbedding, VectorIndex
from reid_stream.vision.images import decode_crop

MAX_TEXT_CHARS = 300  # CLIP reads at most 77 tokens; a longer text is refused rather than silently cut
# A burst of searches (a user paging, a UI typing) reads a type's vectors from Redis once per 2 s instead of
# once per request (every vector of the type, MBs at the default cap); 2 s of staleness is below what an
# operator notices, and an erased detection never shows: each page is checked against the live markers.
SNAPSHOT_TTL_S = 2.0
UPLOAD_TYPES = ("image/jpeg", "image/png")
WHOLE_IMAGE = BBox(x1=0, y1=0, x2=1e9, y2=1e9)  # clamped to the image: the upload is the crop


class SearchError(ApiError):
    """A search that cannot be answered."""


def _param_error(name: str, message: str) -> SearchError:
    return SearchError(422, "invalid_parameter", [{"loc": ["query", name], "msg": message, "type": "value_error"}])


class SearchHit(BaseModel):
    detection_id: str
    entity_id: str = Field(description="The entity the appearance belongs to now (merged entities resolved).")
    entity_name: str | None = Field(default=None, description="That entity's name, as an operator set it now.")
    entity_type: EntityType
    camera_id: str
    timestamp: datetime
    score: float = Field(description="Cosine similarity to the query, 6 decimals.")
    thumbnail_url: str


class SearchResults(BaseModel):
    query: Literal["detection", "image", "text"]
    model: str = Field(description="The model id: the vector space searched.")
    results: list[SearchHit] = Field(description="Best first.")
    count: int = Field(description="Stored appearances matching the filters (for paging).")
    limit: int
    offset: int


@dataclass(frozen=True)
class Filters:
    entity_type: str | None = None
    camera_id: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, inclusive
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse_filters(query: Mapping[str, str]) -> Filters:
    """The filters and paging of every search route: those of GET /api/entities, plus `until`."""
    try:
        f = parse_list_params(query)
        until = time_param(query, "until")
    except ParamError as err:
        raise _param_error(err.param, err.message) from None
    if f["since"] is not None and until is not None and until < f["since"]:
        raise _param_error("until", "until is before since")
    return Filters(f["entity_type"], f["camera_id"], f["since"], until, f["limit"], f["offset"])


def check_text(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise SearchError(400, "text_required", "give the text to search for: ?text=person in a blue jacket")
    if len(text) > MAX_TEXT_CHARS:
        raise SearchError(400, "text_too_long", f"text has {len(text)} characters, at most {MAX_TEXT_CHARS}")
    if any(ord(c) < 32 for c in text):
        raise SearchError(400, "text_invalid", "text must not contain control characters")
    return text


@dataclass
class Snapshot:
    """One type's stored vectors as a matrix, with what the filters and the answer need, row by row."""

    entity_type: str
    matrix: np.ndarray  # n x dim, unit rows
    detection_ids: list[str]
    entity_ids: list[str]
    cameras: np.ndarray  # n, object (str)
    times: np.ndarray  # n, float64 epoch seconds

    @classmethod
    def of(cls, etype: str, items: Iterable[EntityEmbedding], dim: int) -> Snapshot:
        rows = list(items)
        matrix = np.stack([r.embedding for r in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
        return cls(etype, matrix, [r.detection_id for r in rows], [r.entity_id or r.detection_id for r in rows],
                   np.array([r.camera_id for r in rows], dtype=object),
                   np.array([r.timestamp.timestamp() for r in rows], dtype=np.float64))

    def mask(self, f: Filters, exclude: str | None) -> np.ndarray:
        keep = np.ones(len(self.detection_ids), dtype=bool)
        if f.camera_id is not None:
            keep &= self.cameras == f.camera_id
        if f.since is not None:
            keep &= self.times >= f.since
        if f.until is not None:
            keep &= self.times <= f.until
        if exclude is not None and exclude in self.detection_ids:
            keep[self.detection_ids.index(exclude)] = False
        return keep


def rank(snapshots: list[Snapshot], query: np.ndarray, f: Filters,
         exclude: str | None = None) -> tuple[list[tuple[Snapshot, int, float]], int]:
    """The page of (snapshot, row, score), best first, and how many rows pass the filters."""
    scored: list[tuple[Snapshot, np.ndarray, np.ndarray]] = []
    for snap in snapshots:
        if len(snap.detection_ids) == 0:  # nothing stored, so no stored dimension either
            continue
        if snap.matrix.shape[1] != query.shape[0]:  # never skipped quietly: that would answer "nothing similar"
            raise DimensionMismatch(query.shape[0], snap.matrix.shape[1])
        rows = np.flatnonzero(snap.mask(f, exclude))
        scored.append((snap, rows, snap.matrix[rows] @ query))
    total = sum(len(rows) for _, rows, _ in scored)
    if total == 0:
        return [], 0
    scores = np.concatenate([s for _, _, s in scored])
    owner = np.concatenate([np.full(len(rows), i) for i, (_, rows, _) in enumerate(scored)])
    rows = np.concatenate([rows for _, rows, _ in scored])
    order = np.argsort(-scores, kind="stable")[f.offset: f.offset + f.limit]
    return [(scored[int(owner[i])][0], int(rows[i]), float(scores[i])) for i in order], total


class SearchStore(Protocol):
    site: str

    async def load_index(self, model: str, etype: str, dim: int, ann: bool = True) -> tuple[int, VectorIndex]: ...

    async def markers(self, detection_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    async def detection_vector(self, detection_id: str,
                               dim: int) -> tuple[dict[str, Any], np.ndarray | None] | None: ...

    async def entity_names(self, entity_ids: list[str]) -> dict[str, str]: ...


class SearchService:
    """Loads snapshots (cached per type for SNAPSHOT_TTL_S, one load at a time), encodes queries on the
    worker's model thread, ranks, and answers pages of live appearances."""

    def __init__(self, store: SearchStore, encoder: Encoder, settings: Settings, model_pool: Executor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.model_pool = model_pool
        self.clock = clock
        self._cache: dict[str, tuple[float, Snapshot]] = {}
        self._loading: dict[str, asyncio.Future[Snapshot]] = {}

    @property
    def model(self) -> str:
        return self.encoder.model_id

    async def snapshot(self, etype: str) -> Snapshot:
        cached = self._cache.get(etype)
        if cached is not None and self.clock() - cached[0] < SNAPSHOT_TTL_S:
            return cached[1]
        pending = self._loading.get(etype)
        if pending is None:  # the first caller loads; concurrent ones wait for the same load
            pending = self._loading[etype] = asyncio.ensure_future(self._load(etype))
            pending.add_done_callback(lambda _: self._loading.pop(etype, None))
        return await asyncio.shield(pending)

    async def _load(self, etype: str) -> Snapshot:
        started = self.clock()
        _, index = await self.store.load_index(self.model, etype, self.encoder.dim, ann=False)
        index.expire(time.time() - self.settings.embedding_ttl_seconds)
        snap = Snapshot.of(etype, index.items(), self.encoder.dim)
        self._cache[etype] = (started, snap)
        return snap

    async def _run_model(self, fn: Callable[..., Any], *args: Any) -> Any:
        # The worker's single model thread: never the event loop, and never two threads in one model.
        return await asyncio.get_running_loop().run_in_executor(self.model_pool, fn, *args)

    async def by_vector(self, kind: Literal["detection", "image", "text"], query: np.ndarray, f: Filters,
                        types: Iterable[str], exclude: str | None = None) -> SearchResults:
        snapshots = [await self.snapshot(t) for t in types]
        page, total = rank(snapshots, np.asarray(query, dtype=np.float32), f, exclude)
        live = await self.store.markers([snap.detection_ids[i] for snap, i, _ in page])
        # Read per page, not kept with the snapshot: a name an operator just gave shows at once.
        names = await self.store.entity_names(sorted({snap.entity_ids[i] for snap, i, _ in page}))
        hits = [SearchHit(detection_id=(det := snap.detection_ids[i]), entity_id=snap.entity_ids[i],
                          entity_name=names.get(snap.entity_ids[i]),
                          entity_type=snap.entity_type, camera_id=str(snap.cameras[i]),
                          timestamp=datetime.fromtimestamp(float(snap.times[i]), UTC), score=round(score, 6),
                          thumbnail_url=self.settings.thumbnail_url(str(snap.cameras[i]), det, self.store.site))
                for snap, i, score in page if snap.detection_ids[i] in live]  # erased within the cache window
        return SearchResults(query=kind, model=self.model, results=hits, count=total, limit=f.limit, offset=f.offset)

    def _types(self, f: Filters, default: Iterable[str] = ENTITY_TYPES) -> list[str]:
        return [f.entity_type] if f.entity_type else list(default)

    async def similar(self, detection_id: str, f: Filters) -> SearchResults:
        """Appearances like a stored detection (itself left out); of its own type unless entity_type says."""
        found = await self.store.detection_vector(detection_id, self.encoder.dim)
        if found is None:
            raise SearchError(404, "detection_not_found",
                              f"Detection with id '{detection_id}' not found (unknown, expired or erased)")
        event, vector = found
        if event["model"] != self.model:
            raise SearchError(409, "other_model", f"detection '{detection_id}' was embedded by {event['model']}, "
                              f"not by this worker's model {self.model}: their vectors cannot be compared")
        if vector is None:
            raise SearchError(410, "embedding_evicted", f"detection '{detection_id}' is stored but its embedding "
                              "was evicted (REID_MAX_EMBEDDINGS keeps the newest)")
        return await self.by_vector("detection", vector, f, self._types(f, [event["entity_type"]]), detection_id)

    async def embed_image(self, data: bytes) -> np.ndarray:
        """An uploaded crop's vector (search by image, watch list enrolment)."""
        if not data:
            raise SearchError(400, "empty_image", "the request body is empty: send the JPEG or PNG bytes")
        try:
            # The pipeline's own decoder and letterbox, with the whole upload as the box: the same bytes give
            # the same pixels, so the same vector, as when they arrived as a detection's crop. Decoded in a
            # thread of its own, so a large upload does not hold up the model thread.
            crop = await asyncio.to_thread(decode_crop, data, WHOLE_IMAGE, self.encoder.input_size,
                                           self.settings.max_image_pixels)
        except DetectionError as err:
            raise image_error(err) from None
        vectors = await self._run_model(self.encoder.encode, crop[None])
        return np.asarray(vectors[0], dtype=np.float32)

    async def by_image(self, data: bytes, f: Filters) -> SearchResults:
        return await self.by_vector("image", await self.embed_image(data), f, self._types(f))

    async def by_text(self, text: str | None, f: Filters) -> SearchResults:
        text = check_text(text)
        vectors = await self._run_model(self.encoder.encode_text, [text])
        if vectors is None:
            raise SearchError(400, "text_search_unavailable", f"the encoder {self.model} has no usable text tower "
                              "(only open_clip models with one, REID_ENCODER=clip, can search by text)")
        return await self.by_vector("text", vectors[0], f, self._types(f))


def image_error(err: DetectionError) -> SearchError:
    """An upload the decoder refused, as an HTTP answer."""
    if err.code == "image_too_large":  # the bytes were checked before decoding: this is the pixel limit
        return SearchError(413, "image_too_many_pixels", err.message)
    if err.code == "unsupported_image_format":
        return SearchError(415, "unsupported_image_format", err.message)
    return SearchError(400, "image_decode_failed" if err.code == "image_decode_failed" else err.code, err.message)


async def read_upload(content_type: str, content_length: int | None, chunks: Callable[[], Awaitable[bytes]],
                      max_bytes: int) -> bytes:
    """The raw image body, refused by type and by declared size before any byte is read, and cut off as soon
    as it passes max_bytes (a body without Content-Length, e.g. chunked, is counted as it arrives)."""
    if content_type not in UPLOAD_TYPES:
        raise SearchError(415, "unsupported_media_type", f"send the image as the raw body with Content-Type "
                          f"image/jpeg or image/png (got {content_type or 'none'!r})")
    if content_length is not None and content_length > max_bytes:
        raise SearchError(413, "image_too_large", f"the body has {content_length} bytes, limit {max_bytes} "
                          "(REID_MAX_IMAGE_BYTES)")
    body = bytearray()
    while chunk := await chunks():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise SearchError(413, "image_too_large", f"the body is over {max_bytes} bytes (REID_MAX_IMAGE_BYTES)")
    return bytes(body)
