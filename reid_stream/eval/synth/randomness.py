"""Seeded randomness: one independent generator per purpose, so adding a draw never shifts the draws elsewhere.

A seed is the site's `seed` (who the people are, what the cameras look like) or, for everything that happens on one
visit of the site (routes, poses, occluders, sensor noise, ...), `_session_seed(seed, session)`: the plain seed for
session 0, so its draws are those of a site without sessions, and (seed, session) for a later session.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

Seed = int | tuple[int, ...]


def _session_seed(seed: int, session: int) -> Seed:
    """The seed of what happens during `session`: `seed` itself for session 0, (seed, session) after it."""
    return seed if session == 0 else (seed, session)


def _rng(seed: Seed, *key: object) -> np.random.Generator:
    """An independent generator per purpose: adding a draw somewhere never shifts the draws elsewhere."""
    parts = seed if isinstance(seed, tuple) else (seed,)
    words = [w for s in parts for w in (s & 0xFFFFFFFF, (s >> 32) & 0xFFFFFFFF)]
    words += [zlib.crc32(str(k).encode()) for k in key]
    return np.random.default_rng(np.random.SeedSequence(words))


def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float] | None = None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]
