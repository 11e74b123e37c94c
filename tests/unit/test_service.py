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
