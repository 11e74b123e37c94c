"""A ReID model the user brings, exported to ONNX (OSNet and similar), run by onnxruntime.

ReID models take tall crops (typically 256 x 128). The pipeline cuts square letterboxed crops of side H
with the person centred; a person at least H/W times taller than wide lies inside the centre W columns, so
the encoder keeps exactly those (wider boxes lose their sides, which a tall-input model would lose anyway).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from reid_stream.config import Settings, parse_hw
from reid_stream.encoders.base import EncoderLoadError, crop_array, l2_normalize

log = logging.getLogger(__name__)


class OnnxEncoder:
    def __init__(self, session: object, model_id: str, height: int, width: int, mean: tuple[float, ...],
                 std: tuple[float, ...], layout: str, pixel_range: float, device: str) -> None:
        self.session = session
        self.model_id = model_id
        self.input_size = height
        self.width = width
        self.device = device
        self.layout = layout
        self._scale = np.float32(pixel_range / 255.0)
        self._mean = np.asarray(mean, np.float32) * np.float32(pixel_range)
        self._std = np.asarray(std, np.float32) * np.float32(pixel_range)
        self._input = session.get_inputs()[0].name  # type: ignore[attr-defined]
        probe = self.encode(np.zeros((1, height, height, 3), np.uint8), normalise=False)
        self.dim = int(probe.shape[1])

    @classmethod
    def from_config(cls, settings: Settings) -> OnnxEncoder:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EncoderLoadError("REID_ENCODER=onnx needs onnxruntime; `make install` installs it") from exc
        path = Path(settings.onnx_model)
        if not settings.onnx_model or not path.is_file():
            raise EncoderLoadError(f"REID_ENCODER=onnx needs REID_ONNX_MODEL, the path of an .onnx file "
                                   f"(got {settings.onnx_model!r})")
        providers = ["CPUExecutionProvider"]
        if settings.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise EncoderLoadError(f"cannot load ONNX model {path}: {exc}") from exc
        height, width = parse_hw(settings.onnx_input)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        enc = cls(session, f"onnx.{path.stem}-{digest}", height, width, settings.onnx_mean, settings.onnx_std,
                  settings.onnx_layout, settings.onnx_pixel_range, device)
        log.info("encoder %s on %s: %dx%d input (%s), %d-d output", enc.model_id, device, height, width,
                 settings.onnx_layout, enc.dim)
        return enc

    def preprocess(self, crop: Image.Image) -> np.ndarray:
        return crop_array(crop)

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        return None  # no text tower

    def encode(self, batch: np.ndarray, normalise: bool = True) -> np.ndarray:
        size = batch.shape[2]
        left = max(0, (size - self.width) // 2)
        pixels = batch[:, :, left:left + self.width].astype(np.float32) * self._scale
        pixels = (pixels - self._mean) / self._std
        if self.layout == "NCHW":
            pixels = pixels.transpose(0, 3, 1, 2)
        out = self.session.run(None, {self._input: np.ascontiguousarray(pixels)})[0]  # type: ignore[attr-defined]
        out = np.asarray(out, np.float32).reshape(len(batch), -1)
        return l2_normalize(out) if normalise else out
