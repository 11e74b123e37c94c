"""Licence plates: the one normalisation rule, and where a vehicle's plate comes from (pure, no I/O).

A plate is personal data and an identity claim (an exact match decides a vehicle's entity), so a given plate
the worker cannot use is refused loudly (dead letter `plate_invalid`) rather than dropped: a producer's bug
would otherwise silently stop plates from joining anything.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

from reid_stream.errors import DetectionError
from reid_stream.events import Detection, EntityAppearance

PLATE_MIN, PLATE_MAX = 2, 10  # what a plate holds after normalisation (the shortest real plates have 2)
OCR_PLATE_MIN = 4  # an OCR read shorter than this is more often a sticker, a logo or a fragment
MAX_RAW_PLATE = 64  # characters: far beyond any plate with separators, and it bounds the work on hostile text
_SEPARATORS = re.compile(r"[\s\-.\u00b7\u2010-\u2015]+")  # spaces, dashes (ASCII and typographic), dots
_PLATE = re.compile(f"[A-Z0-9]{{{PLATE_MIN},{PLATE_MAX}}}")
RULE = (f"{PLATE_MIN} to {PLATE_MAX} letters A-Z and digits once spaces, dashes and dots are removed "
        "(case-insensitive); send null or leave it out when no plate was read")


def normalise_plate(raw: str) -> str | None:
    """The plate as stored and compared (NFKC, separators removed, upper-case), or None if it is not one."""
    if len(raw) > MAX_RAW_PLATE:
        return None
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))  # NFKC: full-width "ＡＢ１" is "AB1"
    if not text.isascii():  # checked before upper(): "ı".upper() is "I"
        return None
    text = text.upper()
    return text if _PLATE.fullmatch(text) else None


def plausible_read(text: str) -> str | None:
    """An OCR read that looks like a plate: normalised, at least OCR_PLATE_MIN characters and one digit (brand
    names, "TAXI" and dealer stickers have none)."""
    plate = normalise_plate(text)
    if plate is None or len(plate) < OCR_PLATE_MIN or not any(c.isdigit() for c in plate):
        return None
    return plate


def _invalid(message: str) -> DetectionError:
    return DetectionError("plate_invalid", f"attributes.plate {message}", "validate",
                          details=[{"field": "attributes.plate", "type": "plate_invalid", "message": message}])


def given_plate(det: Detection) -> str | None:
    """A vehicle's plate from `attributes.plate`, normalised; None when there is none (absent, null, blank,
    or not a vehicle: persons never get plates). Raises `plate_invalid` for a value that is not a plate."""
    if det.entity_type != "vehicle":
        return None
    raw = det.attributes.get("plate")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _invalid(f"must be a string or null, not {type(raw).__name__}")
    if not raw.strip():
        return None
    plate = normalise_plate(raw)
    if plate is None:
        raise _invalid(f"must be {RULE}")
    return plate


def with_plate(header: dict[str, Any], plate: str, ocr_confidence: float | None = None) -> dict[str, Any]:
    """The detection header carrying its plate to stage 2: `plate`, and in the attributes the normalised plate
    (what the appearance shows), with the OCR's confidence when it was read off the crop."""
    attributes = dict(header.get("attributes") or {})
    attributes["plate"] = plate
    if ocr_confidence is not None:
        attributes["plate_source"] = "ocr"
        attributes["plate_confidence"] = round(ocr_confidence, 3)
    return {**header, "plate": plate, "attributes": attributes}


def entity_plates(entity_type: str, appearances: Iterable[EntityAppearance]) -> list[str]:
    """The plates an entity's appearances carry, most often seen first (ties by plate). Only a vehicle's
    `attributes.plate` is a plate (normalised in stage 1); on a person it is any attribute."""
    if entity_type != "vehicle":
        return []
    seen = Counter(p for a in appearances if a.attributes and isinstance(p := a.attributes.get("plate"), str))
    return sorted(seen, key=lambda p: (-seen[p], p))
