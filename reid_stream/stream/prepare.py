"""Stage 1's per-event work -- parse, validate, load, decode, crop -- in a pool of worker processes.

Why processes: on the 2-core reference machine this work held the GIL for ~0.35 ms per detection,
about half of what the event loop itself needs, and decode threads made every short PIL call wait
for the GIL again (py-spy). A process also contains a decoder crash to the event that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from reid_stream.errors import DetectionError
from reid_stream.events import Detection, fingerprint, parse_detection
from reid_stream.identity.plates import given_plate, with_plate
from reid_stream.vision.images import ImageLimits, decode_crop, read_local
from reid_stream.vision.plate_ocr import read_vehicle_plate

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
DECODER_NICENESS = 5


@dataclass(frozen=True)
class PrepareConfig:
    limits: ImageLimits
    size: int  # the encoder's input side
    max_event_bytes: int
    max_future_skew_seconds: int
    plate_ocr: bool = False  # read a vehicle's plate off its crop when the event gives none
    plate_min_confidence: float = 0.9


@dataclass
class Ready:
    """A crop to encode, and the detection as it travels on (without its image)."""

    detection_id: str
    entity_type: str
    header: dict[str, Any]
    fingerprint: str
    crop: np.ndarray  # size x size x 3 uint8
    ocr_s: float = 0.0  # seconds its plate OCR took (the plate_ocr stage metric)


@dataclass
class NeedsFetch:
    """A valid detection whose image is at an allowed URL: the event loop fetches it, then decodes again."""

    detection_id: str
    url: str


@dataclass
class Failed:
    error: DetectionError
    detection_id: str | None


Outcome = Ready | NeedsFetch | Failed


def prepare_one(cfg: PrepareConfig, value: bytes, fetched: bytes | None = None,
                timing: list[float] | None = None) -> Outcome:
    det: Detection | None = None
    try:
        det = parse_detection(value, max_future_skew_seconds=cfg.max_future_skew_seconds,
                              max_event_bytes=cfg.max_event_bytes)
        plate = given_plate(det)  # before any image work: a bad plate is refused like a bad field
        data = fetched
        if data is None:
            data = read_local(det, cfg.limits)  # also the URL allow-list check, before any network access
            if data is None:
                assert det.image_url is not None
                return NeedsFetch(det.detection_id, det.image_url)
        t0 = time.perf_counter()
        crop = decode_crop(data, det.bbox, cfg.size, cfg.limits.max_pixels)
        if timing is not None:
            timing[0] += time.perf_counter() - t0
        header = det.model_dump(mode="json", exclude={"image_b64"})
        ocr_s = 0.0
        if plate is not None:
            header = with_plate(header, plate)
        elif cfg.plate_ocr and det.entity_type == "vehicle":
            t1 = time.perf_counter()
            read = read_vehicle_plate(data, det.bbox, cfg.limits.max_pixels, cfg.plate_min_confidence)
            ocr_s = time.perf_counter() - t1
            if read is not None:
                header = with_plate(header, read.plate, read.confidence)
        return Ready(det.detection_id, det.entity_type, header, fingerprint(det), crop, ocr_s)
    except DetectionError as err:
        return Failed(err, det.detection_id if det else None)
    except Exception as exc:  # a bug must not block the events behind this one
        log.error("unexpected error preparing a detection", exc_info=exc)
        return Failed(DetectionError("internal_error", repr(exc), "load_image"), det.detection_id if det else None)


def prepare_chunk(cfg: PrepareConfig, values: Sequence[bytes],
                  fetched: Sequence[bytes | None] | None = None) -> tuple[list[Outcome], float, float]:
    """Outcomes in order, plus the seconds spent on images (decode and crop are one step: libjpeg decodes
    at the scale the crop needs) and on everything else but plate OCR (timed per outcome): parsing,
    validation, base64 (stage metrics)."""
    timing = [0.0]
    t0 = time.perf_counter()
    outcomes = [prepare_one(cfg, v, fetched[i] if fetched else None, timing) for i, v in enumerate(values)]
    ocr_s = sum(o.ocr_s for o in outcomes if isinstance(o, Ready))
    return outcomes, timing[0], time.perf_counter() - t0 - timing[0] - ocr_s


_NO_CROP = np.zeros((0, 0, 3), np.uint8)  # a Ready's crop while it travels in its chunk's array


@dataclass
class PackedChunk:
    """prepare_chunk's answer as it crosses from a decode process: the Ready crops in one array. Pickling a
    numpy array costs ~10 us whatever its size, so one per chunk instead of one per crop."""

    outcomes: list[Outcome]
    crops: np.ndarray | None  # the Ready outcomes' crops in order, or None if they travel in their Ready
    image_s: float
    parse_s: float

    def unpacked(self) -> list[Outcome]:
        if self.crops is not None:
            for ready, crop in zip((o for o in self.outcomes if isinstance(o, Ready)), self.crops, strict=True):
                ready.crop = crop
        return self.outcomes


def prepare_packed(cfg: PrepareConfig, values: Sequence[bytes],
                   fetched: Sequence[bytes | None] | None = None) -> PackedChunk:
    """prepare_chunk, its crops stacked for the trip back (what the pool runs)."""
    outcomes, image_s, parse_s = prepare_chunk(cfg, values, fetched)
    ready = [o for o in outcomes if isinstance(o, Ready)]
    if not ready or len({(o.crop.shape, o.crop.dtype) for o in ready}) != 1:
        return PackedChunk(outcomes, None, image_s, parse_s)
    crops = np.stack([o.crop for o in ready])
    for o in ready:
        o.crop = _NO_CROP  # one shared object: pickled once
    return PackedChunk(outcomes, crops, image_s, parse_s)


def _init_decoder(parent: int) -> None:
    """Pool initializer. A decoder must not outlive a worker that was SIGKILLed, and it runs at a lower
    priority: it only has to stay ahead of the model and the event loop, which are the bottlenecks."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pool's broken-pipe handling remains
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(DECODER_NICENESS)


def process_pool(workers: int) -> ProcessPoolExecutor:
    # spawn: a fork of the worker would copy a process holding torch's threads and their locks.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_decoder,
                               initargs=(os.getpid(),))


class Preparer:
    """Runs prepare_chunk over a batch on `pool`, a few chunks at a time; survives a crashing child."""

    def __init__(self, cfg: PrepareConfig, pool: Executor, workers: int) -> None:
        self.cfg = cfg
        self.pool = pool
        self.workers = workers
        self.image_s = self.parse_s = 0.0

    def _renew(self) -> None:
        log.error("a decode process died; starting a new pool")
        old = self.pool
        # A survivor can wait forever on a queue lock its killed sibling held, and the broken pool's
        # manager thread would then block interpreter exit joining it: kill them all (seen in tests).
        survivors = list(getattr(old, "_processes", None) or {})
        old.shutdown(wait=False, cancel_futures=True)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pool = process_pool(self.workers)

    async def run(self, values: Sequence[bytes], fetched: Sequence[bytes | None] | None = None) -> list[Outcome]:
        too_big = {i for i, v in enumerate(values) if len(v) > self.cfg.max_event_bytes}
        if too_big:  # refused before paying to copy it to another process
            out = await self.run([b"" if i in too_big else v for i, v in enumerate(values)], fetched)
            for i in too_big:
                out[i] = Failed(DetectionError("event_too_large", f"event has {len(values[i])} bytes, limit "
                                               f"{self.cfg.max_event_bytes}", "decode"), None)
            return out
        loop = asyncio.get_running_loop()
        n = max(1, min(self.workers, len(values)))
        try:
            chunks = await asyncio.gather(*(loop.run_in_executor(
                self.pool, prepare_packed, self.cfg, values[i::n], fetched[i::n] if fetched else None)
                for i in range(n)))
        except BrokenProcessPool:
            self._renew()
            return await self._isolate(values, fetched)
        out: list[Outcome] = [Failed(DetectionError("internal_error", "not prepared", "load_image"), None)] * len(
            values)
        for i, chunk in enumerate(chunks):
            out[i::n] = chunk.unpacked()
            self.image_s += chunk.image_s
            self.parse_s += chunk.parse_s
        return out

    async def _isolate(self, values: Sequence[bytes], fetched: Sequence[bytes | None] | None) -> list[Outcome]:
        """One event per call, so an event that kills its decoder is the only one dead-lettered."""
        loop = asyncio.get_running_loop()
        out: list[Outcome] = []
        for i, value in enumerate(values):
            try:
                got, _, _ = await loop.run_in_executor(self.pool, prepare_chunk, self.cfg, [value],
                                                       [fetched[i]] if fetched else None)
                out.extend(got)
            except BrokenProcessPool:
                self._renew()
                out.append(Failed(DetectionError("image_decode_crashed", "the image decoder crashed on this event",
                                                 "load_image"), None))
        return out
