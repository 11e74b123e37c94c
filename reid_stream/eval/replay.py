"""Stream replay: detections in time order through the assign stage's own code, scored against true ids.

The stage's `Assigner` runs unchanged against a real Redis under a throwaway key prefix (deleted after),
so what is scored is exactly what the worker would have decided.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from reid_stream.config import Settings
from reid_stream.encoders import Encoder
from reid_stream.eval.embed import embed_images
from reid_stream.eval.metrics import ClusteringResult, clustering_metrics
from reid_stream.events import Detection
from reid_stream.store.reid_store import ReidStore
from reid_stream.stream.assign import Assigner
from reid_stream.stream.wire import EmbeddedRecord

STAGE_BATCH = 8  # detections per assign call: about what stage 2 sees per batch at a modest rate


@dataclass(frozen=True)
class StreamItem:
    detection: Detection
    true_id: Any
    image: Path


def read_stream(path: Path) -> list[StreamItem]:
    """`stream.jsonl`: one detection per line with its `true_id`; `image_path` relative to the file's folder."""
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        if "true_id" not in raw:
            raise ValueError(f"{path}:{n}: a replayed detection needs its true_id")
        det = Detection.model_validate(raw)
        if det.image_path is None:
            raise ValueError(f"{path}:{n}: replay reads images from image_path")
        items.append(StreamItem(det, raw["true_id"], path.parent / det.image_path))
    return sorted(items, key=lambda i: i.detection.timestamp)


def scored_id(true_id: Any, detection_id: str) -> Any:
    """Junk boxes (true id 0, Market's distractor label) are nobody: each counts as a person of its own, so
    joining one to anyone, or two junk boxes together, is a false merge."""
    return f"junk:{detection_id}" if true_id in (0, "0", "0000") else true_id


@dataclass(frozen=True)
class ReplayResult:
    threshold: float
    clustering: ClusteringResult
    entity_of: dict[str, str]  # detection id -> entity id

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, **self.clustering.to_dict()}


async def replay(items: list[StreamItem], vectors: np.ndarray, model: str, settings: Settings,
                 threshold: float) -> ReplayResult:
    """Assign every detection in time order, as the worker's stage 2 would, and score the entities."""
    s = replace(settings, similarity_threshold=threshold, redis_prefix=f"reid-eval:{uuid.uuid4().hex[:12]}",
                max_embeddings=max(settings.max_embeddings, len(items) + 1))
    store = ReidStore.from_settings(s)
    entity_of: dict[str, str] = {}
    try:
        assigner = Assigner(s, store)
        records = [EmbeddedRecord.of(i.detection, vec, model) for i, vec in zip(items, vectors, strict=True)]
        for start in range(0, len(records), STAGE_BATCH):
            events, letters = await assigner.assign(records[start:start + STAGE_BATCH])
            if letters:
                raise RuntimeError(f"replay dead-lettered {letters[0].error_code}: {letters[0].message}")
            entity_of.update((e.detection_id, e.entity_id) for e in events)
    finally:
        await store.forget_everything()
        await store.close()
    ids = [i.detection.detection_id for i in items]
    scored = clustering_metrics([scored_id(i.true_id, i.detection.detection_id) for i in items],
                                [entity_of[d] for d in ids])
    return ReplayResult(threshold, scored, entity_of)


def embed_stream(encoder: Encoder, items: list[StreamItem], max_pixels: int, batch: int = 32) -> np.ndarray:
    return embed_images(encoder, [i.image for i in items], max_pixels, [i.detection.bbox for i in items], batch,
                        desc="stream")
