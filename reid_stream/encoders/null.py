"""The null encoder: no model, for benchmarks and tests that measure the pipeline around the encoder."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
from PIL import Image

from reid_stream.config import Settings
from reid_stream.encoders.base import crop_array, l2_normalize

log = logging.getLogger(__name__)


class NullEncoder:
    """No model: a pseudo-random unit vector chosen by a hash of the crop's pixels (same crop, same vector).

    The vector sums ROWS_PICKED rows of a fixed Gaussian table, picked by the hash, so a whole batch is
    one gather: the benchmark that uses it measures the pipeline, not the stand-in. Distinct crops give
    near-orthogonal vectors. Only for benchmarks and tests that measure the pipeline around the encoder.
    """

    TABLE_ROWS = 4096
    ROWS_PICKED = 4

    def __init__(self, dim: int = 768, size: int = 32, crops_per_s: float = 0.0) -> None:
        self.model_id = "null"
        self.crops_per_s = crops_per_s  # > 0: each batch also waits as long as an accelerator at this rate would
        self.dim = dim
        self.input_size = size
        self.device = "none"
        self._table = np.random.default_rng(0).standard_normal((self.TABLE_ROWS, dim), dtype=np.float32)

    @classmethod
    def from_config(cls, settings: Settings) -> NullEncoder:
        log.warning("!!! REID_ENCODER=null: no model runs; embeddings are hash-seeded random vectors. "
                    "For benchmarks and tests only !!!")
        return cls(crops_per_s=settings.null_encoder_crops_per_s)

    def preprocess(self, crop: Image.Image) -> np.ndarray:
        return crop_array(crop)

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        return None  # no text tower

    def encode(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        digests = b"".join(hashlib.blake2b(np.ascontiguousarray(item).tobytes(), digest_size=2 * self.ROWS_PICKED)
                           .digest() for item in batch)
        rows = np.frombuffer(digests, dtype="<u2").reshape(len(batch), self.ROWS_PICKED) % self.TABLE_ROWS
        if self.crops_per_s > 0:
            # A GPU's kernels run while the host thread waits without the GIL: sleeping does just that.
            time.sleep(len(batch) / self.crops_per_s)
        return l2_normalize(self._table[rows].sum(axis=1))
