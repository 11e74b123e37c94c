"""Stage 1's per-event work in the decode pool: outcomes, and surviving a decoder process that dies."""

import base64
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from reid_stream.events import Detection
from reid_stream.stream.prepare import (
    Failed,
    NeedsFetch,
    PrepareConfig,
    Preparer,
    Ready,
    fingerprint,
    prepare_chunk,
    process_pool,
)
from reid_stream.vision.images import ImageLimits
from tests.conftest import encode_jpeg, pattern_image

CFG = PrepareConfig(ImageLimits((Path("/nonexistent-root"),), ("cams.example",), 1 << 20, 10**7, 2.0), 32,
                    2 << 20, 3600)


def event(i: int, **extra: object) -> bytes:
    det = {"detection_id": f"d{i}", "camera_id": "cam", "entity_type": "person",
           "timestamp": datetime.now(UTC).isoformat(), "bbox": {"x1": 0, "y1": 0, "x2": 48, "y2": 96},
           "image_b64": base64.b64encode(encode_jpeg(pattern_image(i))).decode()}
    det.update(extra)
    return json.dumps({k: v for k, v in det.items() if v is not None}).encode()


def test_outcomes_in_order_with_the_reason_for_each_failure():
    values = [event(1), b"{", event(2, image_b64=None, image_url="http://cams.example/a.jpg"),
              event(3, image_b64=None, image_url="http://evil.example/a.jpg"), event(4, bbox={"x1": 500, "y1": 500,
                                                                                              "x2": 600, "y2": 600})]
    out, image_s, parse_s = prepare_chunk(CFG, values)
    assert isinstance(out[0], Ready) and out[0].crop.shape == (32, 32, 3) and out[0].crop.dtype == np.uint8
    det = Detection.model_validate_json(values[0])
    assert out[0].fingerprint == fingerprint(det) and "image_b64" not in out[0].header
    assert isinstance(out[1], Failed) and out[1].error.code == "invalid_json"
    assert isinstance(out[2], NeedsFetch) and out[2].url == "http://cams.example/a.jpg"
    assert isinstance(out[3], Failed) and out[3].error.code == "url_not_allowed" and out[3].detection_id == "d3"
    assert isinstance(out[4], Failed) and out[4].error.code == "bbox_outside_image"
    assert image_s > 0 and parse_s > 0


async def test_process_pool_gives_what_threads_give_and_refuses_huge_events_locally():
    values = [event(i) for i in range(12)] + [b"x" * (CFG.max_event_bytes + 1)]
    with ThreadPoolExecutor(2) as threads:
        local = await Preparer(CFG, threads, 2).run(values)
    procs = process_pool(2)
    try:
        remote = await Preparer(CFG, procs, 2).run(values)
    finally:
        procs.shutdown()
    assert [type(o) for o in remote] == [type(o) for o in local] == [Ready] * 12 + [Failed]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(local[:12], remote[:12], strict=True))
    assert isinstance(remote[12], Failed) and remote[12].error.code == "event_too_large"


async def test_a_dead_decoder_process_costs_no_event():
    pool = process_pool(2)
    preparer = Preparer(CFG, pool, 2)
    try:
        await preparer.run([event(0)])  # the children exist now
        for pid in list(pool._processes):  # the test plays the crashing decoder
            os.kill(pid, signal.SIGKILL)
        out = await preparer.run([event(i) for i in range(6)])
        assert [type(o) for o in out] == [Ready] * 6
        assert preparer.pool is not pool  # a fresh pool took over
    finally:
        preparer.pool.shutdown()


@pytest.mark.parametrize("code", ["invalid_json"])
def test_detection_error_survives_pickling(code):
    import pickle

    from reid_stream.errors import DetectionError

    err = pickle.loads(pickle.dumps(DetectionError(code, "m", "decode", [{"field": "x"}])))
    assert (err.code, err.message, err.stage, err.details) == (code, "m", "decode", [{"field": "x"}])
