"""Seeded randomness: one independent generator per purpose, so adding a draw never shifts the draws elsewhere."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def _rng(seed: int, *key: object) -> np.random.Generator:
    """An independent generator per purpose: adding a draw somewhere never shifts the draws elsewhere."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *(zlib.crc32(str(k).encode()) for k in key)]
    return np.random.default_rng(np.random.SeedSequence(words))


def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float] | None = None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]
