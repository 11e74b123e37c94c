"""Licence plates in stage 1: the normalisation rule, refusing bad plates, carrying a plate to stage 2, and
reading one off a rendered vehicle with the OCR that ships its models in its package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from reid_stream.errors import DetectionError
from reid_stream.events import BBox, Detection
from reid_stream.identity.plates import given_plate, normalise_plate, plausible_read, with_plate
from reid_stream.stream.prepare import Failed, PrepareConfig, Ready, prepare_one
from reid_stream.stream.wire import EmbeddedRecord, pack, unpack
from reid_stream.vision.images import ImageLimits
from reid_stream.vision.plate_ocr import best_plate, read_vehicle_plate
from tests.plate_images import frame_jpeg

LIMITS = ImageLimits((Path("/nonexistent-root"),), (), 1 << 22, 10**8, 2.0)
CFG = PrepareConfig(LIMITS, 32, 8 << 20, 3600)
OCR = PrepareConfig(LIMITS, 32, 8 << 20, 3600, plate_ocr=True, plate_min_confidence=0.9)


def detection(entity_type: str = "vehicle", image: bytes | None = None, bbox: dict[str, float] | None = None,
              **attributes: object) -> dict[str, object]:
    if image is None:
        image, bbox = frame_jpeg(None, box_size=(64, 48), frame=(128, 96))
    return {"detection_id": "v1", "camera_id": "gate", "entity_type": entity_type,
            "timestamp": datetime.now(UTC).isoformat(), "bbox": bbox, "image_b64": base64.b64encode(image).decode(),
            "attributes": attributes}


@pytest.mark.parametrize(("raw", "plate"), [
    ("AB123CD", "AB123CD"), ("ab-123 cd", "AB123CD"), (" AB.123.CD ", "AB123CD"), ("B\u00b7MW\u20132024", "BMW2024"),
    ("\uff21\uff22\uff11\uff12\uff13", "AB123"),  # full-width forms (NFKC)
    ("7\tABC\n123", "7ABC123"), ("A1", "A1"), ("1234567890", "1234567890"),
    ("A", None), ("ABCDE123456", None), ("N/A", None), ("AB_123", None), ("ÄB123", None), ("АВ123", None),  # Cyrillic
    ("\u0131B123", None),  # a dotless i: upper() would make it ASCII
    ("AB123;DROP", None), ("", None), ("A" * 100, None),
])
def test_the_normalisation_rule(raw, plate):
    assert normalise_plate(raw) == plate


def test_an_ocr_read_must_look_like_a_plate():
    assert plausible_read("ab-123 cd") == "AB123CD"
    assert plausible_read("TAXI") is None and plausible_read("TOYOTA") is None  # no digit: a brand, a sign
    assert plausible_read("A12") is None  # too short to trust from OCR (a given plate may be)
    assert plausible_read("粤B12345") is None


def test_a_given_plate_is_normalised_absent_ones_are_none_persons_never_have_one():
    def plate(**kw: object) -> str | None:
        return given_plate(Detection.model_validate(detection(**kw)))

    assert plate(plate="ab 123 cd") == "AB123CD"
    assert plate() is None and plate(plate=None) is None and plate(plate="   ") is None
    assert plate(entity_type="person", plate=123) is None  # not a vehicle: the attribute is only an attribute
    for bad, why in ((123, "not int"), (["AB123"], "not list"), ({"text": "AB123"}, "not dict"), (True, "not bool"),
                     ("N/A", "2 to 10 letters"), ("X", "2 to 10 letters")):
        with pytest.raises(DetectionError) as err:
            plate(plate=bad)
        assert (err.value.code, err.value.stage) == ("plate_invalid", "validate")
        assert why in err.value.message
        assert err.value.details == [{"field": "attributes.plate", "type": "plate_invalid",
                                      "message": err.value.message.removeprefix("attributes.plate ")}]


def test_a_bad_plate_is_dead_lettered_before_any_image_work_and_a_good_one_travels():
    bad = prepare_one(CFG, json.dumps(detection(plate="N/A", image=b"not even an image",
                                                bbox={"x1": 0, "y1": 0, "x2": 1, "y2": 1})).encode())
    assert isinstance(bad, Failed) and bad.error.code == "plate_invalid" and bad.detection_id == "v1"
    good = prepare_one(CFG, json.dumps(detection(plate="ab-123-cd", colour="red")).encode())
    assert isinstance(good, Ready) and good.ocr_s == 0.0
    assert good.header["plate"] == "AB123CD"
    assert good.header["attributes"] == {"plate": "AB123CD", "colour": "red"}  # the appearance shows what decided
    person = prepare_one(CFG, json.dumps(detection("person", plate="AB123CD")).encode())
    assert isinstance(person, Ready) and "plate" not in person.header
    assert person.header["attributes"] == {"plate": "AB123CD"}


def test_the_plate_crosses_the_internal_topic_and_older_records_have_none():
    det = Detection.model_validate(detection(plate="ab123cd"))
    rec = EmbeddedRecord.of(det, np.ones(4, dtype=np.float32) / 2, "m")
    assert rec.plate == "AB123CD"
    back = unpack(pack([rec]))[0]
    assert back.plate == "AB123CD" and back.attributes == {"plate": "AB123CD"}
    header = rec.header()
    del header["plate"]  # what a worker before plates packed
    assert EmbeddedRecord.from_header(header, rec.vector, "m", rec.fingerprint, rec.source).plate is None
    assert with_plate({"attributes": None}, "AB1", 0.98765) == {
        "plate": "AB1", "attributes": {"plate": "AB1", "plate_source": "ocr", "plate_confidence": 0.988}}


def box(x: float, y: float, w: float = 60, h: float = 20) -> list[list[float]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def test_the_best_plate_among_the_ocr_boxes():
    # A plate read as two boxes on one line is joined; a sticker above it with no digit is no plate.
    found = [[box(100, 50), "B", 0.99], [box(10, 52), "M", 0.97], [box(0, 0, 90), "TOYOTA", 1.0],
             [box(170, 49), "2024", 0.98]]
    assert best_plate(found, 0.9).plate == "MB2024"
    assert best_plate(found, 0.98) is None  # the joined read takes its weakest box's score
    assert best_plate([[box(0, 0), "AB 123", 0.95], [box(0, 100), "XY98765", 0.99]], 0.9).plate == "XY98765"
    assert best_plate([], 0.5) is None


PLATES = ["AB123CD", "XY987ZT", "KL4567", "7ABC123", "MRS4411", "GE490PT", "ZX81QW", "HH2024"]


def test_ocr_reads_rendered_plates_offline():
    """The wheel's PP-OCR models read every one of these (bench/plates.py measures more, and degraded ones);
    no network is involved: the package ships the models, and nothing here could reach one."""
    for n, plate in enumerate(PLATES):
        data, bbox = frame_jpeg(plate, box_size=(480, 360), char_height=16 + n, seed=n)
        read = read_vehicle_plate(data, BBox(**bbox), 10**8, 0.9)
        assert read is not None and read.plate == plate and read.confidence >= 0.9, (plate, read)
    data, bbox = frame_jpeg(None, seed=1)
    assert read_vehicle_plate(data, BBox(**bbox), 10**8, 0.9) is None  # no plate: nothing made up


def test_stage_one_reads_a_plate_only_when_told_and_only_when_none_is_given():
    data, bbox = frame_jpeg("KL4567", box_size=(320, 240), char_height=16)
    value = json.dumps(detection(image=data, bbox=bbox)).encode()
    off = prepare_one(CFG, value)
    assert isinstance(off, Ready) and "plate" not in off.header and off.ocr_s == 0.0
    on = prepare_one(OCR, value)
    assert isinstance(on, Ready) and on.header["plate"] == "KL4567" and on.ocr_s > 0
    assert on.header["attributes"]["plate_source"] == "ocr" and on.header["attributes"]["plate_confidence"] >= 0.9
    given = prepare_one(OCR, json.dumps(detection(image=data, bbox=bbox, plate="ZZ999")).encode())
    assert isinstance(given, Ready) and given.header["plate"] == "ZZ999" and given.ocr_s == 0.0  # the event wins
    person = prepare_one(OCR, json.dumps(detection("person", image=data, bbox=bbox)).encode())
    assert isinstance(person, Ready) and "plate" not in person.header and person.ocr_s == 0.0
