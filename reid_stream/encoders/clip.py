"""The open_clip encoder: any open_clip model, with a pretrained tag, a local checkpoint or random weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reid_stream.config import Settings
from reid_stream.encoders.base import EncoderLoadError, TorchEncoder, resolve_device, use_all_cpu_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"


def _how_to_provide(settings: Settings) -> str:
    return (
        f"could not load weights {settings.clip_pretrained!r} for {settings.clip_model!r}. Provide them by one of: "
        "(1) REID_CLIP_PRETRAINED=openai with network access to the model hub, or with the hub cache already "
        "filled (HF_HUB_OFFLINE=1 forbids downloads); (2) REID_CLIP_PRETRAINED=/path/to/checkpoint.pt, a local "
        "open_clip checkpoint; (3) REID_CLIP_PRETRAINED=none for random weights (tests and offline demos only)."
    )


class ClipEncoder(TorchEncoder):
    """An open_clip image tower; CUDA with fp16 when present, CPU float32 otherwise."""

    def __init__(self, model: object, model_id: str, device: str, size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], dim: int,
                 tokenizer: Callable[[list[str]], torch.Tensor] | None = None) -> None:
        super().__init__(model_id, device, size, dim, mean, std)
        self.model = model
        self.tokenizer = tokenizer  # None: no usable text tower (see text_tower)

    @classmethod
    def from_config(cls, settings: Settings) -> ClipEncoder:
        import open_clip
        import torch

        open_clip.add_model_config(MODEL_CONFIGS)
        device = resolve_device(settings.device)
        use_all_cpu_threads(device)
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
        return cls(model, settings.model_id, device, int(size), tuple(cfg["mean"]), tuple(cfg["std"]), dim,
                   text_tower(model, settings.clip_model))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # type: ignore[attr-defined]

    def encode_text(self, texts: list[str]) -> np.ndarray | None:
        """The text tower's unit vectors (CLIP embeds texts and images in one space). Blocking."""
        if self.tokenizer is None:
            return None
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            features = torch.nn.functional.normalize(
                self.model.encode_text(tokens).float(), dim=-1)  # type: ignore[attr-defined]
        return features.cpu().numpy().astype(np.float32, copy=False)


def text_tower(model: object, name: str) -> Callable[[list[str]], torch.Tensor] | None:
    """The model's tokenizer, if its text tower can read what the tokenizer writes; None otherwise (logged).

    The tokenizer is open_clip's bundled BPE (no download). A tower whose vocabulary is smaller than the
    tokenizer's ids (e.g. the test model reid-tiny-vit, 1000 entries against 49408) would index out of range.
    """
    import open_clip

    if not callable(getattr(model, "encode_text", None)):
        log.info("model %s has no text tower: text search is unavailable", name)
        return None
    try:
        tokenizer = open_clip.get_tokenizer(name)
        highest = int(tokenizer(["a"]).max())  # the end-of-text token has the largest id
        vocab = getattr(model, "vocab_size", None)
    except Exception as exc:  # a hub tokenizer offline, or a model open_clip cannot tokenise for
        log.warning("no tokenizer for %s (%r): text search is unavailable", name, exc)
        return None
    if vocab is not None and highest >= int(vocab):
        log.info("model %s: its text vocabulary (%d) is smaller than its tokenizer's ids (%d): text search is "
                 "unavailable", name, vocab, highest + 1)
        return None
    return tokenizer  # type: ignore[no-any-return]
