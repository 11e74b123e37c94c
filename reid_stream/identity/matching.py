"""The pure core: cosine search over stored embeddings and entity assignment, with no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from reid_stream.identity.ann import HnswCompanion


@dataclass
class EntityEmbedding:
    """One stored embedding and whom it belongs to.

    The first six fields are the public JSON shape (`to_dict`/`from_dict`); the rest are the store's
    bookkeeping, optional, and appear in `to_dict()` only when set.
    """

    detection_id: str
    camera_id: str
    entity_type: str
    timestamp: datetime
    embedding: np.ndarray
    attributes: dict[str, Any] | None = None
    entity_id: str | None = None
    model: str = ""
    stored_at: float = 0.0
    track_key: str = ""  # "camera_id|track_id" of its tracklet; "" when the detection had no track_id
    quality: float = 1.0  # its weight in its tracklet's and entity's mean
    plate: str | None = None  # a vehicle's normalised licence plate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "detection_id": self.detection_id,
            "camera_id": self.camera_id,
            "entity_type": self.entity_type,
            "timestamp": self.timestamp.isoformat(),
            "embedding": [float(x) for x in self.embedding],
            "attributes": self.attributes,
        }
        if self.entity_id is not None:
            out["entity_id"] = self.entity_id
        if self.model:
            out["model"] = self.model
        if self.stored_at:
            out["stored_at"] = self.stored_at
        if self.track_key:
            out["track_key"] = self.track_key
        if self.quality != 1.0:
            out["quality"] = self.quality
        if self.plate:
            out["plate"] = self.plate
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntityEmbedding:
        """Accepts `timestamp` as a datetime or ISO 8601 text (a trailing `Z` included); `attributes` may be
        missing or null; the bookkeeping fields are optional."""
        ts = data["timestamp"]
        if not isinstance(ts, datetime):
            ts = datetime.fromisoformat(str(ts))
        return cls(
            detection_id=data["detection_id"],
            camera_id=data["camera_id"],
            entity_type=data["entity_type"],
            timestamp=ts,
            embedding=np.asarray(data["embedding"], dtype=np.float32),
            attributes=data.get("attributes"),
            entity_id=data.get("entity_id"),
            model=data.get("model") or "",
            stored_at=float(data.get("stored_at") or 0.0),
            track_key=data.get("track_key") or "",
            quality=float(data.get("quality", 1.0)),
            plate=data.get("plate") or None,
        )


def cosine_similarity(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    """Cosine similarity of two vectors: the dot product of their unit vectors; 0.0 if either is zero."""
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"vectors have different lengths: {va.shape[0]} and {vb.shape[0]}")
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(va, vb) / (na * nb), -1.0, 1.0))


@dataclass(frozen=True)
class Assignment:
    entity_id: str
    is_new_entity: bool
    similarity: float | None  # to the match it joined; None for a new entity


def assign_entity(detection_id: str, matches: list[tuple[EntityEmbedding, float]], threshold: float) -> Assignment:
    """Join the best match at or above the threshold; otherwise start an entity named after the detection."""
    if matches and matches[0][1] >= threshold:
        best, score = matches[0]
        return Assignment(best.entity_id or best.detection_id, False, score)
    return Assignment(detection_id, True, None)


class VectorIndex:
    """Exact cosine search over a contiguous float32 matrix of unit rows (a BLAS matrix-vector product).

    Above `ann_min_size` rows an HNSW companion is built in the background and, once ready, answers
    unfiltered searches; below it (the default cap is far below) search is always exact.
    """

    def __init__(self, dim: int, capacity: int = 1024, ann_min_size: int | None = None) -> None:
        self.dim = dim
        self._matrix = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._items: list[EntityEmbedding] = []
        self._pos: dict[str, int] = {}
        self._ann_min_size = ann_min_size
        self._ann: HnswCompanion | None = None
        self._labels: list[int] = []  # stable ids for the companion, parallel to rows
        self._by_label: dict[int, EntityEmbedding] = {}
        self._next_label = 0

    def enable_ann(self, min_size: int) -> None:
        """Turn the HNSW companion on for this index (after a bulk load, so it is built once, from all rows)."""
        self._ann_min_size = min_size
        n = len(self._items)
        if self._ann is None and n > min_size:
            from reid_stream.identity.ann import HnswCompanion

            self._ann = HnswCompanion(self.dim)
            self._ann.build(np.asarray(self._labels, dtype=np.int64), self._matrix[:n])

    @property
    def approximate(self) -> bool:
        return self._ann is not None and self._ann.ready

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, detection_id: str) -> bool:
        return detection_id in self._pos

    def add(self, item: EntityEmbedding) -> None:
        if item.detection_id in self._pos:
            return
        n = len(self._items)
        if n == self._matrix.shape[0]:
            grown = np.zeros((n * 2, self.dim), dtype=np.float32)
            grown[:n] = self._matrix
            self._matrix = grown
        self._matrix[n] = item.embedding
        item.embedding = self._matrix[n]  # a view: the matrix is the only copy
        self._items.append(item)
        self._pos[item.detection_id] = n
        label = self._next_label
        self._next_label += 1
        self._labels.append(label)
        self._by_label[label] = item
        if self._ann is not None:
            self._ann.add(label, self._matrix[n])
        elif self._ann_min_size is not None:
            self.enable_ann(self._ann_min_size)

    def remove(self, detection_ids: list[str]) -> None:
        """Swap-remove, O(1) each."""
        for det in detection_ids:
            i = self._pos.pop(det, None)
            if i is None:
                continue
            label = self._labels[i]
            del self._by_label[label]
            if self._ann is not None:
                self._ann.remove(label)
            last = len(self._items) - 1
            if i != last:
                moved = self._items[last]
                self._matrix[i] = self._matrix[last]
                moved.embedding = self._matrix[i]
                self._items[i] = moved
                self._labels[i] = self._labels[last]
                self._pos[moved.detection_id] = i
            self._items.pop()
            self._labels.pop()

    def items(self) -> list[EntityEmbedding]:
        return list(self._items)

    def rename_entity(self, old: str, new: str) -> None:
        """After a merge: the merged entity's rows now belong to the survivor."""
        for it in self._items:
            if it.entity_id == old:
                it.entity_id = new

    def expire(self, min_stored_at: float) -> list[str]:
        old = [it.detection_id for it in self._items if it.stored_at < min_stored_at]
        self.remove(old)
        return old

    def search(self, query: np.ndarray, limit: int, min_similarity: float | None = None,
               camera_id: str | None = None) -> list[tuple[EntityEmbedding, float]]:
        n = len(self._items)
        if n == 0 or limit <= 0:
            return []
        if camera_id is None and self.approximate:
            return self._approximate(np.asarray(query, dtype=np.float32)[None, :], limit, min_similarity)[0]
        scores = self._matrix[:n] @ np.asarray(query, dtype=np.float32)
        if camera_id is not None:
            scores = np.where([it.camera_id == camera_id for it in self._items], scores, -np.inf)
        return self._top(scores, limit, min_similarity)

    def search_many(self, queries: np.ndarray, limit: int,
                    min_similarity: float | None = None) -> list[list[tuple[EntityEmbedding, float]]]:
        """One matrix product for a whole batch of queries (rows), instead of one per query."""
        n = len(self._items)
        if n == 0 or limit <= 0:
            return [[] for _ in range(len(queries))]
        if self.approximate:
            return self._approximate(np.asarray(queries, dtype=np.float32), limit, min_similarity)
        scores = self._matrix[:n] @ np.asarray(queries, dtype=np.float32).T
        if min_similarity is None:
            return [self._top(scores[:, j], limit, min_similarity) for j in range(scores.shape[1])]
        # Most queries match nothing: find the hits of the whole batch at once, rank only those.
        out: list[list[tuple[EntityEmbedding, float]]] = [[] for _ in range(scores.shape[1])]
        rows, cols = np.nonzero(scores >= min_similarity)
        # Grouped by query with one stable sort (each group's rows stay ascending, as nonzero gave them)
        # instead of a mask over every hit per query.
        order = np.argsort(cols, kind="stable")
        rows, cols = rows[order], cols[order]
        edges = np.flatnonzero(cols[1:] != cols[:-1]) + 1
        items = self._items
        for start, end in zip([0, *edges.tolist()], [*edges.tolist(), len(cols)], strict=True):
            if start == end:
                continue
            col = int(cols[start])
            hit_rows = rows[start:end]
            hit_scores = scores[hit_rows, col]
            best = np.argsort(-hit_scores, kind="stable")[:limit]
            out[col] = [(items[r], s) for r, s in zip(hit_rows[best].tolist(), hit_scores[best].tolist(), strict=True)]
        return out

    def _approximate(self, queries: np.ndarray, limit: int,
                     min_similarity: float | None) -> list[list[tuple[EntityEmbedding, float]]]:
        assert self._ann is not None
        labels, scores = self._ann.query(queries, min(limit, len(self._items)))
        out = []
        for row_labels, row_scores in zip(labels, scores, strict=True):
            hits = [(self._by_label[int(lb)], float(sc)) for lb, sc in zip(row_labels, row_scores, strict=True)
                    if int(lb) in self._by_label and (min_similarity is None or sc >= min_similarity)]
            out.append(hits)
        return out

    def _top(self, scores: np.ndarray, limit: int, min_similarity: float | None) -> list[tuple[EntityEmbedding, float]]:
        n = len(scores)
        k = min(limit, n)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        out = []
        for i in top:
            score = float(scores[i])
            if score == -np.inf or (min_similarity is not None and score < min_similarity):
                break
            out.append((self._items[i], score))
        return out


def merge_matches(*lists: list[tuple[EntityEmbedding, float]], limit: int) -> list[tuple[EntityEmbedding, float]]:
    return sorted((m for lst in lists for m in lst), key=lambda m: -m[1])[:limit]

