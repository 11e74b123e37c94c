"""The encoder on a tiny open_clip architecture (random weights, seeded) and a checkpoint the test writes."""

from pathlib import Path

import numpy as np
import pytest

from reid_stream.encoders import EncoderLoadError, load_encoder
from reid_stream.encoders.null import NullEncoder
from reid_stream.vision.images import crop_letterbox
from tests.conftest import TINY_MODEL, make_settings, pattern_image


def batch_for(encoder, seeds):
    from reid_stream.events import BBox

    crops = []
    for s in seeds:
        img = pattern_image(s)
        crops.append(encoder.preprocess(crop_letterbox(img, BBox(x1=0, y1=0, x2=img.width, y2=img.height),
                                                       encoder.input_size, (0, 0, 0))))
    return np.stack(crops)


@pytest.fixture(scope="module")
def tiny():
    return load_encoder(make_settings("enc"))


def test_vectors_are_unit_length_and_deterministic(tiny):
    batch = batch_for(tiny, [1, 2, 3])
    out = tiny.encode(batch)
    assert out.shape == (3, tiny.dim) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(tiny.encode(batch[:1]), out[:1], atol=1e-5)  # batching does not change a vector


def test_random_weights_are_seeded_so_restarts_agree(tiny):
    again = load_encoder(make_settings("enc"))
    batch = batch_for(tiny, [4])
    assert np.allclose(again.encode(batch), tiny.encode(batch), atol=1e-6)


def test_checkpoint_path_loads_the_written_weights(tmp_path: Path, tiny):
    import torch

    other = load_encoder(make_settings("enc", seed=123))  # different weights than `tiny`
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": other.model.state_dict()}, ckpt)
    loaded = load_encoder(make_settings("enc", clip_pretrained=str(ckpt)))
    batch = batch_for(tiny, [5, 6])
    assert np.allclose(loaded.encode(batch), other.encode(batch), atol=1e-5)
    assert not np.allclose(loaded.encode(batch), tiny.encode(batch), atol=1e-3)
    assert loaded.model_id == f"{TINY_MODEL}.ckpt-tiny"


def test_missing_checkpoint_says_how_to_provide_weights(tmp_path: Path):
    with pytest.raises(EncoderLoadError) as err:
        load_encoder(make_settings("enc", clip_pretrained=str(tmp_path / "absent.pt")))
    assert "REID_CLIP_PRETRAINED" in str(err.value)


def test_hub_weights_fail_fast_offline():
    # HF_HUB_OFFLINE=1 (set in conftest): the 'openai' tag cannot be fetched and must fail with guidance.
    import time

    t0 = time.monotonic()
    with pytest.raises(EncoderLoadError) as err:
        load_encoder(make_settings("enc", clip_model="ViT-B-32", clip_pretrained="openai"))
    assert "REID_CLIP_PRETRAINED" in str(err.value)
    assert time.monotonic() - t0 < 30


def test_unknown_model_name():
    with pytest.raises(EncoderLoadError):
        load_encoder(make_settings("enc", clip_model="ViT-Nope"))


def test_null_encoder_is_deterministic_per_crop():
    enc = NullEncoder(dim=16)
    a = np.zeros((2, 3, 4, 4), np.float32)
    a[1] += 1
    out = enc.encode(a)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert np.allclose(enc.encode(a[:1]), out[:1]) and not np.allclose(out[0], out[1])


def test_null_encoder_keeps_distinct_crops_apart():
    enc = NullEncoder(dim=768)
    crops = np.random.default_rng(1).integers(0, 256, (300, 3, 8, 8), dtype=np.uint8)
    out = enc.encode(crops)
    sims = out @ out.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.9  # no two different crops could ever match at a realistic threshold
    assert np.allclose(enc.encode(crops.copy()), out)  # content decides, not identity
