"""Turns an image reference and a bbox into a letterboxed crop; pure, apart from reading the bytes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlparse

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from reid_stream.config import DEFAULT_PORTS, host_rules
from reid_stream.errors import DetectionError
from reid_stream.events import BBox, Detection

if TYPE_CHECKING:  # imported where a URL is fetched: the decode processes never do, and aiohttp costs each of
    import aiohttp  # them ~0.4 s of CPU at start (its connector builds an SSL context)

# The only formats accepted, and the only Pillow parsers that ever see untrusted bytes (Image.open's formats=,
# which takes a tuple or list).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")
# What Pillow's JPEG opener hands back: a multi-picture JPEG (MPO: stereo and some phone cameras) is a JPEG
# whose first frame every decoder here reads, libjpeg-turbo's fast path included; its other frames are ignored.
JPEG_FORMATS: tuple[str, ...] = ("JPEG", "MPO")
MAX_REDIRECTS = 3


# --- geometry (pure) ------------------------------------------------------------------------------

def clamp_bbox(bbox: BBox, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel box inside the image: floor the start, ceil the end, clip to the borders."""
    x1 = max(0, min(width, math.floor(bbox.x1)))
    y1 = max(0, min(height, math.floor(bbox.y1)))
    x2 = max(0, min(width, math.ceil(bbox.x2)))
    y2 = max(0, min(height, math.ceil(bbox.y2)))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise DetectionError(
            "bbox_outside_image",
            f"bbox ({bbox.x1}, {bbox.y1}, {bbox.x2}, {bbox.y2}) does not overlap the {width}x{height} image",
            "crop",
        )
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Letterbox:
    """Where a w x h crop lands on a size x size canvas: scaled to fit, centred, the rest padded."""

    new_w: int
    new_h: int
    left: int
    top: int


def letterbox_geometry(width: int, height: int, size: int) -> Letterbox:
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return Letterbox(new_w, new_h, (size - new_w) // 2, (size - new_h) // 2)


def draft_reduction(box: tuple[int, int, int, int], size: int) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that still leaves the box >= size on its long side."""
    long_side = max(box[2] - box[0], box[3] - box[1])
    return next((r for r in (8, 4, 2) if long_side / r >= size), 1)


# --- reading bytes --------------------------------------------------------------------------------

def resolve_image_path(raw: str, roots: tuple[Path, ...]) -> Path:
    """The real file a path names, only if it lies inside one of the roots (after resolving links)."""
    if not roots:
        raise DetectionError("path_not_allowed", "image_path is disabled: REID_IMAGE_ROOTS is empty", "load_image")
    if "\x00" in raw:
        raise DetectionError("path_not_allowed", "image_path contains a NUL byte", "load_image")
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real_root in real.parents:
            return real
    raise DetectionError("path_not_allowed", "image_path resolves outside the allowed roots", "load_image")


def read_path(raw: str, roots: tuple[Path, ...], max_bytes: int) -> bytes:
    path = resolve_image_path(raw, roots)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise DetectionError("image_not_found", "image_path is not a regular file", "load_image")
        if size > max_bytes:
            raise DetectionError("image_too_large", f"image file has {size} bytes, limit {max_bytes}", "load_image")
        return path.read_bytes()
    except FileNotFoundError:
        raise DetectionError("image_not_found", "image_path does not exist", "load_image") from None
    except PermissionError:
        raise DetectionError("image_unreadable", "image_path cannot be read", "load_image") from None


def read_b64(data: str, max_bytes: int) -> bytes:
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise DetectionError("image_too_large", f"image_b64 decodes to more than {max_bytes} bytes", "load_image")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DetectionError("invalid_base64", f"image_b64 is not valid base64: {exc}", "load_image") from None


def check_url(url: str, allowed_hosts: tuple[str, ...]) -> None:
    """Refuse a URL whose host and port no REID_URL_ALLOWED_HOSTS entry allows (see config.HostRule)."""
    parsed = urlparse(url)
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
        raise DetectionError("url_not_allowed", "image_url must be an absolute http(s) URL", "load_image")
    try:
        port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    except ValueError:
        raise DetectionError("url_not_allowed", "image_url has an invalid port", "load_image") from None
    host, rules = parsed.hostname.lower(), host_rules(allowed_hosts)
    if any(rule.allows(host, port, parsed.scheme) for rule in rules):
        return
    shown = f"[{host}]" if ":" in host else host
    named = [str(rule) for rule in rules if rule.host == host]
    if not named:
        raise DetectionError("url_not_allowed", f"host {host!r} is not in REID_URL_ALLOWED_HOSTS", "load_image")
    raise DetectionError("url_not_allowed", f"port {port} of host {shown} is not allowed: REID_URL_ALLOWED_HOSTS "
                         f"names it as {', '.join(named)} (a host without a port allows its scheme's default port "
                         f"only); add {shown}:{port} to allow it", "load_image")


async def fetch_url(session: aiohttp.ClientSession, url: str, allowed_hosts: tuple[str, ...],
                    max_bytes: int, timeout_s: float) -> bytes:
    """GET with a host allow-list checked on every redirect hop, a size limit, and ONE time limit
    (REID_URL_TIMEOUT_SECONDS) over the whole fetch: every hop and the body read share it."""
    try:
        # One deadline for the whole chain: a per-hop limit let a slow redirect chain take hops x the limit.
        async with asyncio.timeout(timeout_s):
            return await _follow(session, url, allowed_hosts, max_bytes)
    except TimeoutError:
        raise DetectionError("image_fetch_failed", f"image_url exceeded the total time limit of {timeout_s:g}s "
                             "(redirects and body included)", "load_image") from None


async def _follow(session: aiohttp.ClientSession, url: str, allowed_hosts: tuple[str, ...], max_bytes: int) -> bytes:
    import aiohttp

    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed_hosts)
        try:
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status != 200:
                    raise DetectionError("image_fetch_failed", f"image_url answered HTTP {resp.status}", "load_image")
                if (resp.content_length or 0) > max_bytes:
                    raise DetectionError("image_too_large", f"image_url body is over {max_bytes} bytes", "load_image")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise DetectionError("image_too_large", f"image_url body is over {max_bytes} bytes",
                                             "load_image")
                return bytes(body)
        except aiohttp.ClientError as exc:
            raise DetectionError("image_fetch_failed", f"image_url could not be fetched: {exc!r}",
                                 "load_image") from None
    raise DetectionError("image_fetch_failed", f"image_url redirected more than {MAX_REDIRECTS} times", "load_image")


# --- decoding and cropping ------------------------------------------------------------------------

def decode_image(data: bytes, max_pixels: int, crop_hint: tuple[BBox, int] | None = None) -> Image.Image:
    """Decode JPEG or PNG fully, refusing bombs, truncated files and any other format (unparsed).

    With `crop_hint` (the box that will be cut out and the side it will be scaled to), a JPEG whose box
    is at least twice that side is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling: a fraction
    of the work, and no detail the crop would keep is lost. The full size stays in info["full_size"].
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            if img.format not in (*ALLOWED_FORMATS, *JPEG_FORMATS):
                raise DetectionError("unsupported_image_format", f"image is {img.format}, not JPEG or PNG",
                                     "load_image")
            if img.width * img.height > max_pixels:
                raise DetectionError("image_too_large", f"image is {img.width}x{img.height}, over {max_pixels} pixels",
                                     "load_image")
            full = img.size
            if crop_hint is not None and img.format in JPEG_FORMATS:
                r = draft_reduction(clamp_bbox(crop_hint[0], *full), crop_hint[1])
                if r > 1:
                    img.draft("RGB", (math.ceil(full[0] / r), math.ceil(full[1] / r)))
            img.load()
            img.info["full_size"] = full
    except DetectionError:
        raise
    except UnidentifiedImageError:
        other = _other_format(data)
        if other is not None:
            raise DetectionError("unsupported_image_format", f"image looks like {other}, not JPEG or PNG",
                                 "load_image") from None
        raise DetectionError("image_decode_failed", "bytes are not a recognisable image", "load_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DetectionError("image_too_large", str(exc), "load_image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DetectionError("image_decode_failed", f"image could not be decoded: {exc}", "load_image") from None
    return img


def _other_format(data: bytes) -> str | None:
    """The refused format the bytes' header names, by Pillow's prefix checks alone (its parsers never run)."""
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        if fmt in ALLOWED_FORMATS or accept is None:
            continue
        try:
            if accept(data[:16]):
                return fmt
        except Exception:  # a check indexing past a short prefix is a "no", not an error
            continue
    return None


def decode_crop(data: bytes, bbox: BBox, size: int, max_pixels: int) -> np.ndarray:
    """The letterboxed crop as size x size x 3 uint8: the pipeline's hot path.

    Baseline JPEGs go through libjpeg-turbo directly (simplejpeg: ~5x less work than PIL on a camera crop,
    measured), DCT-scaled like decode_image. Anything it declines -- PNG, CMYK, progressive quirks,
    broken files -- takes the PIL path, which also names what is wrong with a broken file.
    """
    if data[:2] == b"\xff\xd8":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            if width * height <= max_pixels:
                box = clamp_bbox(bbox, width, height)
                r = draft_reduction(box, size)
                arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=math.ceil(width / r),
                                             min_height=math.ceil(height / r))
                img = Image.frombuffer("RGB", (arr.shape[1], arr.shape[0]), arr, "raw", "RGB", 0, 1)
                return _letterbox_region(img, box, (width, height), size, (0, 0, 0))
        except ValueError:
            pass  # strict decoding refused it: let PIL decide, and explain
    img = decode_image(data, max_pixels, (bbox, size))
    return np.asarray(crop_letterbox(img, bbox, size, (0, 0, 0)))


def _box_in_decoded(img: Image.Image, box: tuple[int, int, int, int],
                    full: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in the full image's pixels, in the pixels of the image as decoded (maybe DCT-reduced)."""
    x1, y1, x2, y2 = box
    if img.size != full:
        sx, sy = img.width / full[0], img.height / full[1]
        x1, y1 = math.floor(x1 * sx), math.floor(y1 * sy)
        x2, y2 = max(x1 + 1, math.ceil(x2 * sx)), max(y1 + 1, math.ceil(y2 * sy))
    return x1, y1, x2, y2


def _letterbox_region(img: Image.Image, box: tuple[int, int, int, int], full: tuple[int, int], size: int,
                      fill: tuple[int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = _box_in_decoded(img, box, full)
    # Only the box's own pixels: resizing straight from the frame would blend in its surroundings.
    # Padded, never centre-cropped, so that a tall person keeps head and feet.
    region = img.crop((x1, y1, x2, y2))
    if region.mode != "RGB":
        region = region.convert("RGB")
    geo = letterbox_geometry(region.width, region.height, size)
    out = np.zeros((size, size, 3), np.uint8)
    if fill != (0, 0, 0):
        out[:] = fill
    out[geo.top:geo.top + geo.new_h, geo.left:geo.left + geo.new_w] = np.asarray(
        region.resize((geo.new_w, geo.new_h), Image.Resampling.BICUBIC))
    return out


def crop_letterbox(img: Image.Image, bbox: BBox, size: int, fill: tuple[int, int, int]) -> Image.Image:
    """The bbox (in the full image's pixels, even if it was decoded reduced) letterboxed to size x size."""
    full = img.info.get("full_size", img.size)
    return Image.fromarray(_letterbox_region(img, clamp_bbox(bbox, *full), full, size, fill))


@dataclass(frozen=True)
class ImageLimits:
    roots: tuple[Path, ...]
    allowed_hosts: tuple[str, ...]
    max_bytes: int
    max_pixels: int
    url_timeout_s: float


def read_local(det: Detection, limits: ImageLimits) -> bytes | None:
    """Bytes of a path or inline reference; None for a URL, which is fetched asynchronously."""
    if det.image_path is not None:
        return read_path(det.image_path, limits.roots, limits.max_bytes)
    if det.image_b64 is not None:
        return read_b64(det.image_b64, limits.max_bytes)
    check_url(det.image_url or "", limits.allowed_hosts)
    return None


def box_region(data: bytes, bbox: BBox, max_side: int, max_pixels: int) -> Image.Image:
    """The box's own pixels (no letterbox), RGB, longer side at most max_side (thumbnails, plate OCR)."""
    img = decode_image(data, max_pixels, (bbox, max_side))
    full = img.info.get("full_size", img.size)
    region = img.crop(_box_in_decoded(img, clamp_bbox(bbox, *full), full)).convert("RGB")
    region.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return region


def thumbnail_jpeg(data: bytes, bbox: BBox, max_side: int, max_pixels: int, quality: int = 85) -> bytes:
    """The box's own pixels (no letterbox) as a JPEG whose longer side is at most max_side."""
    region = box_region(data, bbox, max_side, max_pixels)
    out = io.BytesIO()
    region.save(out, "JPEG", quality=quality)
    return out.getvalue()
