import io
import pickle
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageFile

from vzero_trl.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, load_image, to_rgb


def _random_rgb(seed: int = 0, size: tuple[int, int] = (32, 24)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _pixels(image: Image.Image) -> list:
    return np.asarray(image).tolist()


def _png_header_only(width: int, height: int) -> bytes:
    # A valid signature and IHDR declaring width x height (1-bit grey) followed by an empty IDAT: PIL opens it, but
    # decoding it would fail, so `image_too_large` proves that no pixel was decoded.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _reason(value, **kwargs) -> str:
    with pytest.raises(BadImage) as info:
        load_image(value, **kwargs)
    return info.value.reason


# ---------------------------------------------------------------- input kinds


def test_every_input_kind_loads_the_same_rgb_pixels(tmp_path, monkeypatch):
    image = _random_rgb()
    data = _encode(image, "PNG")
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "a.png"
    path.write_bytes(data)
    monkeypatch.chdir(tmp_path)  # a relative path without image_dir resolves against the working directory

    loaded = [
        load_image(image),
        load_image(data),
        load_image(bytearray(data)),
        load_image(str(path)),
        load_image(path),
        load_image("sub/a.png"),
        load_image("a.png", image_dir=tmp_path / "sub"),
        load_image(Path("a.png"), image_dir=str(tmp_path / "sub")),
        load_image(str(path), image_dir="/elsewhere"),  # absolute paths ignore image_dir
        load_image({"bytes": data, "path": None}),
        load_image({"bytes": data, "path": "does/not/exist.png"}),  # bytes win over the path
        load_image({"bytes": None, "path": str(path)}),
        load_image({"bytes": b"", "path": "a.png"}, image_dir=tmp_path / "sub"),
    ]
    for result in loaded:
        assert result.mode == "RGB" and result.size == (32, 24)
        assert _pixels(result) == _pixels(image)


def test_datasets_image_dicts_round_trip(tmp_path):
    image, other = _random_rgb(1), _random_rgb(2)
    path = tmp_path / "on_disk.png"
    image.save(path)
    features = datasets.Features({"image": datasets.Image()})
    dataset = datasets.Dataset.from_dict({"image": [str(path), other]}, features=features)
    rows = dataset.cast_column("image", datasets.Image(decode=False))["image"]

    # A path stays a path; a PIL image is stored as bytes.
    assert rows[0]["bytes"] is None and rows[0]["path"] == str(path)
    assert isinstance(rows[1]["bytes"], bytes)
    assert _pixels(load_image(rows[0])) == _pixels(image)
    assert _pixels(load_image(rows[1])) == _pixels(other)


# ---------------------------------------------------------------- mode conversions


def test_grey_and_bilevel():
    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert _pixels(to_rgb(grey)) == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]
    bilevel = Image.fromarray(np.array([[False, True]]))
    assert bilevel.mode == "1"
    assert _pixels(to_rgb(bilevel)) == [[[0, 0, 0], [255, 255, 255]]]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    # round(v / 257): 257 -> 1, 32896 = 128 * 257 -> 128, 128 -> 0.498 -> 0, 129 -> 0.502 -> 1.
    values = np.array([[0, 257, 65535, 32896, 128, 129]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode in ("I;16", "I")
        assert opened.convert("L").getpixel((1, 0)) == 255  # PIL clips, which is why to_rgb scales itself
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 1, 255, 128, 0, 1]


def test_16_bit_variants_and_32_bit():
    big_endian = Image.frombytes("I;16B", (3, 1), np.array([0, 257, 65535], dtype=">u2").tobytes())
    assert np.asarray(to_rgb(big_endian))[0, :, 0].tolist() == [0, 1, 255]
    as_i = Image.fromarray(np.array([[-3, 257, 65535]], dtype=np.int32))
    assert as_i.mode == "I"
    assert np.asarray(to_rgb(as_i))[0, :, 0].tolist() == [0, 1, 255]
    # Beyond 16 bits, scaled by 255 / max: 50000 * 255 / 200000 = 63.75 -> 64.
    wide = Image.fromarray(np.array([[0, 50000, 200000]], dtype=np.int32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 64, 255]


def test_float():
    unit = Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 64, 255]  # 0.25 * 255 = 63.75
    wide = Image.fromarray(np.array([[-5.0, 100.4, 300.0, np.nan]], dtype=np.float32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 100, 255, 0]


def test_transparency_is_composited_on_white(tmp_path):
    # Over white, a red (255, 0, 0) pixel of alpha a keeps R = 255 and gets G = B = 255 * (255 - a) / 255 = 255 - a.
    rgba = Image.fromarray(
        np.array([[[255, 0, 0, 128], [255, 0, 0, 64], [0, 0, 255, 0], [10, 20, 30, 255]]], np.uint8)
    )
    expected = [[[255, 127, 127], [255, 191, 191], [255, 255, 255], [10, 20, 30]]]
    path = tmp_path / "alpha.png"
    rgba.save(path)
    assert _pixels(load_image(path)) == expected
    # Premultiplied: (128, 0, 0, 128) is the same half-transparent red.
    premultiplied = Image.frombytes("RGBa", (1, 1), bytes([128, 0, 0, 128]))
    assert _pixels(to_rgb(premultiplied)) == [[[255, 127, 127]]]


def test_grey_with_alpha():
    # Black at alpha 128 over white: 255 - 128 = 127.
    la = Image.fromarray(np.array([[[0, 128], [200, 255], [50, 0]]], dtype=np.uint8), "LA")
    assert _pixels(to_rgb(la)) == [[[127, 127, 127], [200, 200, 200], [255, 255, 255]]]


def test_palette_with_transparency_index(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.putdata([0, 1, 2])
    path = tmp_path / "palette.png"
    palette.save(path, transparency=1)  # index 1 (green) is transparent
    with Image.open(path) as opened:
        assert opened.mode == "P" and opened.info["transparency"] == 1
    assert _pixels(load_image(path)) == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]
    # Without transparency the palette is simply looked up.
    assert _pixels(to_rgb(palette)) == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    pa = palette.convert("PA")
    pa.putalpha(Image.fromarray(np.array([[255, 0, 128]], dtype=np.uint8)))
    assert _pixels(to_rgb(pa)) == [[[255, 0, 0], [255, 255, 255], [127, 127, 255]]]


def test_colour_key_transparency_on_rgb(tmp_path):
    image = Image.fromarray(np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8))
    path = tmp_path / "key.png"
    image.save(path, transparency=(1, 2, 3))
    assert _pixels(load_image(path)) == [[[255, 255, 255], [4, 5, 6]]]


def test_cmyk(tmp_path):
    cmyk = Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255]))
    assert _pixels(to_rgb(cmyk)) == [[[255, 255, 255], [0, 255, 255], [0, 0, 0]]]  # white, cyan, black
    noisy = Image.fromarray(np.random.default_rng(3).integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK")
    path = tmp_path / "cmyk.tiff"
    noisy.save(path)
    assert _pixels(load_image(path)) == _pixels(noisy.convert("RGB"))


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB", "RGBX"])
def test_other_colour_spaces_use_pil(mode):
    image = _random_rgb(4).convert(mode)
    assert to_rgb(image).mode == "RGB"
    assert _pixels(to_rgb(image)) == _pixels(image.convert("RGB"))


def test_unsupported_mode():
    with pytest.raises(BadImage) as info:
        to_rgb(Image.new("La", (2, 2)))
    assert info.value.reason == "unsupported_image" and "'La'" in str(info.value)


@pytest.mark.parametrize("orientation,transpose", [(6, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied_as_datasets_applies_it(tmp_path, orientation, transpose):
    # Tag 6 is "rotate 90 degrees clockwise to display", tag 3 "rotate 180 degrees". The image must come out in the
    # frame `datasets.Image` decodes it in, since boxes and crops are measured on it and training reads it from there.
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"
    stored = _random_rgb(size=(40, 20))
    stored.save(path, exif=exif)
    loaded = load_image(path)
    assert _pixels(loaded) == _pixels(stored.transpose(transpose))
    decoded = datasets.Image().decode_example({"path": None, "bytes": path.read_bytes()})
    assert _pixels(loaded) == _pixels(decoded.convert("RGB"))
    assert _pixels(load_image(Image.open(path))) == _pixels(loaded)  # a PIL input is turned upright too
    assert _pixels(load_image(decoded)) == _pixels(loaded)  # and one `datasets` turned upright is not turned again


# ---------------------------------------------------------------- rejects


def test_bad_image_is_a_picklable_value_error():
    error = BadImage("missing_image", "no image")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.reason == "missing_image" and str(copy) == "no image"


@pytest.mark.parametrize(
    "value", [None, b"", bytearray(), "", {"bytes": None, "path": None}, {"bytes": b"", "path": ""}]
)
def test_empty_values_are_missing(value):
    assert _reason(value) == "missing_image"


def test_missing_file_names_the_resolved_path(tmp_path):
    with pytest.raises(BadImage) as info:
        load_image("nope.png", image_dir=tmp_path)
    assert info.value.reason == "missing_image"
    assert str(tmp_path / "nope.png") in str(info.value)
    assert _reason({"bytes": None, "path": "nope.png"}, image_dir=tmp_path) == "missing_image"
    assert _reason(tmp_path) == "missing_image"  # a directory is not an image file


def test_garbage_is_unreadable(tmp_path):
    garbage = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _reason(garbage) == "unreadable_image"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(BadImage) as info:
        load_image(text)
    assert info.value.reason == "unreadable_image" and str(text) in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_unreadable(tmp_path, fmt):
    data = _encode(_random_rgb(size=(64, 64)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    assert _reason(path) == "unreadable_image"
    assert _reason(data[: len(data) // 2]) == "unreadable_image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_huge_header_is_rejected_before_decoding():
    # 9000 x 9000 = 81 Mpx is under PIL's own limits, so this is our header check; as 8-bit RGB it would need 243 MB.
    data = _png_header_only(9000, 9000)
    assert len(data) < 100
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(BadImage) as info:
        load_image(data, max_pixels=1_000_000)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.reason == "image_too_large" and "max_pixels" in str(info.value)
    assert peak < 1_000_000 and elapsed < 1.0
    # Beyond PIL's hard limit (2 * Image.MAX_IMAGE_PIXELS), PIL refuses first: the same reason.
    assert _reason(_png_header_only(100_000, 100_000)) == "image_too_large"
    assert _reason(_random_rgb(size=(20, 10)), max_pixels=199) == "image_too_large"


def test_pil_decompression_bomb_error_is_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL errors above 2000 px
    with pytest.raises(BadImage) as info:
        load_image(_encode(_random_rgb(size=(64, 64)), "PNG"))
    assert info.value.reason == "image_too_large" and "MAX_IMAGE_PIXELS" in str(info.value)


def test_pil_decompression_bomb_warning_is_silent(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64 x 64 = 4096 px: PIL warns, our max_pixels admits it
    data = _encode(_random_rgb(size=(64, 64)), "PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(data).size == (64, 64)
    assert caught == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(data).size == (64, 64)


def test_default_max_pixels_admits_8k_and_stays_under_pil_limit():
    assert 7680 * 4320 < DEFAULT_MAX_IMAGE_PIXELS <= 2 * Image.MAX_IMAGE_PIXELS
    # The limit is inclusive: at exactly max_pixels the header passes and decoding starts (and fails on the empty IDAT).
    header = _png_header_only(7680, 4320)
    assert _reason(header, max_pixels=7680 * 4320 - 1) == "image_too_large"
    assert _reason(header, max_pixels=7680 * 4320) == "unreadable_image"


def test_frames(tmp_path):
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    gif = tmp_path / "anim.gif"
    red.save(gif, save_all=True, append_images=[blue])
    with pytest.raises(BadImage) as info:
        load_image(gif)
    assert info.value.reason == "unsupported_image" and "2 frames" in str(info.value)
    # MPO (phone cameras): frame 0 is the primary picture, kept.
    mpo = tmp_path / "photo.mpo"
    red.save(mpo, "MPO", save_all=True, append_images=[blue])
    assert np.asarray(load_image(mpo))[..., 0].min() > 200


def test_wrong_type_and_bad_max_pixels():
    with pytest.raises(TypeError, match="int"):
        load_image(3)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(_random_rgb(), max_pixels=0)


# ---------------------------------------------------------------- ownership


def test_input_image_is_not_modified():
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.putdata([0, 1, 2])
    palette.info["transparency"] = 1
    before = (palette.mode, palette.tobytes(), palette.getpalette(), dict(palette.info))
    result = load_image(palette)
    assert result.mode == "RGB"
    assert (palette.mode, palette.tobytes(), palette.getpalette(), dict(palette.info)) == before
    rgb = _random_rgb()
    result = load_image(rgb)
    assert result is not rgb
    result.putpixel((0, 0), (1, 2, 3))
    assert rgb.getpixel((0, 0)) != (1, 2, 3)


def test_result_is_detached_from_the_file(tmp_path):
    image = _random_rgb()
    path = tmp_path / "a.jpg"
    image.save(path, quality=95)
    expected = _pixels(Image.open(path).convert("RGB"))
    result = load_image(path)
    # Emptying the file (same inode) would break a lazy image still reading from it; deleting it too.
    path.write_bytes(b"")
    path.unlink()
    assert _pixels(result) == expected


def test_encoded_bytes_returns_the_stored_file(tmp_path):
    from vzero_trl.images import encoded_bytes

    data = io.BytesIO()
    Image.new("RGB", (4, 3), (1, 2, 3)).save(data, format="PNG")
    (tmp_path / "a.png").write_bytes(data.getvalue())
    assert encoded_bytes("a.png", image_dir=tmp_path) == data.getvalue()
    assert encoded_bytes({"bytes": None, "path": str(tmp_path / "a.png")}) == data.getvalue()
    assert encoded_bytes({"bytes": data.getvalue(), "path": "elsewhere.png"}) == data.getvalue()
    assert encoded_bytes(bytearray(data.getvalue())) == data.getvalue()
