"""The design's Python API for callers outside the stream: embed one image, find matching entities."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from reid_stream.config import Settings
from reid_stream.encoder import Encoder, load_encoder
from reid_stream.events import BBox
from reid_stream.images import crop_letterbox, decode_image, read_path


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

    async def generate_embedding(self, image_path: str, roi: BBox | dict[str, float] | tuple[float, ...] | None = None,
                                 ) -> np.ndarray:
        """The unit-length embedding of an image under REID_IMAGE_ROOTS, or of its roi (x1, y1, x2, y2)."""
        box = _as_bbox(roi)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._embed, image_path, box)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _as_bbox(roi: Any) -> BBox | None:
    if roi is None or isinstance(roi, BBox):
        return roi
    if isinstance(roi, dict):
        return BBox.model_validate(roi)
    x1, y1, x2, y2 = roi
    return BBox(x1=x1, y1=y1, x2=x2, y2=y2)
