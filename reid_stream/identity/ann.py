"""An approximate (HNSW, hnswlib) companion to the exact matrix, for stores far above the default cap.

It is built in a background thread from a snapshot of the matrix; until it is ready, and for any
query it cannot answer (a camera filter), search stays exact. Adds and removes made while it builds
are replayed onto it before it takes over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)
_BUILDER = ThreadPoolExecutor(1, thread_name_prefix="reid-ann")


class HnswCompanion:
    M = 16
    EF_CONSTRUCTION = 128
    EF_SEARCH = 160  # what recall@10 >= 0.99 needed at 1e6 in bench/results/search.md

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = None
        self._future: Future[object] | None = None
        self._lock = threading.Lock()
        self._replay: list[tuple[str, int, np.ndarray | None]] = []  # ("add"|"del", label, vector)

    @property
    def ready(self) -> bool:
        if self._index is None and self._future is not None and self._future.done():
            self._take_over()
        return self._index is not None

    def build(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Start building from a snapshot (copied, so the caller may keep changing its matrix)."""
        if self._future is not None:
            return
        snapshot_labels, snapshot = labels.copy(), vectors.copy()
        self._future = _BUILDER.submit(self._build, snapshot_labels, snapshot)

    def _build(self, labels: np.ndarray, vectors: np.ndarray) -> object:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(1024, 2 * len(labels)), ef_construction=self.EF_CONSTRUCTION, M=self.M,
                         allow_replace_deleted=True)
        index.add_items(vectors, labels, num_threads=-1)
        index.set_ef(self.EF_SEARCH)
        log.info("approximate index ready: %d vectors", len(labels))
        return index

    def _take_over(self) -> None:
        assert self._future is not None
        index = self._future.result()
        with self._lock:
            for op, label, vec in self._replay:
                self._apply(index, op, label, vec)
            self._replay.clear()
        self._index = index

    def _apply(self, index: object, op: str, label: int, vec: np.ndarray | None) -> None:
        if op == "add":
            if index.get_current_count() >= index.get_max_elements():
                index.resize_index(2 * index.get_max_elements())
            index.add_items(vec[None, :], np.asarray([label]), replace_deleted=True)
        else:
            with contextlib.suppress(RuntimeError):  # never added: added and removed during the build
                index.mark_deleted(label)

    def add(self, label: int, vec: np.ndarray) -> None:
        self._change("add", label, np.array(vec, dtype=np.float32))

    def remove(self, label: int) -> None:
        self._change("del", label, None)

    def _change(self, op: str, label: int, vec: np.ndarray | None) -> None:
        if self._index is not None:
            self._apply(self._index, op, label, vec)
        elif self._future is not None:
            with self._lock:
                self._replay.append((op, label, vec))

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels and cosine scores (inner products of unit vectors), best first, for each query row."""
        assert self._index is not None
        k = min(k, self._index.get_current_count())
        labels, distances = self._index.knn_query(queries, k=k, num_threads=1)
        return labels, 1.0 - distances
