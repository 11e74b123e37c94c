"""Loads an open_clip model and turns a batch of crops into unit vectors; callers run it off the event loop."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from reid_stream.config import Settings

log = logging.getLogger(__name__)
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"


class EncoderLoadError(RuntimeError):
    """The weights could not be loaded; the message says how to provide them."""


class Encoder(Protocol):
    model_id: str
    dim: int
    input_size: int
    device: str

    def preprocess(self, crop: Image.Image) -> np.ndarray: ...

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 crops -> N x dim float32, each row of unit length. Blocking."""
        ...


def crop_array(crop: Image.Image) -> np.ndarray:
    """A letterboxed crop as the encoders take it: S x S x 3 uint8 (normalised inside encode, per batch)."""
    return np.asarray(crop.convert("RGB") if crop.mode != "RGB" else crop, dtype=np.uint8)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderLoadError(f"REID_DEVICE={requested} but torch sees no CUDA device; use REID_DEVICE=cpu or auto")
    return requested


def _how_to_provide(settings: Settings) -> str:
    return (
        f"could not load weights {settings.clip_pretrained!r} for {settings.clip_model!r}. Provide them by one of: "
        "(1) REID_CLIP_PRETRAINED=openai with network access to the model hub, or with the hub cache already "
        "filled (HF_HUB_OFFLINE=1 forbids downloads); (2) REID_CLIP_PRETRAINED=/path/to/checkpoint.pt, a local "
        "open_clip checkpoint; (3) REID_CLIP_PRETRAINED=none for random weights (tests and offline demos only)."
    )


class ClipEncoder:
    """An open_clip image tower; CUDA with fp16 when present, CPU float32 otherwise."""

    def __init__(self, model: object, model_id: str, device: str, size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], dim: int) -> None:
        self.model = model
        self.model_id = model_id
        self.device = device
        self.input_size = size
        self.dim = dim
        self._mean = tuple(float(m) * 255 for m in mean)  # applied to 0..255 pixels
        self._std = tuple(float(x) * 255 for x in std)

    @classmethod
    def from_config(cls, settings: Settings) -> ClipEncoder:
        import open_clip
        import torch

        open_clip.add_model_config(MODEL_CONFIGS)
        device = resolve_device(settings.device)
        if device == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        weights = settings.clip_pretrained
        random_weights = weights.lower() == "none"
        if settings.clip_model not in open_clip.list_models():
            raise EncoderLoadError(f"REID_CLIP_MODEL={settings.clip_model!r} is not an open_clip model; "
                                   f"see open_clip.list_models()")
        if not random_weights and (os.sep in weights or weights.endswith((".pt", ".bin", ".safetensors"))) \
                and not Path(weights).is_file():
            raise EncoderLoadError(f"checkpoint {weights} does not exist. " + _how_to_provide(settings))
        if random_weights:
            log.warning("!!! REID_CLIP_PRETRAINED=none: the encoder has RANDOM weights (seed %d). Matches are "
                        "meaningless for real footage; use this for tests and offline demos only !!!", settings.seed)
            torch.manual_seed(settings.seed)  # the same random model after every restart
        try:
            model = open_clip.create_model(
                settings.clip_model,
                pretrained=None if random_weights else weights,
                precision="fp16" if device.startswith("cuda") else "fp32",
                device=device,
                require_pretrained=not random_weights,
            )
        except Exception as exc:  # open_clip raises many types (RuntimeError, hub errors, OSError)
            raise EncoderLoadError(f"{_how_to_provide(settings)} Cause: {exc!r}") from exc
        model.eval()
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg["size"]
        size = size[0] if isinstance(size, (tuple, list)) else size
        dim = int(model.visual.output_dim)
        log.info("encoder %s on %s: %dx%d input, %d-d output", settings.model_id, device, size, size, dim)
        return cls(model, settings.model_id, device, int(size), tuple(cfg["mean"]), tuple(cfg["std"]), dim)

    def preprocess(self, crop: Image.Image) -> np.ndarray:
        return crop_array(crop)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(np.require(batch, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))
        with torch.inference_mode():
            if self.device.startswith("cuda"):
                # Pinned host memory lets the copy overlap with the previous batch's compute; uint8 moves 4x less.
                tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
            mean = torch.tensor(self._mean, dtype=dtype, device=tensor.device)
            std = torch.tensor(self._std, dtype=dtype, device=tensor.device)
            pixels = ((tensor.to(dtype) - mean) / std).permute(0, 3, 1, 2).contiguous()
            features = self.model.encode_image(pixels)
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


class NullEncoder:
    """No model: a pseudo-random unit vector chosen by a hash of the crop's pixels (same crop, same vector).

    The vector sums ROWS_PICKED rows of a fixed Gaussian table, picked by the hash, so a whole batch is
    one gather: the benchmark that uses it measures the pipeline, not the stand-in. Distinct crops give
    near-orthogonal vectors. Only for benchmarks and tests that measure the pipeline around the encoder.
    """

    TABLE_ROWS = 4096
    ROWS_PICKED = 4

    def __init__(self, dim: int = 768, size: int = 32) -> None:
        self.model_id = "null"
        self.dim = dim
        self.input_size = size
        self.device = "none"
        self._table = np.random.default_rng(0).standard_normal((self.TABLE_ROWS, dim), dtype=np.float32)

    @classmethod
    def from_config(cls, settings: Settings) -> NullEncoder:
        log.warning("!!! REID_ENCODER=null: no model runs; embeddings are hash-seeded random vectors. "
                    "For benchmarks and tests only !!!")
        return cls()

    def preprocess(self, crop: Image.Image) -> np.ndarray:
        return crop_array(crop)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        digests = b"".join(hashlib.blake2b(np.ascontiguousarray(item).tobytes(), digest_size=2 * self.ROWS_PICKED)
                           .digest() for item in batch)
        rows = np.frombuffer(digests, dtype="<u2").reshape(len(batch), self.ROWS_PICKED) % self.TABLE_ROWS
        return l2_normalize(self._table[rows].sum(axis=1))


def load_encoder(settings: Settings) -> Encoder:
    if settings.encoder == "null":
        return NullEncoder.from_config(settings)
    return ClipEncoder.from_config(settings)
