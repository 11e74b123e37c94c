"""The Python API for callers outside the stream: embed one image, find matching stored entities, read an
entity's timeline.

    service = get_reid_service()
    vec = await service.generate_embedding("cam1/frame.jpg", roi=(10, 20, 60, 140))
    hits = await service.find_matching_entities(redis_client, vec, "person", min_similarity=0.8)
    others = await service.find_matching_entities(redis_client, vec, "person", exclude_detection_id="det-1")
    history = await service.get_entity_history(redis_client, hits[0][0].entity_id)

Redis failures: find_matching_entities answers [] and logs one warning (a caller matching as it goes carries on);
get_entity_history raises StoreUnavailable, since None there means "no such entity". A query whose length is not
that of the model's stored vectors raises ValueError (DimensionMismatch), whatever Redis holds or answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from reid_stream.config import Settings
from reid_stream.encoders import Encoder, load_encoder
from reid_stream.errors import DimensionMismatch, StoreUnavailable
from reid_stream.events import DEFAULT_SITE, BBox, EntityHistory
from reid_stream.identity.matching import EntityEmbedding, cosine_similarity
from reid_stream.store.reid_store import ReidStore
from reid_stream.vision.images import crop_letterbox, decode_image, read_path

__all__ = ["DimensionMismatch", "EntityEmbedding", "EntityHistory", "ReIdentificationService", "StoreUnavailable",
           "cosine_similarity", "get_reid_service"]
log = logging.getLogger(__name__)

Roi = BBox | dict[str, float] | tuple[float, float, float, float] | list[float]


class ReIdentificationService:
    """Wraps one encoder; every call runs the model off the event loop, one batch at a time."""

    def __init__(self, settings: Settings | None = None, encoder: Encoder | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.encoder = encoder or load_encoder(self.settings)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reid-service")

    def _embed(self, image_path: str, roi: BBox | None) -> np.ndarray:
        s = self.settings
        img = decode_image(read_path(image_path, s.image_roots, s.max_image_bytes), s.max_image_pixels)
        box = roi or BBox(x1=0, y1=0, x2=img.width, y2=img.height)
        crop = crop_letterbox(img, box, self.encoder.input_size, (0, 0, 0))
        return self.encoder.encode(self.encoder.preprocess(crop)[None])[0]

    async def generate_embedding(self, image_path: str | os.PathLike[str], roi: Roi | None = None) -> np.ndarray:
        """The unit-length embedding of an image under REID_IMAGE_ROOTS, or of its roi (x1, y1, x2, y2).

        A path outside the roots raises DetectionError("path_not_allowed"), as in the stream.
        """
        box = _as_bbox(roi)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._embed, os.fspath(image_path), box)

    async def find_matching_entities(self, redis_client: aioredis.Redis, query_embedding: np.ndarray,
                                     entity_type: str, camera_id: str | None = None,
                                     min_similarity: float | None = None, limit: int = 10,
                                     site_id: str = DEFAULT_SITE,
                                     exclude_detection_id: str | None = None) -> list[tuple[EntityEmbedding, float]]:
        """Stored embeddings of one entity type and site that match the query: (embedding, cosine similarity)
        pairs, best first, at or above min_similarity (REID_SIMILARITY_THRESHOLD when None), at most `limit`,
        optionally of one camera, and without `exclude_detection_id` (who else looks like that detection). Only
        vectors of this service's encoder (its model id) are compared; each carries the attributes its detection
        came with (None if it came with none).

        ValueError when the query is not one vector with as many numbers as the model's stored vectors. Redis
        down or failing: [] and one logged warning."""
        store = ReidStore(redis_client, self.settings, site_id)
        try:
            return await store.nearest(query_embedding, entity_type, self.encoder.model_id, camera_id,
                                       min_similarity, limit, exclude_detection_id)
        except (RedisError, OSError) as exc:
            log.warning("find_matching_entities: Redis unavailable (%s); answering no matches", exc)
            return []

    async def get_entity_history(self, redis_client: aioredis.Redis, entity_id: str,
                                 site_id: str = DEFAULT_SITE) -> EntityHistory | None:
        """An entity's appearances, oldest first (GET /api/entities/{id}/history from Redis): a merged id answers
        with the entity it became (`resolved_from` names the id asked for). None when the entity is unknown,
        expired or erased; StoreUnavailable when Redis does not answer."""
        store = ReidStore(redis_client, self.settings, site_id)
        try:
            detail = await store.get_entity(entity_id)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable reading entity {entity_id!r}: {exc}") from exc
        return None if detail is None else EntityHistory.of(detail)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


@functools.cache
def get_reid_service() -> ReIdentificationService:
    """The process-wide service, built from the environment on first use (the model loads once)."""
    return ReIdentificationService()


def _as_bbox(roi: Any) -> BBox | None:
    if roi is None or isinstance(roi, BBox):
        return roi
    if isinstance(roi, dict):
        return BBox.model_validate(roi)
    x1, y1, x2, y2 = roi
    return BBox(x1=x1, y1=y1, x2=x2, y2=y2)
