import base64
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_stream.errors import DetectionError
from reid_stream.events import BBox
from reid_stream.vision.images import (
    clamp_bbox,
    crop_letterbox,
    decode_image,
    letterbox_geometry,
    read_b64,
    read_path,
    resolve_image_path,
)
from tests.conftest import encode_jpeg, encode_png, pattern_image


def box(x1: float, y1: float, x2: float, y2: float) -> BBox:
    return BBox(x1=x1, y1=y1, x2=x2, y2=y2)


def test_clamp_keeps_an_inside_box_and_rounds_outwards():
    assert clamp_bbox(box(10.4, 20.6, 30.2, 40.9), 100, 100) == (10, 20, 31, 41)


def test_clamp_clips_a_box_that_overhangs_the_border():
    assert clamp_bbox(box(90, 80, 150, 200), 100, 100) == (90, 80, 100, 100)


def test_a_box_entirely_outside_the_image_is_refused():
    with pytest.raises(DetectionError) as err:
        clamp_bbox(box(200, 200, 300, 300), 100, 100)
    assert err.value.code == "bbox_outside_image"


@pytest.mark.parametrize(("w", "h", "expected"), [
    (50, 100, (112, 224, 56, 0)),   # tall: full height, padded left and right
    (100, 50, (224, 112, 0, 56)),   # wide: full width, padded top and bottom
    (224, 224, (224, 224, 0, 0)),   # square: no padding
    (1, 1000, (1, 224, 111, 0)),    # a sliver never collapses to zero width
])
def test_letterbox_geometry_fits_the_long_side_and_centres(w, h, expected):
    geo = letterbox_geometry(w, h, 224)
    assert (geo.new_w, geo.new_h, geo.left, geo.top) == expected


def test_letterbox_pads_instead_of_cropping_a_tall_person():
    # A tall crop whose head (top rows) and feet (bottom rows) are red must keep both after letterboxing.
    img = Image.new("RGB", (40, 160), (0, 255, 0))
    for y in list(range(0, 10)) + list(range(150, 160)):
        for x in range(40):
            img.putpixel((x, y), (255, 0, 0))
    out = crop_letterbox(img, box(0, 0, 40, 160), 64, (0, 0, 0))
    assert out.size == (64, 64)
    assert out.getpixel((32, 1))[0] > 200  # the head is still there
    assert out.getpixel((32, 62))[0] > 200  # and the feet
    assert out.getpixel((2, 32)) == (0, 0, 0)  # the sides are padding


def test_path_inside_root_resolves(image_root: Path):
    (image_root / "a.png").write_bytes(encode_png(pattern_image(1)))
    assert resolve_image_path(str(image_root / "a.png"), (image_root,)) == (image_root / "a.png").resolve()
    assert resolve_image_path("a.png", (image_root,)) == (image_root / "a.png").resolve()


@pytest.mark.parametrize("raw", ["../outside.png", "/etc/passwd", "sub/../../outside.png"])
def test_paths_escaping_the_roots_are_refused(image_root: Path, raw: str):
    (image_root.parent / "outside.png").write_bytes(encode_png(pattern_image(1)))
    with pytest.raises(DetectionError) as err:
        resolve_image_path(raw, (image_root,))
    assert err.value.code == "path_not_allowed"


def test_a_symlink_escaping_the_root_is_refused(image_root: Path):
    target = image_root.parent / "secret.png"
    target.write_bytes(encode_png(pattern_image(1)))
    os.symlink(target, image_root / "link.png")
    with pytest.raises(DetectionError) as err:
        read_path(str(image_root / "link.png"), (image_root,), 10**6)
    assert err.value.code == "path_not_allowed"


def test_no_roots_means_no_paths(image_root: Path):
    with pytest.raises(DetectionError) as err:
        resolve_image_path(str(image_root / "a.png"), ())
    assert err.value.code == "path_not_allowed"


def test_missing_file_and_oversized_file(image_root: Path):
    with pytest.raises(DetectionError) as err:
        read_path(str(image_root / "nope.png"), (image_root,), 10**6)
    assert err.value.code == "image_not_found"
    (image_root / "big.png").write_bytes(b"x" * 2000)
    with pytest.raises(DetectionError) as err:
        read_path(str(image_root / "big.png"), (image_root,), 1000)
    assert err.value.code == "image_too_large"


def test_b64_errors():
    with pytest.raises(DetectionError) as err:
        read_b64("not base64 !!", 10**6)
    assert err.value.code == "invalid_base64"
    with pytest.raises(DetectionError) as err:
        read_b64("A" * 5000, 1000)  # refused before decoding anything
    assert err.value.code == "image_too_large"
    assert read_b64(base64.b64encode(b"abc").decode(), 1000) == b"abc"


def test_decode_accepts_png_and_jpeg():
    assert decode_image(encode_png(pattern_image(3)), 10**6).size == (48, 96)
    assert decode_image(encode_jpeg(pattern_image(3)), 10**6).size == (48, 96)


def test_decode_refuses_garbage_truncation_bombs_and_other_formats():
    cases = {
        b"hello, not an image": "image_decode_failed",
        encode_jpeg(pattern_image(3))[:300]: "image_decode_failed",
    }
    for data, code in cases.items():
        with pytest.raises(DetectionError) as err:
            decode_image(data, 10**6)
        assert err.value.code == code
    bomb = encode_png(Image.new("RGB", (4000, 4000)))  # tiny file, 16 Mpx decoded
    with pytest.raises(DetectionError) as err:
        decode_image(bomb, 1_000_000)
    assert err.value.code == "image_too_large"
    import io

    gif = io.BytesIO()
    pattern_image(1).save(gif, format="GIF")
    with pytest.raises(DetectionError) as err:
        decode_image(gif.getvalue(), 10**6)
    assert err.value.code == "unsupported_image_format"


def test_large_jpeg_is_decoded_reduced_for_a_small_target_and_crops_the_same_box():
    import numpy as np

    big = pattern_image(5, size=(800, 600))
    data = encode_jpeg(big, quality=95)
    bbox = box(100, 80, 500, 560)  # 400x480: an 8x DCT reduction would leave 60 < 64, so 4x
    full = decode_image(data, 10**7)
    reduced = decode_image(data, 10**7, (bbox, 64))
    assert reduced.size == (200, 150) and reduced.info["full_size"] == (800, 600)
    a = np.asarray(crop_letterbox(full, bbox, 64, (0, 0, 0)), np.float32)
    b = np.asarray(crop_letterbox(reduced, bbox, 64, (0, 0, 0)), np.float32)
    assert np.abs(a - b).mean() < 12  # the same region, rendered from fewer samples
    assert decode_image(data, 10**7, (box(0, 0, 60, 60), 224)).size == (800, 600)  # small box: full decode
    assert decode_image(encode_png(big), 10**7, (bbox, 64)).size == (800, 600)  # PNG has no DCT scaling


def test_decode_crop_fast_path_matches_the_pil_path_and_falls_back_for_the_rest():
    import io

    import numpy as np

    from reid_stream.vision.images import decode_crop

    big = pattern_image(7, size=(640, 480))
    bbox = box(100, 50, 420, 450)
    for data in (encode_jpeg(big, quality=92), encode_png(big)):
        fast = decode_crop(data, bbox, 64, 10**7)
        slow = np.asarray(crop_letterbox(decode_image(data, 10**7, (bbox, 64)), bbox, 64, (0, 0, 0)))
        assert fast.shape == (64, 64, 3) and fast.dtype == np.uint8
        assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 2
    cmyk = io.BytesIO()
    big.convert("CMYK").save(cmyk, format="JPEG")  # libjpeg-turbo cannot give RGB from CMYK: PIL can
    assert decode_crop(cmyk.getvalue(), bbox, 64, 10**7).shape == (64, 64, 3)
    truncated = encode_jpeg(big)[:600]
    with pytest.raises(DetectionError) as err:
        decode_crop(truncated, bbox, 64, 10**7)
    assert err.value.code == "image_decode_failed"
    with pytest.raises(DetectionError) as err:
        decode_crop(encode_jpeg(big), bbox, 64, 1000)
    assert err.value.code == "image_too_large"
    with pytest.raises(DetectionError) as err:
        decode_crop(encode_jpeg(big), box(700, 700, 800, 800), 64, 10**7)
    assert err.value.code == "bbox_outside_image"


def test_thumbnail_is_the_box_as_a_jpeg_no_larger_than_the_max_side():
    import io

    from PIL import Image

    from reid_stream.vision.images import thumbnail_jpeg

    frame = Image.new("RGB", (1200, 900), (10, 10, 10))
    frame.paste(Image.new("RGB", (300, 600), (200, 40, 40)), (100, 200))
    for fmt in ("PNG", "JPEG"):  # a JPEG this large decodes DCT-reduced; the box must still be exact
        buf = io.BytesIO()
        frame.save(buf, fmt, quality=95)
        big = Image.open(io.BytesIO(thumbnail_jpeg(buf.getvalue(), BBox(x1=100, y1=200, x2=400, y2=800), 256,
                                                   10**8)))
        assert big.format == "JPEG" and big.size == (128, 256)
        px = np.asarray(big, np.int16)
        assert np.abs(px[8:-8, 8:-8] - [200, 40, 40]).max() < 12  # only the box's pixels
    small = Image.open(io.BytesIO(thumbnail_jpeg(buf.getvalue(), BBox(x1=100, y1=200, x2=140, y2=260), 256, 10**8)))
    assert small.size == (40, 60)  # never enlarged
    with pytest.raises(DetectionError) as err:
        thumbnail_jpeg(buf.getvalue(), BBox(x1=2000, y1=0, x2=2100, y2=10), 256, 10**8)
    assert err.value.code == "bbox_outside_image"


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PCX", "BMP", "WEBP"])
def test_other_formats_are_refused_before_pillow_parses_them(fmt: str, monkeypatch: pytest.MonkeyPatch):
    import io

    from reid_stream.vision.images import ALLOWED_FORMATS, decode_crop

    assert fmt not in ALLOWED_FORMATS
    Image.init()
    parser = Image.OPEN[fmt][0]  # the plugin's ImageFile class: its _open reads the header
    parsed: list[str] = []
    real_open = parser._open

    def spy(self: Image.Image) -> None:
        parsed.append(fmt)
        real_open(self)

    monkeypatch.setattr(parser, "_open", spy)
    buf = io.BytesIO()
    pattern_image(1).save(buf, format=fmt)  # a valid image Pillow could read
    for decode in (lambda d: decode_image(d, 10**6), lambda d: decode_crop(d, box(0, 0, 20, 20), 32, 10**6)):
        with pytest.raises(DetectionError) as err:
            decode(buf.getvalue())
        assert err.value.code == "unsupported_image_format" and fmt in err.value.message
    assert parsed == [], f"Pillow's {fmt} parser read untrusted bytes"
