"""Making a frame: people composited into a camera's scene, occluders, the camera's optics and sensor, and the boxes.

Boxes snap to the 8-pixel JPEG block grid (`GRID`), so a crop file decodes to exactly the pixels of its decoded
frame cut at the box: no block straddles the crop's border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from reid_stream.eval.synth.cameras import FRAME_H, FRAME_W, NOISE_PAD, _Camera
from reid_stream.eval.synth.drawing import _draw_person
from reid_stream.eval.synth.schedule import _Shot

GRID = 8  # bboxes snap to the JPEG block grid so crops and frames decode to the same pixels


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
