"""Synthetic vehicles with licence plates, rendered here with Pillow's own font (no font file, no download):
what the plate OCR is tested and measured on (tests/unit/identity/test_plates.py, bench/plates.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def plate_image(text: str, char_height: int) -> Image.Image:
    """A white plate with a black border and black text whose capitals are about char_height pixels tall."""
    font = ImageFont.load_default(size=round(char_height * 1.4))  # the font's size is its em, not its cap height
    left, top, right, bottom = font.getbbox(text)
    pad = max(4, char_height // 3)
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width - 1, img.height - 1), outline="black", width=max(1, char_height // 10))
    draw.text((pad - left, pad - top), text, fill="black", font=font)
    return img


def vehicle(text: str | None, size: tuple[int, int], char_height: int, seed: int = 0) -> Image.Image:
    """A vehicle seen from behind: body, rear window, lights, and the plate low in the middle (None: no plate)."""
    rng = np.random.default_rng(seed)
    w, h = size
    body = tuple(int(c) for c in rng.integers(30, 220, 3))
    img = Image.new("RGB", size, body)
    draw = ImageDraw.Draw(img)
    draw.rectangle((w // 8, h // 10, w * 7 // 8, h * 2 // 5), fill=(40, 50, 60))  # rear window
    for x in (w // 12, w * 11 // 12 - w // 8):
        draw.rectangle((x, h // 2, x + w // 8, h // 2 + h // 12), fill=(200, 30, 30))  # lights
    if text is not None:
        plate = plate_image(text, char_height)
        img.paste(plate, ((w - plate.width) // 2, h * 3 // 4 - plate.height // 2))
    return img


def frame_jpeg(text: str | None, box_size: tuple[int, int] = (480, 360), char_height: int = 20,
               frame: tuple[int, int] = (1280, 720), seed: int = 0, quality: int = 90, blur: float = 0.0,
               angle: float = 0.0, light: float = 1.0) -> tuple[bytes, dict[str, float]]:
    """A camera frame (JPEG at `quality`) with one vehicle on a grey road, and the vehicle's bbox; the vehicle
    can be blurred (Gaussian radius, px), turned (degrees) and dimmed (`light` times its brightness, plus
    sensor noise) as a camera at dusk would see it."""
    car = vehicle(text, box_size, char_height, seed)
    if angle:
        car = car.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(110, 110, 105))
    if blur:
        car = car.filter(ImageFilter.GaussianBlur(blur))
    if light != 1.0:
        noise = np.random.default_rng(seed).normal(0, 6, (box_size[1], box_size[0], 3))
        car = Image.fromarray(np.clip(np.asarray(car) * light + noise, 0, 255).astype(np.uint8))
    img = Image.new("RGB", frame, (110, 110, 105))
    x1, y1 = (frame[0] - box_size[0]) // 3, (frame[1] - box_size[1]) // 2
    img.paste(car, (x1, y1))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue(), {"x1": x1, "y1": y1, "x2": x1 + box_size[0], "y2": y1 + box_size[1]}
