"""What every encoder is: the interface, its errors, and the small helpers the backends share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


class EncoderLoadError(RuntimeError):
    """The weights could not be loaded; the message says how to provide them."""


class Encoder(Protocol):
    model_id: str  # names the vector space: vectors of different ids are never compared
    dim: int
    input_size: int  # the side of the square letterboxed crop the pipeline cuts for it
    device: str

    def preprocess(self, crop: Image.Image) -> np.ndarray: ...

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 crops -> N x dim float32, each row of unit length. Blocking."""
        ...

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        """N texts -> N x dim unit rows in the image vectors' space, or None: the model has no text tower."""
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


def use_all_cpu_threads(device: str) -> None:
    import os

    import torch

    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))


class PixelNormalizer:
    """uint8 N x H x W x 3 crops -> normalised N x 3 x H x W tensors on the model's device.

    Crops travel as uint8 (4x fewer bytes to the GPU, through pinned memory there) and are normalised on
    the device, per batch; mean and std are given for 0..1 pixels, as model cards state them.
    """

    def __init__(self, device: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.device = device
        self.mean = tuple(float(m) * 255 for m in mean)
        self.std = tuple(float(s) * 255 for s in std)

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return torch.float16 if self.device.startswith("cuda") else torch.float32

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        import torch

        tensor = torch.from_numpy(np.require(batch, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))
        if self.device.startswith("cuda"):
            # Pinned host memory lets the copy overlap with the previous batch's compute.
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        mean = torch.tensor(self.mean, dtype=self.dtype, device=tensor.device)
        std = torch.tensor(self.std, dtype=self.dtype, device=tensor.device)
        return ((tensor.to(self.dtype) - mean) / std).permute(0, 3, 1, 2).contiguous()


class TorchEncoder:
    """A torch image network: uint8 crops normalised on its device, its features L2-normalised.

    Subclasses say only how the network turns pixels into one feature vector per crop (`features`).
    """

    def __init__(self, model_id: str, device: str, size: int, dim: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        self.model_id = model_id
        self.device = device
        self.input_size = size
        self.dim = dim
        self._pixels = PixelNormalizer(device, mean, std)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preprocess(self, crop: Image.Image) -> np.ndarray:
        return crop_array(crop)

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        return None  # an image network; ClipEncoder overrides this

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = torch.nn.functional.normalize(self.features(self._pixels(batch)).float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)
