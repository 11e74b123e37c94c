"""A deterministic, hard, synthetic multi-camera person re-identification benchmark (numpy + Pillow only).

Real ReID datasets cannot be downloaded here, so this draws one: articulated people whose identity lives in
their clothes (upper colour and pattern, sleeves, lower colour and type, shoes), skin, hair, accessory
(backpack, shoulder bag, hat), build and height; seen walking from the front, the back, in profile or
three-quarter, at a random point of their stride; by cameras that each distort the picture their own way
(gain, white balance, contrast, saturation, gamma, blur, sensor noise, JPEG quality, person scale, scene and
clutter, frame-to-frame exposure wander); with loose or edge-cut boxes, occluders (poles, bins, boards) and
motion blur; and near-twins, identities that differ from another one in exactly ONE attribute, as hard
negatives. Several people are on site at once, some walk in pairs (two people in one frame), and every
identity walks the camera graph no faster than its minimum transit times.

`generate(out)` writes, byte-identical for the same arguments:

- a Market-1501 layout: ``query/`` (one crop per identity and camera), ``bounding_box_test/`` (the other
  crops, plus junk detections with pid 0000: background-only or half-body boxes), an empty
  ``bounding_box_train/``; crop names ``{pid:04d}_c{cam}s1_{frame:06d}_{n:02d}.jpg`` where frame is the 25 fps
  tick (one clock for all cameras) and n the detection's number inside that frame;
- the full frames ``frames/c{cam}/{frame:06d}.jpg`` and ``stream.jsonl``, one detection per line in time order
  (a `reid_stream.events.Detection` plus ``true_id``, 0 for junk, and ``crop``, its crop file);
- ``site.json`` (cameras with their nuisances, the camera graph with min/typical transit seconds),
  ``identities.json`` (attributes, twins, visits) and ``README.txt``.

Crops are exact: every bbox is aligned to the 8-pixel JPEG block grid, and frames and crops are saved with the
same quality and 4:4:4 chroma, so decoding a crop file gives exactly the pixels of decoding its frame and
cutting the bbox. With ``image_format="png"`` the camera's JPEG artefacts are baked in and all is lossless.

`nuisance` (default 1) scales the cameras' photometric differences; `contact_sheet` draws a grid to look at;
`baseline_scores` and `pixel_hardness` are model-free reference points; `main` is the command line.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import re
import shutil
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from reid_stream.eval.metrics import retrieval_metrics
from reid_stream.images import ALLOWED_FORMATS

GENERATOR_VERSION = 1
FPS = 25
FRAME_W, FRAME_H = 320, 240
START = datetime(2026, 1, 1, 8, 0, 0, tzinfo=UTC)
NOISE_PAD = 48  # the sensor noise field is this much larger than a frame, cut at random offsets
GRID = 8  # bboxes snap to the JPEG block grid so crops and frames decode to the same pixels
CROP_RE = re.compile(r"([-\d]+)_c(\d)s1_(\d{6})_(\d{2})\.(jpg|png)$")

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
SITE_NAMES = ("entrance", "lobby", "corridor", "car park", "platform", "plaza", "shop front", "stairs", "exit")


@dataclass(frozen=True)
class SynthSummary:
    ids: int
    cameras: int
    seed: int
    query: int
    gallery: int
    distractors: int
    detections: int
    frames: int
    twin_pairs: int
    shared_frames: int  # frames that hold more than one labelled person


# ---------------------------------------------------------------------------------------------- randomness


def _rng(seed: int, *key: object) -> np.random.Generator:
    """An independent generator per purpose: adding a draw somewhere never shifts the draws elsewhere."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *(zlib.crc32(str(k).encode()) for k in key)]
    return np.random.default_rng(np.random.SeedSequence(words))


def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float] | None = None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: float) -> list[int]:
    return [min(255, max(0, int(c + d))) for c, d in zip(rgb, rng.normal(0, amount, 3).tolist(), strict=True)]


def _hsv(h: float, s: float, v: float) -> list[int]:
    return [round(c * 255) for c in colorsys.hsv_to_rgb(h % 1.0, s, v)]


def _cloth_color(rng: np.random.Generator, p_neutral: float = 0.6) -> list[int]:
    if rng.random() < p_neutral:
        return _jitter(_pick(rng, CLOTH_NEUTRALS), rng, 8)
    return _hsv(rng.random(), rng.uniform(0.45, 0.9), rng.uniform(0.35, 0.9))


def _muted(rgb: Sequence[int], keep: float) -> list[int]:
    """`rgb` with only `keep` of its colourfulness: scenes are greyer than people's clothes."""
    y = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return [int(y + (c - y) * keep) for c in rgb]


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


# ---------------------------------------------------------------------------------------------- identities


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


# ---------------------------------------------------------------------------------------------- drawing people


def _limb(p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float) -> list[tuple[float, float]]:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1e-6
    nx, ny = -dy / n, dx / n
    return [(p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2), (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2), (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2)]


def _toward(p: tuple[float, float], angle: float, length: float) -> tuple[float, float]:
    """The point `length` away from p; angle 0 points down, positive angles point forward (+x)."""
    return p[0] + math.sin(angle) * length, p[1] + math.cos(angle) * length


def _shade(rgb: Sequence[int], f: float) -> tuple[int, int, int, int]:
    r, g, b = (min(255, max(0, int(c * f))) for c in rgb)
    return r, g, b, 255


class _Figure:
    """Draws one person on a supersampled RGBA canvas. Body coordinates: x in body heights from the centre line
    (+x = the person's left in front view, forward in side view), y in body heights from the top of the head."""

    def __init__(self, attrs: dict, scale: float):
        self.a = attrs
        self.s = scale
        self.w = int(0.9 * scale)
        self.h = int(1.08 * scale)
        self.cx = self.w / 2
        self.top = 0.04 * scale
        self.img = Image.new("RGBA", (self.w, self.h), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self._pattern: Image.Image | None = None

    def at(self, p: tuple[float, float]) -> tuple[float, float]:
        """Canvas pixels of a point in body coordinates."""
        return self.cx + p[0] * self.s, self.top + p[1] * self.s

    def _masked(self, fill: Image.Image, box: tuple[float, float, float, float], shape) -> None:
        """Paste the patterned `fill` through a mask that `shape(draw, dx, dy)` draws, inside `box` only."""
        x0, y0 = max(0, int(box[0]) - 1), max(0, int(box[1]) - 1)
        x1, y1 = min(self.w, int(box[2]) + 2), min(self.h, int(box[3]) + 2)
        if x1 <= x0 or y1 <= y0:
            return
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        shape(ImageDraw.Draw(mask), x0, y0)
        self.img.paste(fill.crop((x0, y0, x1, y1)), (x0, y0), mask)

    def poly(self, pts: Sequence[tuple[float, float]], fill, outline: float | None = 0.7) -> None:
        """A polygon in a colour (RGBA tuple) or a pattern (image), outlined a little darker."""
        pix = [self.at(p) for p in pts]
        if isinstance(fill, Image.Image):
            xs, ys = [p[0] for p in pix], [p[1] for p in pix]
            self._masked(fill, (min(xs), min(ys), max(xs), max(ys)),
                         lambda d, dx, dy: d.polygon([(x - dx, y - dy) for x, y in pix], fill=255))
            base = self.a["upper_color"]
        else:
            self.draw.polygon(pix, fill=fill)
            base = fill[:3]
        if outline is not None:
            self.draw.line([*pix, pix[0]], fill=_shade(base, outline), width=max(1, round(self.s / 160)))

    def ellipse(self, c: tuple[float, float], rx: float, ry: float, fill) -> None:
        x, y = self.at(c)
        box = (x - rx * self.s, y - ry * self.s, x + rx * self.s, y + ry * self.s)
        if isinstance(fill, Image.Image):
            self._masked(fill, box, lambda d, dx, dy: d.ellipse((box[0] - dx, box[1] - dy, box[2] - dx, box[3] - dy),
                                                                fill=255))
        else:
            self.draw.ellipse(box, fill=fill)

    def segment(self, p0, p1, w0: float, w1: float, fill, outline: float | None = 0.7) -> None:
        """A limb from p0 to p1, w0 and w1 wide there, with a rounded joint at p1."""
        self.poly(_limb(p0, p1, w0, w1), fill, outline)
        self.ellipse(p1, w1 / 2, w1 / 2, fill)

    def pattern(self) -> Image.Image | tuple:
        """The upper garment's fill: a colour, or an image with stripes or checks in body coordinates."""
        a = self.a
        kind = a["upper_pattern"]
        if kind in ("solid", "logo"):
            return _shade(a["upper_color"], 1.0)
        if self._pattern is None:
            base, second = _shade(a["upper_color"], 1.0), _shade(a["pattern_color"], 1.0)
            img = Image.new("RGBA", (self.w, self.h), base)
            d = ImageDraw.Draw(img)
            if kind == "hstripes":
                period = 0.045 * self.s
                for i in range(int(self.h / period) + 1):
                    y = self.top + i * period
                    d.rectangle((0, y, self.w, y + 0.4 * period), fill=second)
            elif kind == "vstripes":
                period = 0.04 * self.s
                for i in range(-int(self.w / period) - 1, int(self.w / period) + 1):
                    x = self.cx + (i - 0.25) * period
                    d.rectangle((x, 0, x + 0.4 * period, self.h), fill=second)
            else:  # checks: a plaid, bands both ways in a mixed colour, crossings in the second colour
                period = 0.07 * self.s
                mixed = tuple(round(0.45 * b + 0.55 * c) for b, c in zip(base, second, strict=True))
                bu = ((np.arange(self.w) - self.cx) / period) % 1.0 < 0.35
                bv = ((np.arange(self.h) - self.top) / period) % 1.0 < 0.35
                palette = np.array([base, mixed, second], np.uint8)
                img = Image.fromarray(palette[bv[:, None].astype(np.uint8) + bu[None, :]], "RGBA")
            self._pattern = img
        return self._pattern


def _draw_person(attrs: dict, view: str, phase: float, height_px: float, swing: float) -> tuple[Image.Image, float]:
    """The person as a PREMULTIPLIED RGBA image and the feet's y in it (the feet are at the centre column)."""
    ss = 3 if height_px < 80 else 2  # supersampling: PIL draws without anti-aliasing
    f = _Figure(attrs, height_px * ss)
    a = attrs
    b = a["build"] * 1.1  # clothed widths
    skin, hair = a["skin"], a["hair_color"]
    lower, acc = a["lower_color"], a["accessory_color"]
    side = view in ("left", "right")
    upper_fill = f.pattern()
    bob = 0.008 * abs(math.cos(phase))  # the body is lowest at mid-stride
    head_c = (0.0, 0.068 + bob)
    shoulder_y, waist_y, hip_y = 0.19 + bob, 0.44 + bob, 0.5 + bob
    knee_len, shin_len = 0.235, 0.225
    rx, ry = (0.056 if side else 0.052), 0.066

    def shoes(ankle: tuple[float, float], forward: float, color, far: bool = False) -> None:
        col = _shade(color, 0.7 if far else 1.0)
        if side:
            heel, toe = (ankle[0] - 0.025, ankle[1] + 0.005), (ankle[0] + forward, ankle[1] + 0.01)
            f.poly([(heel[0], heel[1] - 0.02), (toe[0] - 0.01, toe[1] - 0.022), (toe[0] + 0.01, toe[1] + 0.012),
                    (heel[0], heel[1] + 0.014)], col)
        else:
            f.ellipse((ankle[0], ankle[1] + 0.012), 0.028, 0.018, col)

    def leg(hip: tuple[float, float], thigh_a: float, shin_a: float, far: bool) -> None:
        dim = 0.72 if far else 1.0  # the far side of the body is in shadow
        knee = _toward(hip, thigh_a, knee_len)
        ankle = _toward(knee, shin_a, shin_len)
        kind = a["lower_type"]
        leg_skin = _shade(skin, dim)
        thigh_col = _shade(lower, dim) if kind in ("trousers", "shorts") else leg_skin
        shin_col = _shade(lower, dim) if kind == "trousers" else leg_skin
        if kind == "shorts":
            mid = (hip[0] + (knee[0] - hip[0]) * 0.55, hip[1] + (knee[1] - hip[1]) * 0.55)
            f.segment(hip, knee, 0.085 * b, 0.055 * b, leg_skin)
            f.segment(hip, mid, 0.092 * b, 0.075 * b, thigh_col)
        else:
            f.segment(hip, knee, 0.085 * b, 0.058 * b, thigh_col)
        f.segment(knee, ankle, 0.058 * b if kind == "trousers" else 0.05 * b, 0.042 * b, shin_col)
        shoes(ankle, 0.065 if side else 0.0, a["shoe_color"], far)

    def arm(shoulder: tuple[float, float], upper_a: float, fore_a: float, far: bool) -> None:
        dim = 0.72 if far else 1.0
        elbow = _toward(shoulder, upper_a, 0.175)
        wrist = _toward(elbow, fore_a, 0.15)
        sleeve = upper_fill if not far else _shade(a["upper_color"], dim)
        arm_skin = _shade(skin, dim)
        if a["sleeves"] == "long":
            f.segment(shoulder, elbow, 0.06 * b, 0.05 * b, sleeve)
            f.segment(elbow, wrist, 0.05 * b, 0.04 * b, sleeve)
        else:
            mid = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.6, shoulder[1] + (elbow[1] - shoulder[1]) * 0.6)
            f.segment(shoulder, elbow, 0.05 * b, 0.042 * b, arm_skin)
            f.segment(elbow, wrist, 0.042 * b, 0.036 * b, arm_skin)
            f.segment(shoulder, mid, 0.064 * b, 0.058 * b, sleeve)
        f.ellipse(_toward(wrist, fore_a, 0.018), 0.021 * b, 0.024, arm_skin)

    def long_hair_behind() -> None:
        if a["hair_length"] == "long":
            f.poly([(-rx * 1.15, head_c[1] - 0.01), (rx * 1.15, head_c[1] - 0.01), (rx * 1.35, 0.3 + bob),
                    (-rx * 1.35, 0.3 + bob)], _shade(hair, 0.85))

    def skirt(half_top: float, half_bottom: float) -> None:
        if a["lower_type"] == "skirt":
            f.poly([(-half_top, waist_y), (half_top, waist_y), (half_bottom, 0.7 + bob), (-half_bottom, 0.7 + bob)],
                   _shade(lower, 1.0))

    def head_and_hair(facing: str, turn: float = 0.0) -> None:
        f.poly(_limb((0.0, 0.1 + bob), (0.0, shoulder_y + 0.01), 0.04, 0.045), _shade(skin, 0.9), None)
        f.ellipse(head_c, rx, ry, _shade(skin, 1.0))
        hcol = _shade(hair, 1.0)
        hx, hy = head_c
        length = a["hair_length"]
        if facing == "front":
            f.ellipse((hx - 0.3 * turn * rx, hy - 0.026), rx * 1.06, ry * 0.62, hcol)  # crown and fringe
            if length != "short":
                for sgn in (-1, 1):
                    f.poly([(sgn * rx * 0.75, hy - 0.02), (sgn * rx * 1.12, hy - 0.02),
                            (sgn * rx * 1.1, hy + (0.05 if length == "medium" else 0.09)),
                            (sgn * rx * 0.85, hy + 0.045)], hcol, None)
            eye = _shade(skin, 0.35)
            for sgn in (-1, 1):
                f.ellipse((hx + (sgn * 0.4 + 0.5 * turn) * rx, hy + 0.004), 0.006, 0.005, eye)
            f.ellipse((hx + 0.5 * turn * rx, hy + 0.034), 0.012, 0.004, _shade(skin, 0.6))
        elif facing == "back":
            f.ellipse((hx - 0.3 * turn * rx, hy - 0.004), rx * 1.07, ry * 1.02, hcol)  # turned: a cheek shows
            if length != "short":
                low = 0.135 if length == "medium" else 0.3
                f.poly([(-rx * 1.05, hy), (rx * 1.05, hy), (rx * (0.95 if length == "medium" else 1.3), low + bob),
                        (-rx * (0.95 if length == "medium" else 1.3), low + bob)], hcol, None)
        else:  # side, facing +x
            f.ellipse((hx + rx * 0.85, hy + 0.012), 0.012, 0.012, _shade(skin, 1.0))  # nose
            f.poly([(hx - rx * 1.08, hy + 0.03), (hx - rx * 1.02, hy - ry * 0.7), (hx, hy - ry * 1.06),
                    (hx + rx * 0.9, hy - ry * 0.72), (hx + rx * 0.55, hy - ry * 0.35), (hx, hy - ry * 0.2),
                    (hx - rx * 0.1, hy + 0.02), (hx - rx * 0.4, hy + 0.05)], hcol, None)
            if length != "short":
                low = 0.13 if length == "medium" else 0.29
                f.poly([(hx - rx * 1.08, hy - 0.01), (hx - rx * 0.2, hy + 0.01), (hx - rx * 0.3, low + bob),
                        (hx - rx * 1.25, low + bob - 0.01)], hcol, None)
            f.ellipse((hx + rx * 0.5, hy), 0.006, 0.005, _shade(skin, 0.35))
        if a["accessory"] == "hat":
            hat = _shade(acc, 1.0)
            f.poly([(hx - rx * 1.1, hy - 0.02), (hx - rx * 0.9, hy - ry * 0.85), (hx, hy - ry * 1.18),
                    (hx + rx * 0.9, hy - ry * 0.85), (hx + rx * 1.1, hy - 0.02)], hat)
            if facing == "front":
                f.ellipse((hx, hy - 0.02), rx * 1.15, 0.01, _shade(acc, 0.7))
            elif facing == "side":
                f.poly([(hx + rx * 0.8, hy - 0.03), (hx + rx * 1.9, hy - 0.018), (hx + rx * 1.9, hy - 0.008),
                        (hx + rx * 0.8, hy - 0.012)], _shade(acc, 0.75))

    if side:
        phi = math.sin(phase)
        amp = 0.42 * swing
        depth_chest, depth_waist = 0.068 * b, 0.062 * b
        lean = 0.012
        shoulder = (0.006, shoulder_y + 0.012)
        hip = (0.0, hip_y)

        def leg_angles(sign: int) -> tuple[float, float]:  # the knee flexes most while the leg swings forward
            thigh = amp * sign * phi
            flex = 0.08 + 0.55 * max(0.0, -math.sin(phase + (0 if sign > 0 else math.pi) + 0.9))
            return thigh, thigh - flex

        far_s, near_s = -phi, phi
        arm(shoulder, -0.8 * amp * far_s, -0.8 * amp * far_s + 0.35, far=True)
        leg(hip, *leg_angles(-1), far=True)
        leg(hip, *leg_angles(1), far=False)
        skirt(depth_waist * 1.05, depth_waist * 1.8)
        f.poly([(-depth_chest * 0.9 + lean, shoulder_y - 0.005), (depth_chest * 0.7 + lean, shoulder_y - 0.01),
                (depth_chest * 1.05 + lean, 0.3 + bob), (depth_waist * 1.0, waist_y), (depth_waist * 1.1, 0.53 + bob),
                (-depth_waist * 1.15, 0.53 + bob), (-depth_waist * 1.05, waist_y), (-depth_chest * 1.0, 0.3 + bob)],
               upper_fill)
        if a["accessory"] == "backpack":
            x0 = -depth_chest * 0.95
            f.poly([(x0 + 0.01, shoulder_y + 0.02), (x0 - 0.07, shoulder_y + 0.035), (x0 - 0.08, 0.43 + bob),
                    (x0 + 0.005, 0.44 + bob)], _shade(acc, 1.0))
            f.poly(_limb((x0 + 0.005, shoulder_y + 0.02), (depth_chest * 0.4, shoulder_y + 0.01), 0.015, 0.015),
                   _shade(acc, 0.7), None)
        if a["accessory"] == "shoulder_bag":
            f.poly(_limb((depth_chest * 0.6, shoulder_y + 0.005), (-depth_waist * 0.4, 0.47 + bob), 0.012, 0.012),
                   _shade(acc, 0.6), None)
        arm(shoulder, -0.8 * amp * near_s, -0.8 * amp * near_s + 0.35, far=False)
        if a["accessory"] == "shoulder_bag":
            f.poly([(-0.06, 0.45 + bob), (0.045, 0.45 + bob), (0.05, 0.56 + bob), (-0.055, 0.56 + bob)],
                   _shade(acc, 1.0))
        head_and_hair("side")
    else:  # front or back, squarely (turn 0) or three-quarter (turn 0.5, facing +x)
        front = view.startswith("front")
        turn = 0.5 if "_" in view else 0.0
        narrow = 1 - 0.3 * turn
        sw, ww, hw = 0.11 * b * narrow, 0.084 * b * narrow, 0.092 * b * (1 - 0.2 * turn)
        phi = math.sin(phase)
        amp = 0.3 * swing
        if front:
            long_hair_behind()

        def arm_at(sgn: int, far: bool) -> None:
            s_arm = sgn * phi
            square_a = sgn * 0.1 * (1 - turn)
            swing_a = -turn * 1.4 * amp * (phi if sgn < 0 else -phi)  # forward is +x when turned
            arm((sgn * (sw - 0.012), shoulder_y + 0.018), square_a + swing_a,
                square_a + swing_a + sgn * 0.06 * (1 - turn) + 0.08 * max(0.0, s_arm) * (1 - turn) + 0.3 * turn,
                far=far)

        if turn:  # the far arm, partly behind the body
            arm_at(1, far=True)
        for sgn in (-1, 1):  # legs: squarely the stepping leg swings a little; turned, they stride
            step = sgn * phi
            if turn:
                thigh = turn * 1.6 * amp * step
                shin = thigh - (0.08 + 0.45 * max(0.0, -step)) * turn * 2
            else:
                thigh = -sgn * 0.025 + 0.04 * step
                shin = thigh * 0.4 - 0.05 * max(0.0, -step)
            leg((sgn * 0.045 * b * narrow, hip_y), thigh, shin, far=turn > 0 and sgn > 0)
        skirt(ww * 1.05, hw * 1.45)
        if turn and a["accessory"] == "backpack" and front:  # its side shows behind the back
            f.poly([(-sw - 0.045, shoulder_y + 0.04), (-sw + 0.02, shoulder_y + 0.03), (-sw + 0.02, 0.44 + bob),
                    (-sw - 0.05, 0.43 + bob)], _shade(acc, 0.85))
        f.poly([(-sw, shoulder_y), (sw, shoulder_y), (sw * 0.98, 0.3 + bob), (ww, waist_y), (hw, 0.53 + bob),
                (-hw, 0.53 + bob), (-ww, waist_y), (-sw * 0.98, 0.3 + bob)], upper_fill)
        for sgn in (-1, 1):
            f.ellipse((sgn * (sw - 0.022), shoulder_y + 0.02), 0.026 * b, 0.022, _shade(a["upper_color"], 1.0))
        if front and a["upper_pattern"] == "logo":
            pc = _shade(a["pattern_color"], 1.0)
            lx = 0.025 * b + 0.04 * turn
            f.ellipse((lx, 0.27 + bob), 0.026 * narrow, 0.026, pc)
            f.poly([(lx - 0.055 * narrow, 0.31 + bob), (lx + 0.025, 0.31 + bob), (lx + 0.025, 0.325 + bob),
                    (lx - 0.055 * narrow, 0.325 + bob)], pc, None)
        bag_side = 1 if front else -1
        if a["accessory"] == "shoulder_bag":
            f.poly(_limb((-bag_side * sw * 0.75, shoulder_y + 0.005), (bag_side * hw * 1.05, 0.46 + bob), 0.014,
                         0.014), _shade(acc, 0.6), None)
        if a["accessory"] == "backpack":
            if front:
                for sgn in (-1, 1):
                    f.poly(_limb((sgn * sw * 0.55, shoulder_y), (sgn * sw * 0.62, 0.33 + bob), 0.018, 0.016),
                           _shade(acc, 0.65), None)
            else:
                dx = -0.03 * turn
                f.poly([(-sw * 0.78 + dx, shoulder_y + 0.03), (sw * 0.78 + dx, shoulder_y + 0.03),
                        (sw * 0.82 + dx, 0.44 + bob), (-sw * 0.82 + dx, 0.44 + bob)], _shade(acc, 1.0))
                f.poly([(-sw * 0.5 + dx, 0.35 + bob), (sw * 0.5 + dx, 0.35 + bob), (sw * 0.5 + dx, 0.42 + bob),
                        (-sw * 0.5 + dx, 0.42 + bob)], _shade(acc, 0.8))
        arm_at(-1, far=False)
        if not turn:
            arm_at(1, far=False)
        if a["accessory"] == "shoulder_bag":
            x = bag_side * (hw + 0.035)
            f.poly([(x - 0.035, 0.45 + bob), (x + 0.035, 0.45 + bob), (x + 0.038, 0.56 + bob), (x - 0.038, 0.56 + bob)],
                   _shade(acc, 1.0))
        head_and_hair("front" if front else "back", turn)
    # Every canvas pixel is opaque or (0, 0, 0, 0) (PIL draws without anti-aliasing), so the box-filtered
    # reduction is the premultiplied-alpha image: antialiased edges without dark fringes.
    small = _lit(f.img.reduce(ss), f.cx / ss, f.top / ss, f.s / ss)
    if view.endswith("left"):
        small = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return small, (f.top + f.s) / ss


def _lit(img: Image.Image, cx: float, top: float, scale: float) -> Image.Image:
    """Soft light from above and a rounded body: darker towards the sides and the feet."""
    arr = np.asarray(img).astype(np.float32)
    u = (np.arange(img.width, dtype=np.float32) - cx) / (0.2 * scale)
    v = (np.arange(img.height, dtype=np.float32) - top) / scale
    light = (1.06 - 0.12 * v)[:, None] * (1.0 - 0.18 * np.clip(u * u, 0, 1.6))[None, :]
    arr[..., :3] *= light[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


# ---------------------------------------------------------------------------------------------- cameras and site


@dataclass
class _Camera:
    index: int
    name: str
    axis: str  # "side": people cross the view left/right; "frontback": they walk towards or away from it
    person_px: float  # height in pixels of a 1.75 m person at the bottom of the walkway
    gain: float
    white_balance: tuple[float, float, float]
    contrast: float
    saturation: float
    gamma: float
    noise: float
    blur: float
    jpeg_quality: int
    exposure_jitter: float  # auto exposure and white balance wander from frame to frame by this much
    horizon: int
    walk_top: int
    background: np.ndarray = field(repr=False)
    clutter_colors: list[list[int]] = field(repr=False)
    color_matrix: np.ndarray = field(init=False, repr=False)
    color_offset: float = field(init=False, repr=False)
    gamma_lut: list[int] = field(init=False, repr=False)
    noise_field: np.ndarray = field(init=False, repr=False)

    def prepare(self, rng: np.random.Generator) -> None:
        """Gain, white balance, saturation and contrast as one affine colour map (0-255 -> 0-255); the gamma
        curve as a table; a sensor noise field larger than the frame (cut at a random offset per frame)."""
        d = np.diag(np.asarray(self.white_balance, np.float64) * self.gain)
        luma = np.array([0.299, 0.587, 0.114])
        sat = self.saturation * np.eye(3) + (1 - self.saturation) * np.outer(np.ones(3), luma)
        self.color_matrix = self.contrast * sat @ d
        self.color_offset = 0.45 * (1 - self.contrast) * 255.0
        curve = [min(255, round((i / 255.0) ** self.gamma * 255.0)) for i in range(256)]
        self.gamma_lut = curve * 3
        shape = (FRAME_H + NOISE_PAD, FRAME_W + NOISE_PAD)
        luma_noise = rng.standard_normal((*shape, 1), dtype=np.float32) * self.noise
        noise = luma_noise + rng.standard_normal((*shape, 3), dtype=np.float32) * (self.noise * 0.5)
        self.noise_field = np.rint(noise).astype(np.int16)

    def nuisance(self) -> dict:
        return {"person_height_px": round(self.person_px, 1), "gain": round(self.gain, 3),
                "white_balance_rgb": [round(w, 3) for w in self.white_balance], "contrast": round(self.contrast, 3),
                "saturation": round(self.saturation, 3), "gamma": round(self.gamma, 3),
                "noise_sigma": round(self.noise, 2), "blur_radius": round(self.blur, 2),
                "jpeg_quality": self.jpeg_quality, "exposure_jitter": round(self.exposure_jitter, 3)}


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], amount: float) -> np.ndarray:
    low = rng.uniform(1 - amount, 1 + amount, cells).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), np.float32)


def _wall(rng: np.random.Generator, w: int, hz: int, clutter: list[list[int]]) -> Image.Image:
    """One stretch of wall or facade (brick, panels, windows, a shop front or a hedge), w x hz pixels."""
    wall = _muted(_cloth_color(rng, 0.7), 0.5)
    img = Image.new("RGB", (w, hz), tuple(wall))
    d = ImageDraw.Draw(img)
    kind = _pick(rng, ("brick", "panels", "windows", "shopfront", "hedge"))
    if kind == "brick":
        bw, bh = int(rng.integers(22, 36)), int(rng.integers(10, 16))
        for row, y in enumerate(range(0, hz, bh)):
            for x in range(-bw + (row % 2) * bw // 2, w, bw):
                d.rectangle((x + 1, y + 1, x + bw - 2, y + bh - 2), fill=tuple(_jitter(wall, rng, 10)))
    elif kind == "panels":
        pw = int(rng.integers(40, 90))
        for x in range(0, w, pw):
            d.rectangle((x, 0, x + pw - 3, hz), fill=tuple(_jitter(wall, rng, 6)))
            d.line((x + pw - 2, 0, x + pw - 2, hz), fill=tuple(_jitter([int(c * 0.6) for c in wall], rng, 4)), width=3)
    elif kind == "windows":
        glass = _jitter((70, 90, 110), rng, 15)
        ww, wh = int(rng.integers(40, 70)), int(rng.integers(40, max(41, hz // 2)))
        for x in range(10, w - ww, ww + int(rng.integers(14, 40))):
            y0 = int(rng.integers(6, max(7, hz - wh - 6)))
            d.rectangle((x, y0, x + ww, y0 + wh), fill=tuple(_jitter(glass, rng, 10)), outline=(200, 200, 200), width=3)
            d.line((x + ww // 2, y0, x + ww // 2, y0 + wh), fill=(190, 190, 190), width=2)
    elif kind == "shopfront":
        band = int(hz * rng.uniform(0.15, 0.25))
        sign = _cloth_color(rng, 0.2)
        clutter.append(sign)
        d.rectangle((0, 0, w, band), fill=tuple(sign))
        d.rectangle((0, band, w, hz), fill=tuple(_jitter((60, 70, 80), rng, 12)))
        for _ in range(int(rng.integers(8, 16))):  # goods behind the glass: people-coloured rectangles
            c = _muted(_cloth_color(rng, 0.3), 0.6)
            clutter.append(c)
            x, y = int(rng.integers(0, w)), int(rng.integers(band + 4, hz))
            d.rectangle((x, y, x + int(rng.integers(10, 40)), min(hz, y + int(rng.integers(10, 60)))), fill=tuple(c))
    else:  # hedge
        green = _hsv(rng.uniform(0.2, 0.38), rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.45))
        for _ in range(260):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(int(hz * 0.3), hz)), int(rng.integers(6, 18))
            d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(_jitter(green, rng, 9)))
    return img


def _background(rng: np.random.Generator, horizon: int) -> tuple[np.ndarray, list[list[int]]]:
    """A camera's static scene at 2x, downsampled: a wall or facade above the horizon, a floor below, clutter."""
    k = 2
    w, h, hz = FRAME_W * k, FRAME_H * k, horizon * k
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    floor = _jitter(_pick(rng, ((120, 120, 118), (90, 88, 84), (160, 150, 130), (70, 72, 76), (140, 110, 80))), rng, 12)
    d.rectangle((0, hz, w, h), fill=tuple(floor))
    clutter: list[list[int]] = []
    # the wall behind the walkway changes along it (shops, doors, hedges), so crops on one camera differ
    cuts = sorted(int(c) for c in rng.integers(w // 6, w - w // 6, int(rng.integers(1, 4))))
    wall = _muted(_cloth_color(rng, 0.7), 0.5)
    for x0, x1 in zip([0, *cuts], [*cuts, w], strict=True):
        if x1 - x0 >= 8:
            img.paste(_wall(rng, w, hz, clutter).crop((x0, 0, x1, hz)), (x0, 0))
    # floor texture: tiles in perspective or paving, and a kerb line
    fkind = _pick(rng, ("tiles", "plain", "paving"))
    line = tuple(_jitter([int(c * 0.75) for c in floor], rng, 4))
    if fkind == "tiles":
        for i in range(-12, 13):
            d.line((w / 2 + i * w / 14, hz, w / 2 + i * w / 3.2, h), fill=line, width=2)
        y, step = hz, 8.0
        while y < h:
            d.line((0, y, w, y), fill=line, width=2)
            y += step
            step *= 1.35
    elif fkind == "paving":
        for y in range(hz, h, 14):
            off = (y // 14) % 2 * 12
            for x in range(-off, w, 24):
                d.rectangle((x + 1, y + 1, x + 22, y + 12), fill=tuple(_jitter(floor, rng, 9)))
    d.rectangle((0, hz - 3, w, hz + 3), fill=tuple(_jitter([int(c * 0.6) for c in wall], rng, 8)))
    # clutter: pillars, bins, benches, posters, plants; some in people's colours
    for _ in range(int(rng.integers(4, 9))):
        c = _muted(_cloth_color(rng, 0.4), 0.6)
        clutter.append(c)
        what = _pick(rng, ("pillar", "bin", "bench", "poster", "plant"))
        x = int(rng.integers(0, w))
        if what == "pillar":
            pw = int(rng.integers(14, 34))
            d.rectangle((x, 0, x + pw, hz + int(rng.integers(4, 30))), fill=tuple(c))
            d.rectangle((x + pw - 5, 0, x + pw, hz + 10), fill=tuple(int(v * 0.7) for v in c))
        elif what == "bin":
            y = hz + int(rng.integers(0, max(1, (h - hz) // 3)))
            d.rectangle((x, y - 50, x + 30, y), fill=tuple(c))
        elif what == "bench":
            y = hz + int(rng.integers(5, max(6, (h - hz) // 3)))
            d.rectangle((x, y - 26, x + 110, y - 18), fill=tuple(c))
            d.rectangle((x + 8, y - 18, x + 14, y), fill=(50, 50, 50))
            d.rectangle((x + 96, y - 18, x + 102, y), fill=(50, 50, 50))
        elif what == "poster":
            y = int(rng.integers(4, max(5, hz - 70)))
            d.rectangle((x, y, x + int(rng.integers(30, 60)), y + int(rng.integers(40, 70))), fill=tuple(c))
        else:
            y = hz + int(rng.integers(0, max(1, (h - hz) // 4)))
            green = _hsv(rng.uniform(0.22, 0.38), 0.45, rng.uniform(0.3, 0.5))
            d.rectangle((x + 6, y - 24, x + 34, y), fill=tuple(c))
            d.ellipse((x - 6, y - 74, x + 46, y - 16), fill=tuple(green))
    arr = np.asarray(img.resize((FRAME_W, FRAME_H), Image.Resampling.BOX), np.float32)
    arr *= _smooth_field(rng, FRAME_H, FRAME_W, (3, 4), 0.12)[..., None]
    arr += rng.normal(0, 4, arr.shape).astype(np.float32)  # surface texture
    return np.clip(arr, 0, 255), clutter


def _cameras(cameras: int, seed: int, nuisance: float = 1.0) -> list[_Camera]:
    """Each camera's fixed look. `nuisance` scales the photometric ones (0: all cameras neutral)."""
    rng = _rng(seed, "cameras")
    heights = np.linspace(100, 160, cameras) if cameras > 1 else np.array([130.0])
    heights = rng.permutation(heights)
    axes = ["side" if i % 2 == 0 else "frontback" for i in range(cameras)]
    axes = [axes[i] for i in rng.permutation(cameras)]
    names = [SITE_NAMES[i] for i in rng.permutation(len(SITE_NAMES))[:cameras]]
    out = []
    for i in range(cameras):
        crng = _rng(seed, "camera", i + 1)
        k = nuisance
        temp, tint, gain, contrast, saturation, gamma, noise, blur, quality = (
            crng.uniform(-1, 1), crng.uniform(-0.04, 0.04), crng.uniform(-0.3, 0.3), crng.uniform(-0.2, 0.15),
            crng.uniform(-0.3, 0.1), crng.uniform(-0.15, 0.15), crng.uniform(0.5, 5), crng.uniform(0, 0.9),
            crng.uniform(5, 50))
        horizon = int(crng.integers(70, 120))
        background, clutter = _background(_rng(seed, "background", i + 1), horizon)
        out.append(_Camera(
            index=i + 1, name=names[i], axis=axes[i], person_px=float(heights[i] * crng.uniform(0.95, 1.05)),
            gain=math.exp(k * gain), white_balance=(1 + 0.12 * k * temp, 1 + k * tint, 1 - 0.12 * k * temp),
            contrast=1 + k * contrast, saturation=max(0.0, 1 + k * saturation), gamma=math.exp(k * gamma),
            noise=1 + k * noise, blur=k * blur, jpeg_quality=int(np.clip(round(95 - k * quality), 20, 95)),
            exposure_jitter=0.08 * k,
            horizon=horizon,
            walk_top=int(horizon + crng.uniform(0.3, 0.45) * (FRAME_H - horizon)),
            background=background, clutter_colors=clutter))
        out[-1].prepare(_rng(seed, "sensor", i + 1))
    return out


def _site_edges(cameras: int, seed: int) -> dict[tuple[int, int], tuple[float, float]]:
    """A corridor 1-2-...-C, plus a chord or a closed ring for larger sites; (min, typical) transit seconds."""
    rng = _rng(seed, "site")
    pairs = [(i, i + 1) for i in range(1, cameras)]
    if cameras >= 4:
        pairs.append((1, cameras) if rng.random() < 0.5 else (1, int(rng.integers(3, cameras))))
    edges = {}
    for a, b in sorted(set(pairs)):
        lo = float(round(rng.uniform(12, 40), 1))
        edges[(a, b)] = (lo, float(round(lo * rng.uniform(1.5, 2.4), 1)))
    return edges


# ---------------------------------------------------------------------------------------------- schedule


@dataclass
class _Shot:
    pid: int
    visit: int
    shot: int
    cam: int
    tick: int
    view: str
    phase: float
    fx: float  # feet position in the frame
    fy: float
    height_px: float
    swing: float
    motion_blur: int
    jitter: tuple[float, float, float, float]
    occluder: dict | None
    track: str = ""


@dataclass
class _Visit:
    pid: int
    index: int
    cam: int
    ticks: list[int]
    view: str
    leader: tuple[int, int] | None = None  # (pid, visit) this visit walks next to
    track: str = ""


def _visit_view(axis: str, rng: np.random.Generator) -> str:
    """How a camera sees one walk past it. A "side" camera mostly sees people cross in profile or three-quarter,
    a "frontback" one mostly sees them come or go squarely or three-quarter; every camera sees every view
    sometimes. Views: front, back, left, right, front_left, front_right, back_left, back_right."""
    way, toward = _pick(rng, ("left", "right")), _pick(rng, ("front", "back"))
    kind = _pick(rng, ("profile", "three_quarter", "square"), (4, 4, 2) if axis == "side" else (1, 4, 5))
    return {"profile": way, "three_quarter": f"{toward}_{way}", "square": toward}[kind]


def _turned(view: str, rng: np.random.Generator) -> str:
    """A glance aside: a square view turns three-quarter, a profile or three-quarter view turns square."""
    if view in ("front", "back"):
        return f"{view}_{_pick(rng, ('left', 'right'))}"
    if view in ("left", "right"):
        return f"{_pick(rng, ('front', 'back'))}_{view}"
    return view.split("_")[0]


def _schedule(people: list[dict], cams: list[_Camera], edges: dict, visits_per_id: int, shots_per_visit: int,
              seed: int) -> list[_Visit]:
    neighbours: dict[int, list[int]] = {c.index: [] for c in cams}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    window = max(20.0, 4.0 * len(people))  # arrivals spread over this many seconds: many on site at once
    visits: list[_Visit] = []
    firsts: list[_Visit] = []  # first visits that walk alone and nobody has joined yet
    for person in people:
        pid = person["pid"]
        rng = _rng(seed, "route", pid)
        v0: _Visit | None = None
        if firsts and rng.random() < 0.18:  # arrives together with someone: the same frames, side by side
            lead = firsts.pop(int(rng.integers(len(firsts))))
            v0 = _Visit(pid, 0, lead.cam, list(lead.ticks), lead.view, leader=(lead.pid, 0))
        cam = v0.cam if v0 else int(rng.integers(1, len(cams) + 1))
        tick = int(rng.uniform(0, window) * FPS) + FPS
        for k in range(visits_per_id):
            if k == 0 and v0 is not None:
                visit = v0
            else:
                if k > 0:
                    nxt = neighbours[cam][int(rng.integers(len(neighbours[cam])))]
                    lo, typical = edges[(min(cam, nxt), max(cam, nxt))]
                    transit = lo + 0.5 + rng.gamma(2.0, (typical - lo) / 2.0)
                    tick = visits[-1].ticks[-1] + math.ceil(transit * FPS)
                    cam = nxt
                ticks = [tick]
                for _ in range(shots_per_visit - 1):
                    ticks.append(ticks[-1] + round(rng.uniform(0.5, 1.0) * FPS))
                axis = cams[cam - 1].axis
                view = _visit_view(axis, rng)
                visit = _Visit(pid, k, cam, ticks, view)
            visits.append(visit)
            if k == 0 and visit.leader is None:
                firsts.append(visit)
    return visits


def _plan_shots(visits: list[_Visit], people: dict[int, dict], cams: list[_Camera], seed: int) -> list[_Shot]:
    plans: dict[tuple[int, int], list[_Shot]] = {}
    for v in sorted(visits, key=lambda v: v.leader is not None):  # leaders first: companions copy their path
        cam = cams[v.cam - 1]
        rng = _rng(seed, "visit", v.pid, v.index)
        attrs = people[v.pid]
        n = len(v.ticks)
        h0 = cam.person_px * attrs["height_m"] / 1.75
        speed = rng.uniform(1.0, 1.6) * h0 / attrs["height_m"]  # pixels per second at this camera's scale
        t = (np.array(v.ticks) - v.ticks[0]) / FPS
        band = (cam.walk_top, FRAME_H - 4)
        if v.view in ("left", "right") or (cam.axis == "side" and v.view not in ("front", "back")):
            d = 1 if v.view.endswith("right") else -1
            span = min(speed * t[-1], 0.75 * FRAME_W)
            rate = span / t[-1] if t[-1] > 0 else 0.0
            xs = FRAME_W / 2 + d * (rate * t - span / 2) + rng.uniform(-0.15, 0.15) * FRAME_W
            if rng.random() < 0.25:  # walks into or out of the frame: a box cut at the edge
                edge_shift = (FRAME_W / 2 - 0.2 * h0) - abs(xs[-1 if d > 0 else 0] - FRAME_W / 2)
                xs = xs + d * max(0.0, edge_shift + 0.12 * h0)
            fy0 = rng.uniform(*band)
            fys = fy0 + rng.normal(0, 1.5, n)
        else:
            d = 1 if v.view.startswith("front") else -1
            dy = rng.uniform(12, 28) * d
            fy0 = rng.uniform(band[0] + 10, band[1] - 10)
            fys = np.clip(fy0 + dy * (t - t[-1] / 2), band[0], band[1])
            x0 = rng.uniform(0.12, 0.88) * FRAME_W
            if rng.random() < 0.15:
                x0 = _pick(rng, (0.02, 0.98)) * FRAME_W
            xs = x0 + rng.normal(0, 3, n) + rng.uniform(-10, 10) * t
        if v.leader is not None:  # walk beside the leader, in the same frames
            lead = plans[v.leader]
            side = _pick(rng, (-1, 1))
            xs = np.array([s.fx for s in lead]) + side * rng.uniform(0.4, 0.65) * h0
            fys = np.clip(np.array([s.fy for s in lead]) + rng.uniform(-12, 12), band[0], band[1])
        xs = np.clip(xs, 0.06 * h0, FRAME_W - 0.06 * h0)  # at least about half the body stays in the frame
        shots = []
        for k in range(n):
            srng = _rng(seed, "shot", v.pid, v.index, k)
            persp = 0.9 + 0.1 * (fys[k] - band[0]) / max(1.0, band[1] - band[0])
            view = v.view
            if srng.random() < 0.12:  # turns for a moment
                view = _turned(view, srng)
            occluder = None
            if srng.random() < 0.2:
                occluder = {"kind": _pick(srng, ("pole", "box", "board")), "pos": float(srng.uniform(0.15, 0.85)),
                            "size": float(srng.uniform(0.25, 0.5)),
                            "color": _jitter(_pick(srng, [*cam.clutter_colors, [90, 90, 92], [200, 170, 40]]), srng, 6)}
            shots.append(_Shot(
                pid=v.pid, visit=v.index, shot=k, cam=v.cam, tick=v.ticks[k], view=view,
                phase=float(srng.uniform(0, 2 * math.pi)), fx=float(xs[k]), fy=float(fys[k]),
                height_px=float(h0 * persp * srng.uniform(0.95, 1.05)), swing=float(srng.uniform(0.6, 1.1)),
                motion_blur=int(srng.integers(3, 8)) if srng.random() < 0.12 else 0,
                jitter=tuple(float(j) for j in srng.uniform(-0.03, 0.07, 4)), occluder=occluder))
        plans[(v.pid, v.index)] = shots
    return [s for v in visits for s in plans[(v.pid, v.index)]]


# ---------------------------------------------------------------------------------------------- rendering frames


def _fill(scene: np.ndarray, x1: float, y1: float, x2: float, y2: float, color: Sequence[int], shade: bool) -> None:
    xa, xb = max(0, round(x1)), min(FRAME_W, round(x2))
    ya, yb = max(0, round(y1)), min(FRAME_H, round(y2))
    if xb <= xa or yb <= ya:
        return
    block = np.broadcast_to(np.asarray(color, np.float32), (yb - ya, xb - xa, 3)).copy()
    if shade:  # a round pole: lit on one side
        across = np.linspace(1.15, 0.7, xb - xa, dtype=np.float32)
        block *= across[None, :, None]
    scene[ya:yb, xa:xb] = np.clip(block, 0, 255)


def _paste_person(scene: np.ndarray, shot: _Shot, attrs: dict) -> tuple[float, float, float, float] | None:
    fig, feet_y = _draw_person(attrs, shot.view, shot.phase, shot.height_px, shot.swing)
    arr = np.asarray(fig, np.float32) / 255.0
    alpha = arr[..., 3:4]
    rgb = arr[..., :3]  # premultiplied, so the motion blur treats the edges right
    if shot.motion_blur:
        k = shot.motion_blur
        pad = np.pad(np.concatenate([rgb, alpha], axis=2), ((0, 0), (k, k), (0, 0)))
        acc = sum(pad[:, i:i + arr.shape[1]] for i in range(k)) / k
        rgb, alpha = acc[..., :3], acc[..., 3:4]
    x0, y0 = round(shot.fx - fig.width / 2), round(shot.fy - feet_y)
    # contact shadow
    rx, ry = 0.17 * shot.height_px, 0.03 * shot.height_px + 1
    sxa, sxb = max(0, int(shot.fx - 2.5 * rx)), min(FRAME_W, int(shot.fx + 2.5 * rx) + 1)
    sya, syb = max(0, int(shot.fy - 2.5 * ry)), min(FRAME_H, int(shot.fy + 2.5 * ry) + 1)
    if sxb > sxa and syb > sya:
        gx = np.exp(-(((np.arange(sxa, sxb, dtype=np.float32) - shot.fx) / rx) ** 2))
        gy = np.exp(-(((np.arange(sya, syb, dtype=np.float32) - shot.fy) / ry) ** 2))
        scene[sya:syb, sxa:sxb] *= (1 - 0.45 * gy[:, None] * gx[None, :])[..., None]
    xa, ya = max(0, x0), max(0, y0)
    xb, yb = min(FRAME_W, x0 + fig.width), min(FRAME_H, y0 + fig.height)
    if xb <= xa or yb <= ya:
        return None
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0]
    scene[ya:yb, xa:xb] = scene[ya:yb, xa:xb] * (1 - a) + rgb[ya - y0:yb - y0, xa - x0:xb - x0] * 255.0
    ys, xs = np.nonzero(a[..., 0] > 0.4)
    if len(xs) == 0:
        return None
    return xa + xs.min(), ya + ys.min(), xa + xs.max() + 1.0, ya + ys.max() + 1.0


def _occlude(scene: np.ndarray, box: tuple[float, float, float, float], occ: dict, fy: float) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    c = occ["color"]
    if occ["kind"] == "pole":
        x, pw = x1 + occ["pos"] * w, max(3.0, occ["size"] * 0.45 * w)
        _fill(scene, x - pw / 2, 0, x + pw / 2, fy + 0.02 * h, c, shade=True)
    elif occ["kind"] == "box":  # a bin, barrier or bench in front of the legs
        cx, bw = x1 + occ["pos"] * w, w * (0.8 + occ["size"])
        _fill(scene, cx - bw / 2, y2 - occ["size"] * h, cx + bw / 2, y2 + 0.03 * h, c, shade=False)
        _fill(scene, cx - bw / 2, y2 - occ["size"] * h, cx + bw / 2, y2 - occ["size"] * h + 2, [v * 0.6 for v in c],
              shade=False)
    else:  # a board or sign covering one side of the body
        if occ["pos"] < 0.5:
            _fill(scene, x1 - 0.3 * w, y1 + 0.25 * h, x1 + occ["size"] * w, y2 + 0.03 * h, c, shade=False)
        else:
            _fill(scene, x2 - occ["size"] * w, y1 + 0.25 * h, x2 + 0.3 * w, y2 + 0.03 * h, c, shade=False)


def _camera_pipeline(scene: np.ndarray, cam: _Camera, exposure: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics, sensor and ISP: blur; this frame's exposure, gain, white balance, saturation and contrast as one
    affine colour map; gamma; sensor noise. (Pillow's matrix convert and point tables do it in C.)"""
    img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    if cam.blur > 0.15:
        img = img.filter(ImageFilter.BoxBlur(cam.blur))
    m = cam.color_matrix * exposure[None, :]
    matrix = tuple(v for row in m for v in (*row.tolist(), cam.color_offset))
    img = img.convert("RGB", matrix).point(cam.gamma_lut)
    dy, dx = (int(v) for v in rng.integers(0, NOISE_PAD, 2))
    noisy = np.asarray(img, np.int16) + cam.noise_field[dy:dy + FRAME_H, dx:dx + FRAME_W]
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _snap(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """To the 8-pixel block grid, inside the frame, at least 16 x 24 pixels."""
    x1, y1, x2, y2 = (round(v / GRID) * GRID for v in box)
    x1, y1 = max(0, min(x1, FRAME_W - 2 * GRID)), max(0, min(y1, FRAME_H - 3 * GRID))
    x2, y2 = min(FRAME_W, max(x2, x1 + 2 * GRID)), min(FRAME_H, max(y2, y1 + 3 * GRID))
    return x1, y1, x2, y2


def _loose(box: tuple[float, float, float, float], j: Sequence[float]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return _snap((x1 - j[0] * w, y1 - j[1] * h, x2 + j[2] * w, y2 + j[3] * h))


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h) / max(1e-6, (a[2] - a[0]) * (a[3] - a[1]))


def _distractor_box(kind: str, cam: _Camera, tight: list, rng: np.random.Generator) -> tuple[int, int, int, int]:
    if kind == "background":
        for _ in range(60):
            h = cam.person_px * rng.uniform(0.7, 1.1)
            w = h * rng.uniform(0.35, 0.5)
            x, fy = rng.uniform(0, FRAME_W - w), rng.uniform(cam.walk_top, FRAME_H)
            box = _snap((x, max(0.0, fy - h), x + w, fy))
            if all(_overlap(box, t) < 0.05 for t in tight):
                return box
    x1, y1, x2, y2 = tight[int(rng.integers(len(tight)))]
    h = y2 - y1
    cut = rng.uniform(0.4, 0.55)
    part = (x1, y1, x2, y1 + cut * h) if rng.random() < 0.5 else (x1, y2 - cut * h, x2, y2)
    return _loose(part, rng.uniform(-0.05, 0.1, 4))


def _encode(arr: np.ndarray, image_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(arr).save(buf, "JPEG", quality=quality, subsampling=0, optimize=False, progressive=False)
    else:
        Image.fromarray(arr).save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _timestamp(tick: int) -> str:
    t = START + timedelta(milliseconds=tick * 1000 // FPS)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """The inverse of the stream's timestamps (ISO 8601 UTC ending in Z)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------- the benchmark

_OUTPUTS = ("bounding_box_train", "bounding_box_test", "query", "frames", "stream.jsonl", "site.json",
            "identities.json", "README.txt")


def generate(out: Path, ids: int = 40, cameras: int = 4, seed: int = 0, visits_per_id: int = 3,
             shots_per_visit: int = 4, twins: float = 0.25, image_format: str = "jpg",
             nuisance: float = 1.0) -> SynthSummary:
    """Write the benchmark into `out` (its previous outputs there are replaced); see the module docstring.

    `nuisance` scales the cameras' photometric differences (gain, white balance, contrast, saturation, gamma,
    noise, blur, JPEG quality): 0 makes them all neutral, 1 is the calibrated default, above 1 is harsher.
    Scale, background, pose, view, occlusion and twins are not affected by it.
    """
    if not 1 <= ids <= 9999:
        raise ValueError("ids must be in 1..9999 (Market-1501 pids have four digits)")
    if not 2 <= cameras <= 9:
        raise ValueError("cameras must be in 2..9 (Market-1501 names have one camera digit)")
    if visits_per_id < 1 or shots_per_visit < 1 or not 0 <= twins <= 0.5 or seed < 0 or not 0 <= nuisance <= 3:
        raise ValueError("need visits_per_id >= 1, shots_per_visit >= 1, 0 <= twins <= 0.5, seed >= 0, "
                         "0 <= nuisance <= 3")
    image_format = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    if image_format not in ("jpg", "png"):
        raise ValueError("image_format must be 'jpg' or 'png'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (out / sub).mkdir()

    cams = _cameras(cameras, seed, nuisance)
    edges = _site_edges(cameras, seed)
    people = _identities(ids, twins, seed)
    attrs = {p["pid"]: p["attributes"] for p in people}
    visits = _schedule(people, cams, edges, visits_per_id, shots_per_visit, seed)
    shots = _plan_shots(visits, attrs, cams, seed)

    frames: dict[tuple[int, int], list[_Shot]] = {}  # (camera, tick) -> the people in that frame
    for s in shots:
        frames.setdefault((s.cam, s.tick), []).append(s)
    junk = _choose_junk(frames, len(shots), seed)
    junk_tracks = _assign_tracks(visits, junk, cameras)
    tracks = {(v.pid, v.index): v.track for v in visits}
    for s in shots:
        s.track = tracks[(s.pid, s.visit)]
    queries = _choose_queries(shots, seed)
    records = _render(out, cams, attrs, frames, junk, junk_tracks, queries, image_format, seed)
    (out / "stream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    site = {
        "generator": f"reid_stream.eval.synth v{GENERATOR_VERSION}", "seed": seed, "nuisance": nuisance,
        "frame_size": [FRAME_W, FRAME_H], "fps": FPS, "start": _timestamp(0),
        "cameras": [{"camera_id": f"cam-{c.index}", "index": c.index, "name": c.name, "view_axis": c.axis,
                     "nuisance": c.nuisance()} for c in cams],
        "adjacency": [{"a": f"cam-{a}", "b": f"cam-{b}", "min_transit_s": lo, "typical_transit_s": typ}
                      for (a, b), (lo, typ) in sorted(edges.items())],
        "transit_note": "seconds from the last detection of a visit to the first detection of the next visit",
    }
    (out / "site.json").write_text(json.dumps(site, indent=2) + "\n")
    by_pid: dict[int, list[dict]] = {}
    for v in visits:
        by_pid.setdefault(v.pid, []).append({"camera_id": f"cam-{v.cam}", "track_id": v.track,
                                             "first": _timestamp(v.ticks[0]), "last": _timestamp(v.ticks[-1]),
                                             "with": v.leader[0] if v.leader else None})
    for p in people:
        p["visits"] = by_pid.get(p["pid"], [])
    (out / "identities.json").write_text(json.dumps({"seed": seed, "attribute_names": list(ATTRIBUTES),
                                                     "identities": people}, indent=1) + "\n")
    n_twins = sum(p["twin_of"] is not None for p in people)
    shared = sum(len(v) > 1 for v in frames.values())
    n_query = sum(r["crop"].startswith("query/") for r in records)
    summary = SynthSummary(ids=ids, cameras=cameras, seed=seed, query=n_query, gallery=len(records) - n_query,
                           distractors=len(junk), detections=len(records), frames=len(frames), twin_pairs=n_twins,
                           shared_frames=shared)
    (out / "README.txt").write_text(_readme(summary, visits_per_id, shots_per_visit, twins, image_format, nuisance))
    return summary


def _choose_junk(frames: dict[tuple[int, int], list[_Shot]], n_shots: int, seed: int) -> dict[tuple[int, int], str]:
    """About 5% extra junk detections (pid 0): a background-only or a half-body box, each in some frame."""
    keys = sorted(frames, key=lambda k: (k[1], k[0]))
    rng = _rng(seed, "distractors")
    n = min(len(keys), max(2, round(0.05 * n_shots)))
    return {keys[int(i)]: _pick(rng, ("background", "half_body")) for i in sorted(rng.choice(len(keys), n, False))}


def _assign_tracks(visits: list[_Visit], junk: dict[tuple[int, int], str], cameras: int) -> dict[tuple[int, int], str]:
    """Track ids c{cam}-t{n}, per camera in order of first appearance: one per visit (set on the visit) and one
    per junk detection (returned, by frame)."""
    starts = sorted([(v.ticks[0], v.cam, 0, v.pid, v) for v in visits] + [(k[1], k[0], 1, 0, k) for k in junk],
                    key=lambda t: t[:4])
    counters = dict.fromkeys(range(1, cameras + 1), 0)
    junk_tracks: dict[tuple[int, int], str] = {}
    for _, cam, is_junk, _, ref in starts:
        counters[cam] += 1
        if is_junk:
            junk_tracks[ref] = f"c{cam}-t{counters[cam]}"
        else:
            ref.track = f"c{cam}-t{counters[cam]}"
    return junk_tracks


def _choose_queries(shots: list[_Shot], seed: int) -> set[tuple[int, int, int]]:
    """One random shot per (identity, camera): the query crops, as (pid, visit, shot)."""
    rng = _rng(seed, "query")
    per_pid_cam: dict[tuple[int, int], list[_Shot]] = {}
    for s in shots:
        per_pid_cam.setdefault((s.pid, s.cam), []).append(s)
    chosen = (per_pid_cam[k][int(rng.integers(len(per_pid_cam[k])))] for k in sorted(per_pid_cam))
    return {(s.pid, s.visit, s.shot) for s in chosen}


def _render(out: Path, cams: list[_Camera], attrs: dict[int, dict], frames: dict[tuple[int, int], list[_Shot]],
            junk: dict[tuple[int, int], str], junk_tracks: dict[tuple[int, int], str],
            queries: set[tuple[int, int, int]], image_format: str, seed: int) -> list[dict]:
    """Draw, photograph and save every frame and its crops; the stream records, in time order."""
    records: list[dict] = []
    ext = image_format
    for cam_i, tick in sorted(frames, key=lambda k: (k[1], k[0])):
        cam = cams[cam_i - 1]
        frng = _rng(seed, "frame", cam_i, tick)
        exposure = 1 + cam.exposure_jitter * (frng.uniform(-1, 1) + frng.uniform(-0.3, 0.3, 3))
        scene = cam.background.copy()
        placed: list[tuple[_Shot, tuple[float, float, float, float]]] = []
        for s in sorted(frames[(cam_i, tick)], key=lambda s: (s.fy, s.pid)):  # farther people first
            tight = _paste_person(scene, s, attrs[s.pid])
            if tight is None:  # outside the frame: the paths prevent it, but never write an empty box
                tight = _snap((s.fx - 0.15 * s.height_px, s.fy - s.height_px, s.fx + 0.15 * s.height_px, s.fy))
            placed.append((s, tight))
        for s, tight in placed:
            if s.occluder is not None:
                _occlude(scene, tight, s.occluder, s.fy)
        pixels = _camera_pipeline(scene, cam, exposure, frng)
        if image_format == "png":  # keep this camera's compression artefacts, then store losslessly
            jpeg = io.BytesIO(_encode(pixels, "jpg", cam.jpeg_quality))
            pixels = np.asarray(Image.open(jpeg, formats=ALLOWED_FORMATS).convert("RGB"))
        frame_rel = f"frames/c{cam_i}/{tick:06d}.{ext}"
        (out / frame_rel).parent.mkdir(parents=True, exist_ok=True)
        (out / frame_rel).write_bytes(_encode(pixels, image_format, cam.jpeg_quality))
        dets: list[tuple[int, tuple[int, int, int, int], str, str]] = []
        for s, tight in sorted(placed, key=lambda p: (p[1][0], p[0].pid)):  # numbered left to right
            folder = "query" if (s.pid, s.visit, s.shot) in queries else "bounding_box_test"
            dets.append((s.pid, _loose(tight, s.jitter), s.track, folder))
        if (cam_i, tick) in junk:
            box = _distractor_box(junk[(cam_i, tick)], cam, [t for _, t in placed], frng)
            dets.append((0, box, junk_tracks[(cam_i, tick)], "bounding_box_test"))
        for n, (pid, (x1, y1, x2, y2), track, folder) in enumerate(dets, start=1):
            crop_rel = f"{folder}/{pid:04d}_c{cam_i}s1_{tick:06d}_{n:02d}.{ext}"
            crop = np.ascontiguousarray(pixels[y1:y2, x1:x2])
            (out / crop_rel).write_bytes(_encode(crop, image_format, cam.jpeg_quality))
            records.append({"detection_id": f"det-{len(records) + 1:06d}", "camera_id": f"cam-{cam_i}",
                            "entity_type": "person", "timestamp": _timestamp(tick),
                            "bbox": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
                            "image_path": frame_rel, "track_id": track, "true_id": pid, "crop": crop_rel})
    return records


def _readme(s: SynthSummary, visits: int, shots: int, twins: float, image_format: str, nuisance: float) -> str:
    ext = image_format
    return f"""Synthetic multi-camera person re-identification benchmark
Generated by reid_stream.eval.synth v{GENERATOR_VERSION} (numpy + Pillow). Deterministic: the same arguments give
byte-identical files.

arguments: ids={s.ids} cameras={s.cameras} seed={s.seed} visits_per_id={visits} shots_per_visit={shots}
           twins={twins} image_format={image_format} nuisance={nuisance}
contents:  {s.query} query crops, {s.gallery} gallery crops ({s.distractors} of them junk with pid 0000),
           {s.detections} detections in {s.frames} frames ({s.shared_frames} frames show two or more people),
           {s.twin_pairs} near-twins (identities that differ from another one in exactly one attribute)

query/ bounding_box_test/ bounding_box_train/ (empty)
    Market-1501 layout, names {{pid:04d}}_c{{cam}}s1_{{frame:06d}}_{{n:02d}}.{ext}. Query: one crop per identity and
    camera it was seen on; gallery: every other crop, plus junk boxes (pid 0000: background only, or half a
    body). Score with the Market protocol (same identity on the same camera is not a match to be credited).
frames/c{{cam}}/{{frame:06d}}.{ext}
    The full {FRAME_W}x{FRAME_H} frames. frame = 25 fps tick since {_timestamp(0)}, the same clock on every camera.
stream.jsonl
    One detection per line, in time order: detection_id, camera_id, entity_type, timestamp, bbox (pixels of
    the frame), image_path (relative to this folder), track_id (one visit of one person to one camera),
    true_id (0 for junk), crop (its file in query/ or bounding_box_test/). A crop file holds exactly the
    bbox of the decoded frame: boxes are aligned to 8 pixels and frames and crops share the camera's JPEG
    quality with 4:4:4 chroma, so no block straddles the crop's border.
site.json
    The cameras (view axis, photometric nuisances, person height in pixels) and the camera graph: adjacent
    pairs with min and typical transit seconds (last detection of a visit to the first of the next one).
identities.json
    Every identity's attributes and visits; a near-twin names its source (twin_of) and what changed.
"""


# ---------------------------------------------------------------------------------------------- looking at it

CELL_W, CELL_H, LABEL_W, HEADER_H, PER_CAMERA = 64, 128, 132, 18, 2


def _crops(out: Path) -> list[tuple[int, int, Path]]:
    """(pid, cam, path) of every crop in query/ and bounding_box_test/, sorted."""
    found = []
    for folder in ("query", "bounding_box_test"):
        for p in sorted((out / folder).iterdir()):
            m = CROP_RE.search(p.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), p))
    return found


def sheet_rows(people: list[dict], n: int) -> list[int]:
    """The contact sheet's identities: near-twin pairs first (source, then twin; about half of the rows),
    then the others in pid order."""
    rows: list[int] = []
    for p in people:
        pair_fits = len(rows) + 2 <= n and len(rows) < max(2, n // 2)
        if p["twin_of"] is not None and pair_fits and p["twin_of"] not in rows:
            rows += [p["twin_of"], p["pid"]]
    rows += [p["pid"] for p in people if p["pid"] not in rows][: n - len(rows)]
    return rows


def contact_sheet(out: Path, path: Path, ids: int = 8) -> Path:
    """A PNG grid to look at: one row per identity (near-twin pairs on adjacent rows, their source first), two
    crops per camera (the query, then a crop from another visit when there is one); size
    (LABEL_W + cameras * PER_CAMERA * CELL_W) x (HEADER_H + rows * CELL_H)."""
    out = Path(out)
    people = json.loads((out / "identities.json").read_text())["identities"]
    n_cams = len(json.loads((out / "site.json").read_text())["cameras"])
    by_pid = {p["pid"]: p for p in people}
    rows = sheet_rows(people, ids)
    track = {r["crop"]: r["track_id"] for r in map(json.loads, (out / "stream.jsonl").read_text().splitlines())}
    crops: dict[tuple[int, int], list[Path]] = {}
    for pid, cam, p in _crops(out):
        crops.setdefault((pid, cam), []).append(p)
    sheet = Image.new("RGB", (LABEL_W + n_cams * PER_CAMERA * CELL_W, HEADER_H + len(rows) * CELL_H), (40, 40, 40))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c in range(n_cams):
        d.text((LABEL_W + c * PER_CAMERA * CELL_W + 4, 3), f"cam-{c + 1}", fill=(230, 230, 230), font=font)
    for r, pid in enumerate(rows):
        y = HEADER_H + r * CELL_H
        p = by_pid[pid]
        a = p["attributes"]
        lines = [f"pid {pid:04d}"]
        if p["twin_of"] is not None:
            lines += [f"twin of {p['twin_of']:04d}", f"~ {p['changed']}"]
        lines += [a["upper_pattern"], f"{a['lower_type']}, {a['sleeves']}", a["accessory"], f"hair {a['hair_length']}"]
        d.text((4, y + 4), "\n".join(lines), fill=(230, 230, 230), font=font, spacing=2)
        if p["twin_of"] is not None:
            d.rectangle((0, y, 3, y + CELL_H - 1), fill=(230, 120, 40))
        for c in range(n_cams):
            files = crops.get((pid, c + 1), [])
            chosen = [f for f in files if f.parent.name == "query"][:1]
            seen = {track.get(f"{f.parent.name}/{f.name}") for f in chosen}
            others = [f for f in files if f not in chosen]
            chosen += ([f for f in others if track.get(f"{f.parent.name}/{f.name}") not in seen] or others)[:1]
            for j, f in enumerate(chosen[:PER_CAMERA]):
                with Image.open(f, formats=ALLOWED_FORMATS) as im:
                    crop = im.convert("RGB")
                scale = min(CELL_W / crop.width, CELL_H / crop.height)
                crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                                   Image.Resampling.BILINEAR)
                x = LABEL_W + (c * PER_CAMERA + j) * CELL_W
                sheet.paste(crop, (x + (CELL_W - crop.width) // 2, y + (CELL_H - crop.height) // 2))
        d.line((0, y + CELL_H - 1, sheet.width, y + CELL_H - 1), fill=(20, 20, 20))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG")
    return path


def _load(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    arrs = []
    for p in paths:
        with Image.open(p, formats=ALLOWED_FORMATS) as im:
            arrs.append(np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32))
    return np.stack(arrs)


def pixel_hardness(out: Path, size: tuple[int, int] = (32, 64), pairs: int = 3000) -> dict:
    """Mean absolute pixel difference (0-255) of crops resized to `size`: same identity on different cameras vs
    different identities on the same camera. If the first is not clearly smaller, raw pixels do not separate ids."""
    crops = [(pid, cam, p) for pid, cam, p in _crops(Path(out)) if pid > 0]
    x = _load([p for _, _, p in crops], size)
    pid = np.array([c[0] for c in crops])
    cam = np.array([c[1] for c in crops])
    rng = _rng(0, "hardness")
    i, j = rng.integers(len(crops), size=(2, pairs * 20))
    same_id = (pid[i] == pid[j]) & (cam[i] != cam[j])
    same_cam = (pid[i] != pid[j]) & (cam[i] == cam[j])
    diff_both = (pid[i] != pid[j]) & (cam[i] != cam[j])

    def mad(mask: np.ndarray) -> float:
        a, b = i[mask][:pairs], j[mask][:pairs]
        return float(np.abs(x[a] - x[b]).mean()) if len(a) else float("nan")

    return {"same_id_other_camera": mad(same_id), "other_id_same_camera": mad(same_cam),
            "other_id_other_camera": mad(diff_both), "pairs": pairs}


def _hist_features(x: np.ndarray) -> np.ndarray:
    """A classic hand-made ReID descriptor: HSV histograms in six horizontal stripes (Hellinger-normalised)."""
    n, h = x.shape[0], x.shape[1]
    rgb = x / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    v, s = mx, np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    d = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6.0
    feats = []
    for k in range(6):
        sl = slice(k * h // 6, (k + 1) * h // 6)
        for values, bins, weights in ((hue[:, sl], 12, s[:, sl]), (s[:, sl], 6, None), (v[:, sl], 6, None)):
            idx = np.minimum((values * bins).astype(int), bins - 1).reshape(n, -1)
            w = np.ones_like(idx, np.float32) if weights is None else weights.reshape(n, -1)
            hist = np.zeros((n, bins), np.float32)
            np.add.at(hist, (np.repeat(np.arange(n), idx.shape[1]), idx.ravel()), w.ravel())
            feats.append(hist / np.maximum(hist.sum(1, keepdims=True), 1e-6))
    return np.sqrt(np.concatenate(feats, axis=1))


def baseline_scores(out: Path) -> dict:
    """Model-free reference points: an encoder worth using must beat these by a wide margin."""
    out = Path(out)
    items = {"query": [], "bounding_box_test": []}
    for pid, cam, p in _crops(out):
        items[p.parent.name].append((pid, cam, p))
    result = {}
    arrays = {k: (_load([p for *_, p in v], (32, 64)), np.array([x[0] for x in v]), np.array([x[1] for x in v]))
              for k, v in items.items()}
    (qx, qp, qc), (gx, gp, gc) = arrays["query"], arrays["bounding_box_test"]

    def raw(x: np.ndarray) -> np.ndarray:
        f = x.reshape(len(x), -1)
        return f - f.mean(1, keepdims=True)

    def score(q: np.ndarray, g: np.ndarray) -> dict:
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        r = retrieval_metrics(qn @ gn.T, qp, gp, qc, gc)
        return {"rank1": round(r.rank1, 4), "rank5": round(r.rank5, 4), "mAP": round(r.mAP, 4)}

    result["raw_pixels"] = score(raw(qx), raw(gx))
    result["color_histogram"] = score(_hist_features(qx), _hist_features(gx))
    n_gallery_ids = len(set(gp.tolist()) - {0})
    result["chance_rank1"] = round(1.0 / max(1, n_gallery_ids), 4)  # about: one true identity among them
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reid-stream synth", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (its previous benchmark files are replaced)")
    parser.add_argument("--ids", type=int, default=40)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--visits", type=int, default=3, help="visits per identity")
    parser.add_argument("--shots", type=int, default=4, help="detections per visit")
    parser.add_argument("--twins", type=float, default=0.25, help="fraction of identities that are near-twins")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--nuisance", type=float, default=1.0,
                        help="scale of the cameras' photometric differences (0 none, 1 default)")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="also write this PNG")
    parser.add_argument("--baselines", action="store_true", help="also print model-free retrieval scores")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, ids=args.ids, cameras=args.cameras, seed=args.seed, visits_per_id=args.visits,
                           shots_per_visit=args.shots, twins=args.twins, image_format=args.format,
                           nuisance=args.nuisance)
    except ValueError as exc:
        parser.error(str(exc))
    report: dict = asdict(summary)
    if args.contact_sheet is not None:
        report["contact_sheet"] = str(contact_sheet(args.out, args.contact_sheet))
    if args.baselines:
        report["baselines"] = baseline_scores(args.out)
        report["pixel_hardness"] = pixel_hardness(args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
