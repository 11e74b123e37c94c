"""Embeds evaluation images through the worker's own crop and encoder code, in batches."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from reid_stream.encoders import Encoder
from reid_stream.events import BBox
from reid_stream.vision.images import ALLOWED_FORMATS, decode_crop


def crop_of(data: bytes, bbox: BBox | None, size: int, max_pixels: int) -> np.ndarray:
    """The letterboxed crop the worker would encode: the box, or the whole image (a dataset's crop file)."""
    if bbox is None:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:  # dataset files: the worker's formats
            bbox = BBox(x1=0, y1=0, x2=img.width, y2=img.height)
    return decode_crop(data, bbox, size, max_pixels)


def embed_images(encoder: Encoder, paths: Sequence[Path], max_pixels: int, boxes: Sequence[BBox | None] | None = None,
                 batch: int = 32, desc: str = "embedding") -> np.ndarray:
    """(n, dim) unit vectors, one per image (or box of an image), in order; images over max_pixels
    (REID_MAX_IMAGE_PIXELS) are refused as the worker refuses them."""
    out: list[np.ndarray] = []
    boxes = boxes if boxes is not None else [None] * len(paths)
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for start in range(0, len(paths), batch):
            crops = [crop_of(Path(p).read_bytes(), b, encoder.input_size, max_pixels)
                     for p, b in zip(paths[start:start + batch], boxes[start:start + batch], strict=True)]
            out.append(encoder.encode(np.stack(crops)))
            bar.update(len(crops))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
