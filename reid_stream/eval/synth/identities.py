"""Who the people are: appearance attributes, the palettes they are drawn from, and look-alike near-twins.

An identity lives in its clothes (upper colour and pattern, sleeves, lower colour and type, shoes), skin, hair,
accessory (backpack, shoulder bag, hat), build and height: `ATTRIBUTES`, in the order identities.json lists them
for every identity. A near-twin differs from another identity in exactly ONE attribute (picked with the weights of
`TWIN_CHANGES`): visible, but often only from some views or at some scales; twins are the hard negatives.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence

import numpy as np

from reid_stream.eval.synth.randomness import _pick, _rng

# attributes of an identity, in a fixed order (identities.json lists them all for every identity)
ATTRIBUTES = ("upper_color", "upper_pattern", "pattern_color", "sleeves", "lower_color", "lower_type", "shoe_color",
              "skin", "hair_color", "hair_length", "accessory", "accessory_color", "build", "height_m")
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
HAIR_LENGTHS = ("short", "medium", "long")
ACCESSORIES = ("none", "backpack", "shoulder_bag", "hat")
# what a near-twin changes, with weights: visible, but often only from some views or at some scales
TWIN_CHANGES = {"upper_color": 4, "upper_pattern": 2, "pattern_color": 1, "sleeves": 1, "lower_color": 2,
                "lower_type": 1, "shoe_color": 1, "hair_color": 1, "hair_length": 1, "accessory": 3, "build": 1}

CLOTH_NEUTRALS = ((22, 22, 25), (48, 50, 56), (92, 92, 96), (135, 135, 138), (185, 185, 185), (228, 228, 222),
                  (28, 36, 70), (46, 62, 104), (70, 92, 128), (196, 178, 142), (150, 132, 96), (92, 62, 42),
                  (84, 90, 56), (104, 30, 40), (60, 40, 34))
SKIN_TONES = ((250, 218, 190), (236, 190, 156), (220, 168, 128), (196, 138, 98), (160, 106, 72), (118, 78, 52),
              (86, 58, 40))
HAIR_COLORS = ((18, 16, 15), (38, 28, 22), (64, 44, 30), (100, 70, 42), (150, 112, 66), (196, 164, 108),
               (120, 120, 118), (200, 196, 190), (130, 52, 30))
HAIR_WEIGHTS = (6, 6, 5, 3, 2, 1, 1, 1, 1)


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: float) -> list[int]:
    return [min(255, max(0, int(c + d))) for c, d in zip(rgb, rng.normal(0, amount, 3).tolist(), strict=True)]


def _hsv(h: float, s: float, v: float) -> list[int]:
    return [round(c * 255) for c in colorsys.hsv_to_rgb(h % 1.0, s, v)]


def _cloth_color(rng: np.random.Generator, p_neutral: float = 0.6) -> list[int]:
    if rng.random() < p_neutral:
        return _jitter(_pick(rng, CLOTH_NEUTRALS), rng, 8)
    return _hsv(rng.random(), rng.uniform(0.45, 0.9), rng.uniform(0.35, 0.9))


def _near_color(rgb: Sequence[int], rng: np.random.Generator) -> list[int]:
    """A colour a person could confuse with `rgb` at a glance (a near-twin's garment)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if s > 0.3 and v > 0.25:
        h += rng.choice((-1, 1)) * rng.uniform(0.06, 0.11)
    else:
        dv = rng.uniform(0.16, 0.26)
        v = v + dv if v + dv <= 0.95 else v - dv
        s = min(1.0, s + rng.uniform(0.0, 0.25))
        h = rng.random() if s > 0.2 and rng.random() < 0.5 else h
    return _hsv(h, s, v)


def _sample_attributes(rng: np.random.Generator) -> dict:
    pattern = _pick(rng, PATTERNS, (5, 1.3, 0.8, 1.2, 1.5))
    upper = _cloth_color(rng, 0.55)
    second = _cloth_color(rng, 0.5)
    while sum(abs(a - b) for a, b in zip(upper, second, strict=True)) < 120:
        second = _cloth_color(rng, 0.3)
    lower = _jitter(_pick(rng, ((46, 62, 104), (70, 92, 128), (22, 22, 25), (60, 60, 64), (150, 132, 96))), rng, 10) \
        if rng.random() < 0.7 else _cloth_color(rng, 0.4)
    return {
        "upper_color": upper,
        "upper_pattern": pattern,
        "pattern_color": second,
        "sleeves": _pick(rng, ("long", "short"), (2, 1)),
        "lower_color": lower,
        "lower_type": _pick(rng, LOWER_TYPES, (7, 1.5, 1.5)),
        "shoe_color": _jitter(_pick(rng, ((20, 20, 20), (235, 235, 235), (90, 60, 40), (60, 60, 70))), rng, 10)
        if rng.random() < 0.8 else _cloth_color(rng, 0.0),
        "skin": _jitter(_pick(rng, SKIN_TONES), rng, 5),
        "hair_color": _jitter(_pick(rng, HAIR_COLORS, HAIR_WEIGHTS), rng, 5),
        "hair_length": _pick(rng, HAIR_LENGTHS, (5, 2, 3)),
        "accessory": _pick(rng, ACCESSORIES, (4, 3, 2, 2)),
        "accessory_color": _cloth_color(rng, 0.6),
        "build": round(float(rng.uniform(0.85, 1.2)), 2),
        "height_m": round(float(rng.uniform(1.55, 1.95)), 2),
    }


def _twin_of(source: dict, rng: np.random.Generator) -> tuple[dict, str]:
    """A copy of `source` with exactly one attribute changed (visibly, but not by much)."""
    names = [n for n in TWIN_CHANGES if not (n == "pattern_color" and source["upper_pattern"] == "solid")]
    name = _pick(rng, names, [TWIN_CHANGES[n] for n in names])
    twin = json.loads(json.dumps(source))
    if name in ("upper_color", "pattern_color", "lower_color", "hair_color"):
        twin[name] = _near_color(source[name], rng)
    elif name == "shoe_color":
        twin[name] = _cloth_color(rng, 0.3)
    elif name == "build":
        twin[name] = round(source["build"] + (0.22 if source["build"] < 1.02 else -0.22), 2)
    else:
        options = {"upper_pattern": PATTERNS, "sleeves": ("long", "short"), "lower_type": LOWER_TYPES,
                   "hair_length": HAIR_LENGTHS, "accessory": ACCESSORIES}[name]
        twin[name] = _pick(rng, [o for o in options if o != source[name]])
    if twin[name] == source[name]:  # a colour that came back the same: force a difference
        twin[name] = [255 - c for c in source[name]] if isinstance(source[name], list) else twin[name]
    return twin, name


def _identities(ids: int, twins: float, seed: int) -> list[dict]:
    rng = _rng(seed, "identities")
    n_twins = min(round(twins * ids), ids // 2)
    pids = list(range(1, ids + 1))
    twin_pids = sorted(int(p) for p in rng.choice(pids, size=n_twins, replace=False)) if n_twins else []
    plain = [p for p in pids if p not in twin_pids]
    sources = [int(s) for s in rng.choice(plain, size=n_twins, replace=False)] if n_twins else []
    people: dict[int, dict] = {}
    for pid in plain:
        people[pid] = {"pid": pid, "attributes": _sample_attributes(_rng(seed, "attributes", pid)),
                       "twin_of": None, "changed": None}
    for pid, src in zip(twin_pids, sources, strict=True):
        attrs, changed = _twin_of(people[src]["attributes"], _rng(seed, "twin", pid))
        people[pid] = {"pid": pid, "attributes": attrs, "twin_of": src, "changed": changed}
    return [people[p] for p in pids]
