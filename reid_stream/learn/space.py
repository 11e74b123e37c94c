"""A site's similarity space: the camera bias removed, then a learned projection, and the threshold that
goes with it. Version 0 is the encoder's own space, unchanged.

Stored rows keep the encoder's raw vectors; a space is applied when a copy is read and to each new detection,
so adopting or rolling back a version never re-encodes an image.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Space:
    version: int
    model: str
    entity_type: str
    camera_means: dict[str, np.ndarray] = field(default_factory=dict)  # raw space, per camera
    neutral: np.ndarray | None = None  # what a camera with no detections yet takes: the site's mean
    center: np.ndarray | None = None  # the mean of the bias-free vectors, removed before projecting
    projection: np.ndarray | None = None  # (raw dim, dim); None: version 0, the raw space
    threshold: float | None = None  # None: the configured REID_SIMILARITY_THRESHOLD
    report: dict[str, Any] = field(default_factory=dict)  # evidence counts, validation, timings

    @classmethod
    def raw(cls, model: str, entity_type: str) -> Space:
        return cls(0, model, entity_type)

    @property
    def is_raw(self) -> bool:
        return self.projection is None

    def dim(self, raw_dim: int) -> int:
        return raw_dim if self.projection is None else int(self.projection.shape[1])

    def apply(self, vectors: np.ndarray, cameras: Sequence[str]) -> np.ndarray:
        """Unit vectors in this space, one per raw vector and the camera that saw it."""
        if self.projection is None:
            return vectors
        assert self.neutral is not None and self.center is not None
        bias = np.stack([self.camera_means.get(c, self.neutral) for c in cameras]) if len(cameras) else 0.0
        return unit_rows((unit_rows(vectors - bias) - self.center) @ self.projection)

    def to_bytes(self) -> bytes:
        cams = sorted(self.camera_means)
        meta = {"version": self.version, "model": self.model, "entity_type": self.entity_type,
                "threshold": self.threshold, "cameras": cams, "report": self.report}
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if self.projection is not None:
            assert self.neutral is not None and self.center is not None
            arrays.update(neutral=self.neutral, center=self.center, projection=self.projection,
                          camera_means=np.stack([self.camera_means[c] for c in cams]) if cams
                          else np.zeros((0, len(self.neutral)), np.float32))
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # no pickles: loaded with allow_pickle=False
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Space:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if "projection" not in z:
                return cls(meta["version"], meta["model"], meta["entity_type"], threshold=meta["threshold"],
                           report=meta["report"])
            means = z["camera_means"]
            return cls(meta["version"], meta["model"], meta["entity_type"],
                       {c: means[i] for i, c in enumerate(meta["cameras"])}, z["neutral"], z["center"],
                       z["projection"], meta["threshold"], meta["report"])

    def summary(self) -> dict[str, Any]:
        """What the views and /metrics say of it."""
        return {"version": self.version, "model": self.model, "entity_type": self.entity_type,
                "threshold": self.threshold, "cameras": len(self.camera_means),
                "dim": None if self.projection is None else int(self.projection.shape[1]),
                "validation": self.report.get("validation"), "evidence": self.report.get("evidence")}
