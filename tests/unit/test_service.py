from pathlib import Path

import numpy as np
import pytest

from reid_stream.errors import DetectionError
from reid_stream.service import ReIdentificationService
from tests.conftest import encode_png, make_settings, pattern_image


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("roots")
    svc = ReIdentificationService(make_settings("svc", image_roots=(root,)))
    yield svc, root
    svc.close()


async def test_generate_embedding_whole_image_and_roi(service):
    svc, root = service
    img = pattern_image(1, size=(100, 100))
    (root / "a.png").write_bytes(encode_png(img))
    img.crop((10, 10, 60, 90)).save(root / "crop.png")
    whole = await svc.generate_embedding("a.png")
    roi = await svc.generate_embedding(str(root / "a.png"), roi=(10, 10, 60, 90))
    same = await svc.generate_embedding("crop.png")
    assert whole.shape == (svc.encoder.dim,) and abs(float(np.linalg.norm(whole)) - 1) < 1e-5
    assert np.allclose(roi, same, atol=1e-5)  # roi crops exactly that box
    assert not np.allclose(roi, whole, atol=1e-4)
    assert np.allclose(await svc.generate_embedding("a.png", roi={"x1": 10, "y1": 10, "x2": 60, "y2": 90}), roi)


async def test_generate_embedding_respects_the_roots(service, tmp_path: Path):
    svc, _ = service
    outside = tmp_path / "x.png"
    outside.write_bytes(encode_png(pattern_image(2)))
    with pytest.raises(DetectionError) as err:
        await svc.generate_embedding(str(outside))
    assert err.value.code == "path_not_allowed"


async def test_generate_embedding_takes_a_pathlib_path(service):
    svc, root = service
    (root / "p.png").write_bytes(encode_png(pattern_image(3)))
    by_path = await svc.generate_embedding(root / "p.png", roi=(0, 0, 20, 30))
    by_str = await svc.generate_embedding(str(root / "p.png"), roi=(0, 0, 20, 30))
    assert np.array_equal(by_path, by_str)
    with pytest.raises(DetectionError) as err:
        await svc.generate_embedding(root / ".." / "escape.png")
    assert err.value.code == "path_not_allowed"


def test_get_reid_service_is_one_process_wide_instance_built_from_the_environment(monkeypatch):
    from reid_stream.service import get_reid_service

    get_reid_service.cache_clear()
    monkeypatch.setenv("REID_ENCODER", "null")
    monkeypatch.setenv("REID_SIMILARITY_THRESHOLD", "0.7")
    try:
        first = get_reid_service()
        assert first is get_reid_service()
        assert first.settings.similarity_threshold == 0.7 and first.encoder.model_id == "null"
    finally:
        get_reid_service.cache_clear()
