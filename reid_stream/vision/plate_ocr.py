"""Reads a licence plate off a vehicle crop with PP-OCR (rapidocr-onnxruntime): CPU only, and offline.

The wheel ships its ONNX models (PP-OCRv4 detection and recognition, and the direction classifier) and
downloads nothing, at import or at the first call. It runs in the decode processes (prepare.py), so the event
loop never waits for it; each process loads its own engine at its first vehicle, one ONNX thread each (the
processes already use the cores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reid_stream.errors import DetectionError
from reid_stream.events import BBox
from reid_stream.identity.plates import plausible_read
from reid_stream.vision.images import box_region

log = logging.getLogger(__name__)
# The crop's longer side, in pixels, before OCR: the text detector's cost grows with the area, and a plate
# legible to a person in a vehicle's box stays legible at this size.
OCR_MAX_SIDE = 640
_engine: Any = None  # one per process, loaded at the first read


@dataclass(frozen=True)
class PlateRead:
    plate: str  # normalised
    confidence: float


def _reader() -> Any:
    global _engine
    if _engine is None:
        from rapidocr_onnxruntime import RapidOCR  # onnxruntime and OpenCV: loaded only where OCR is on

        # No direction classifier: plates are upright in a vehicle's box, and it costs a third of the time. The
        # detector's default ("min" 736) would upscale every crop to 736 px on its short side: 2-5x the work.
        _engine = RapidOCR(use_cls=False, det_limit_type="max", intra_op_num_threads=1, inter_op_num_threads=1)
    return _engine


def _lines(found: Sequence[Sequence[Any]]) -> list[list[tuple[float, str, float]]]:
    """Text boxes grouped into lines (vertical centres within half a box height), each left to right, as
    (x, text, score): a plate with wide gaps ("B MW 2024") can come back as several boxes."""
    boxes = []
    for points, text, score in found:
        pts = np.asarray(points, dtype=np.float64)
        boxes.append((float(pts[:, 1].mean()), float(np.ptp(pts[:, 1])), float(pts[:, 0].min()), str(text),
                      float(score)))
    lines: list[list[tuple[float, float, float, str, float]]] = []
    for box in sorted(boxes):
        if lines and abs(box[0] - lines[-1][0][0]) <= max(box[1], lines[-1][0][1]) / 2:
            lines[-1].append(box)
        else:
            lines.append([box])
    return [sorted((x, text, score) for _, _, x, text, score in line) for line in lines]


def best_plate(found: Sequence[Sequence[Any]], min_confidence: float) -> PlateRead | None:
    """The longest plausible plate the OCR's boxes give, at or above min_confidence, or None. A line of boxes that
    reads as a plate when joined counts only joined (its score the lowest of its boxes'): its parts are
    fragments, and a fragment that passes alone is a wrong plate. Otherwise each box counts alone."""
    reads: list[tuple[str, float]] = []
    for line in _lines(found):
        joined = plausible_read("".join(t for _, t, _ in line)) if len(line) > 1 else None
        parts = [(joined, min(s for _, _, s in line))] if joined else [(plausible_read(t), s) for _, t, s in line]
        reads += [(plate, score) for plate, score in parts if plate is not None and score >= min_confidence]
    if not reads:
        return None
    plate, score = max(reads, key=lambda r: (len(r[0]), r[1]))  # then the more confident
    return PlateRead(plate, score)


def read_plate(rgb: np.ndarray, min_confidence: float) -> PlateRead | None:
    """The plate on an RGB image, or None."""
    found, _ = _reader()(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV's channel order
    return best_plate(found or [], min_confidence)


def read_vehicle_plate(data: bytes, bbox: BBox, max_pixels: int, min_confidence: float) -> PlateRead | None:
    """The plate in a detection's box. A failure of the OCR is no fault of the event: it is logged and the
    vehicle goes on without a plate."""
    try:
        return read_plate(np.asarray(box_region(data, bbox, OCR_MAX_SIDE, max_pixels)), min_confidence)
    except DetectionError:
        return None  # the image decoded for the encoder's crop; a second decoder refusing it is no plate
    except Exception:
        log.exception("plate OCR failed; the vehicle goes on without a plate")
        return None
