"""What travels between the stages and to the dead-letter topic: the `reid-embedded` record, packed.

One `reid-embedded` message carries a batch of one model and entity type: a JSON header, the cut
originals (so stage 2 can still dead-letter an event, e.g. on a detection_id conflict), then the
float32 vectors. Stage 2 reads the header into typed records without validating the detection again:
stage 1 already did, and anything it did not write fails to unpack and is dead-lettered whole.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from reid_stream.errors import DetectionError
from reid_stream.events import DEFAULT_SITE, DeadLetter, Detection, fingerprint
from reid_stream.identity.plates import given_plate, with_plate

WIRE_MAGIC = b"RSE1"
ORIGINAL_CARRIED = 64 * 1024  # bytes of the original event that travel with an embedding to stage 2
WIRE_MAX_MESSAGE = 900_000  # under the broker's default 1 MB, so an existing internal topic needs no change
WIRE_ITEM_OVERHEAD = 1024  # JSON header bytes per item, an estimate (checked after packing)
Message = tuple[str, bytes | None, bytes]  # topic, key, value


@dataclass(frozen=True)
class RawEvent:
    """A Kafka message as received, so that a dead letter can carry it back unchanged."""

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch
    size: int | None = None  # of the original value, when `value` carries only its start


def dead_letter(raw: RawEvent, err: DetectionError, detection_id: str | None = None,
                max_original: int = 1 << 20) -> DeadLetter:
    """A dead letter carrying the original bytes, cut at max_original so the letter itself can be sent."""
    size = raw.size if raw.size is not None else len(raw.value)
    kept = raw.value[:max_original]
    return DeadLetter(
        error_code=err.code, message=err.message[:2000], stage=err.stage, time=datetime.now(UTC),
        original_b64=base64.b64encode(kept).decode(), original_size=size, original_truncated=len(kept) < size,
        original_key_b64=base64.b64encode(raw.key).decode() if raw.key is not None else None,
        source_topic=raw.topic, source_partition=raw.partition, source_offset=raw.offset,
        detection_id=detection_id, details=err.details)


def letter_message(topic: str, letter: DeadLetter) -> Message:
    return topic, (letter.detection_id or "").encode() or None, letter.model_dump_json().encode()


@dataclass
class EmbeddedRecord:
    """One embedded detection: what stage 2 needs of it (no image bytes), its vector and its source.

    The image reference (path or URL, and the box) is kept so a thumbnail can be cut on demand later;
    an inline image is not carried.
    """

    detection_id: str
    camera_id: str
    entity_type: str
    timestamp: datetime
    bbox: tuple[float, float, float, float]
    vector: np.ndarray
    model: str
    fingerprint: str
    source: RawEvent
    camera_name: str | None = None
    track_id: str | None = None
    attributes: dict[str, Any] | None = None
    image_path: str | None = None
    image_url: str | None = None
    plate: str | None = None  # a vehicle's normalised licence plate, given or read by OCR (plates.py)
    site_id: str = DEFAULT_SITE

    @classmethod
    def from_header(cls, det: dict[str, Any], vector: np.ndarray, model: str, fingerprint: str,
                    source: RawEvent) -> EmbeddedRecord:
        """From a validated detection dumped as JSON (stage 1), or from a header stage 1 packed."""
        box = det["bbox"]
        return cls(
            detection_id=det["detection_id"], camera_id=det["camera_id"], entity_type=det["entity_type"],
            timestamp=datetime.fromisoformat(det["timestamp"]),
            bbox=(float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])),
            vector=vector, model=model, fingerprint=fingerprint, source=source,
            camera_name=det.get("camera_name"), track_id=det.get("track_id"),
            attributes=det.get("attributes") or None,
            image_path=det.get("image_path"), image_url=det.get("image_url"), plate=det.get("plate"),
            site_id=det.get("site_id") or DEFAULT_SITE)

    @classmethod
    def of(cls, det: Detection, vector: np.ndarray, model: str, source: RawEvent | None = None) -> EmbeddedRecord:
        """From a Detection object (tests, benchmarks, replays), with its given plate; stage 1 builds from its
        dumped header."""
        header = det.model_dump(mode="json", exclude={"image_b64"})
        plate = given_plate(det)
        if plate is not None:
            header = with_plate(header, plate)
        return cls.from_header(header, vector, model, fingerprint(det), source or RawEvent(b""))

    def header(self) -> dict[str, Any]:
        x1, y1, x2, y2 = self.bbox
        return {
            "detection_id": self.detection_id, "camera_id": self.camera_id, "entity_type": self.entity_type,
            "timestamp": self.timestamp.isoformat(), "bbox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
            "camera_name": self.camera_name, "track_id": self.track_id, "attributes": self.attributes,
            "image_path": self.image_path, "image_url": self.image_url, "plate": self.plate,
            "site_id": self.site_id,
        }

    @property
    def image_ref(self) -> dict[str, Any] | None:
        """Where the crop can be cut again for a thumbnail; None for an inline image (not kept)."""
        if self.image_path is None and self.image_url is None:
            return None
        ref: dict[str, Any] = {"bbox": list(self.bbox)}
        if self.image_path is not None:
            ref["path"] = self.image_path
        else:
            ref["url"] = self.image_url
        return ref


def pack(items: Sequence[EmbeddedRecord]) -> bytes:
    """One `reid-embedded` message for a batch of one model, site and entity type."""
    originals = [i.source.value[:ORIGINAL_CARRIED] for i in items]
    header = json.dumps({
        "model": items[0].model, "dim": int(items[0].vector.shape[0]),
        "items": [{
            "detection": i.header(), "fingerprint": i.fingerprint,
            "source": {"topic": i.source.topic, "partition": i.source.partition, "offset": i.source.offset,
                       "timestamp": i.source.timestamp,
                       "size": i.source.size if i.source.size is not None else len(i.source.value),
                       "key": base64.b64encode(i.source.key).decode() if i.source.key is not None else None,
                       "kept": len(orig)},
        } for i, orig in zip(items, originals, strict=True)],
    }).encode()
    vectors = np.ascontiguousarray(np.stack([i.vector for i in items]), np.float32)
    return b"".join([WIRE_MAGIC, struct.pack(">I", len(header)), header, *originals, vectors.tobytes()])


def unpack(data: bytes) -> list[EmbeddedRecord]:
    """The inverse of pack; raises on anything it did not write."""
    if data[:4] != WIRE_MAGIC:
        raise ValueError("not a reid-embedded batch (bad magic)")
    (n,) = struct.unpack_from(">I", data, 4)
    header = json.loads(data[8: 8 + n])
    pos = 8 + n
    model, dim, items = header["model"], int(header["dim"]), header["items"]
    vectors = np.frombuffer(data, np.float32, count=len(items) * dim, offset=pos + sum(
        int(i["source"]["kept"]) for i in items)).reshape(len(items), dim).copy()
    out = []
    for item, vec in zip(items, vectors, strict=True):
        src = item["source"]
        kept = int(src["kept"])
        raw = RawEvent(data[pos: pos + kept], base64.b64decode(src["key"]) if src.get("key") is not None else None,
                       src["topic"], src["partition"], src["offset"], src.get("timestamp"), src.get("size"))
        pos += kept
        out.append(EmbeddedRecord.from_header(item["detection"], vec, model, item["fingerprint"], raw))
    return out


def embedded_messages(topic: str, records: Sequence[EmbeddedRecord]) -> list[Message]:
    """Stage 1's output, one message per model, site and entity type, each under the broker's default message
    size limit. Keyed by site and type: a (site, type)'s detections share a partition, so they have one writer,
    and many sites spread over the partitions and so over the workers."""
    groups: dict[tuple[str, str, str], list[EmbeddedRecord]] = {}
    for rec in records:
        groups.setdefault((rec.model, rec.site_id, rec.entity_type), []).append(rec)
    out: list[Message] = []
    for (_, site, etype), items in groups.items():
        key = writer_key(site, etype)
        chunk: list[EmbeddedRecord] = []
        size = 0
        for item in items:
            cost = min(len(item.source.value), ORIGINAL_CARRIED) + item.vector.nbytes + WIRE_ITEM_OVERHEAD
            if chunk and size + cost > WIRE_MAX_MESSAGE:
                out.extend((topic, key, m) for m in _packed_under_limit(chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += cost
        out.extend((topic, key, m) for m in _packed_under_limit(chunk))
    return out


def writer_key(site: str, etype: str) -> bytes:
    """The `reid-embedded` key of a (site, type): the unit with one writer."""
    return f"{site}/{etype}".encode()


def _packed_under_limit(items: list[EmbeddedRecord]) -> list[bytes]:
    """The estimate above cannot see large `attributes`: halve any chunk that still packs too big
    (a message the broker refuses would be retried forever and stall the stage)."""
    packed = pack(items)
    if len(packed) <= WIRE_MAX_MESSAGE or len(items) == 1:
        return [packed]
    half = len(items) // 2
    return _packed_under_limit(items[:half]) + _packed_under_limit(items[half:])
