"""The site: each camera's fixed look (scene, person scale, photometric nuisances) and the camera graph between them.

Every camera distorts the picture its own way: gain, white balance, contrast, saturation, gamma, blur, sensor
noise, JPEG quality, person scale, scene and clutter, frame-to-frame exposure wander; `nuisance` scales the
photometric ones. The graph is a corridor 1-2-...-C, with a chord or a closed ring on larger sites, each edge with
its minimum and typical transit seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from reid_stream.eval.synth.identities import _cloth_color, _hsv, _jitter
from reid_stream.eval.synth.randomness import Seed, _pick, _rng

FRAME_W, FRAME_H = 320, 240
NOISE_PAD = 48  # the sensor noise field is this much larger than a frame, cut at random offsets
SITE_NAMES = ("entrance", "lobby", "corridor", "car park", "platform", "plaza", "shop front", "stairs", "exit")


def _muted(rgb: Sequence[int], keep: float) -> list[int]:
    """`rgb` with only `keep` of its colourfulness: scenes are greyer than people's clothes."""
    y = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return [int(y + (c - y) * keep) for c in rgb]


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


def _cameras(cameras: int, seed: int, nuisance: float = 1.0, sensor_seed: Seed | None = None) -> list[_Camera]:
    """Each camera's fixed look. `nuisance` scales the photometric ones (0: all cameras neutral). The realisation
    of the sensor noise is drawn from `sensor_seed` (default `seed`): a later session's noise differs, not its size."""
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
        out[-1].prepare(_rng(seed if sensor_seed is None else sensor_seed, "sensor", i + 1))
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
