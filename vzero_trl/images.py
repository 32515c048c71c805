"""Image loading for data preparation: any stored image in, a fully decoded 8-bit RGB `PIL.Image.Image` out.

Every image of a dataset row goes through [`load_image`]. A bad image must neither crash the pipeline nor vanish, so
[`load_image`] raises [`BadImage`] and the caller writes the row id and `BadImage.reason` to its rejects file:

| `reason`            | Raised when                                                                                    |
|---------------------|------------------------------------------------------------------------------------------------|
| `missing_image`     | the value is `None` or empty (`b""`, `""`, a dict with neither bytes nor path), or no such file |
| `unreadable_image`  | not an image, corrupt, truncated or without pixels: PIL could not decode every pixel           |
| `image_too_large`   | `width * height > max_pixels`, read from the header before any pixel is decoded; also PIL's own |
|                     | `DecompressionBombError` (2 x `Image.MAX_IMAGE_PIXELS`, 178,956,970 px unless the app changes it) |
| `unsupported_image` | several frames (animated GIF/PNG/WebP, multi-page TIFF: which frame the boxes refer to is       |
|                     | ambiguous), or a mode with no faithful RGB mapping                                              |

A value of any other type (not an image, bytes, path or dict) is a bug in the caller and raises `TypeError`.

An EXIF orientation tag is applied (the pixels are rotated or mirrored upright, as `datasets`, `transformers` and
image viewers show them), so bounding boxes refer to the upright, displayed image. ICC profiles are not applied. The
conversion rules are in [`to_rgb`]. PIL's globals (`LOAD_TRUNCATED_IMAGES`, `MAX_IMAGE_PIXELS`) are left as they are.
"""

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps


Reason = Literal["missing_image", "unreadable_image", "image_too_large", "unsupported_image"]

# 151 Mpx: admits 8K (7680x4320 = 33 Mpx) and 12K squares, and stays under PIL's hard limit (178,956,970 px by default)
# so that, with PIL's defaults, this number and not PIL's decides. A 16384^2 default would be cut by PIL anyway.
DEFAULT_MAX_IMAGE_PIXELS = 12288 * 12288

# Longest over shortest side that vision processors accept: Qwen-VL's `smart_resize` raises beyond 200.
MAX_ASPECT_RATIO = 200.0

# 8-bit modes left to PIL's `convert("RGB")`/`convert("RGBA")` (CMYK, YCbCr, LAB, HSV use its colour formulas).
_PIL_MODES = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBA", "RGBa"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class BadImage(ValueError):
    """
    An image that cannot become a training image. `str(error)` says what was wrong and where.

    Args:
        reason (`str`):
            Machine-readable cause, one of the reasons in the module docstring; stored as `error.reason`.
        message (`str`):
            Human-readable message naming the source (path, bytes or PIL image).
    """

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Default pickling would call `BadImage(message)`; keep `reason` across `datasets.map(num_proc=...)` workers.
        return type(self), (self.reason, str(self))


def to_rgb(image: Image.Image) -> Image.Image:
    """
    Convert an image to 8-bit RGB, faithfully, as a new image (the input is not modified).

    - `RGB`: a copy. `1`, `L`, `P`, `RGBX`, `CMYK`, `YCbCr`, `LAB`, `HSV`: PIL's conversion.
    - Transparency (`LA`, `PA`, `RGBA`, `RGBa`, a `P` transparency index, an `L`/`RGB` colour key): composited onto
      white. A transparent pixel has no colour; white is what most viewers and ZwZ's benchmark converter show, while
      dropping alpha would expose whatever colour the encoder left behind (often black).
    - 16-bit grey (`I;16`, `I;16L`, `I;16B`, `I;16N`, and `I` as PIL loads 16-bit files): `round(v / 257)`, so
      0..65535 maps onto 0..255 (PIL's `convert("L")` clips at 255 instead). An `I` image is assumed to hold 16-bit
      data: negative values become 0, and one whose maximum exceeds 65535 is scaled by `255 / max`.
    - `F` (float): if the maximum is <= 1 the image is taken as [0, 1] and scaled by 255, otherwise clipped to
      [0, 255]; NaN becomes 0. Then rounded.

    Args:
        image (`PIL.Image.Image`):
            Image in any of the modes above. It is loaded if it was opened lazily.

    Returns:
        `PIL.Image.Image`: A new `RGB` image of the same size.

    Raises:
        BadImage: `unsupported_image` for any other mode (e.g. `La`, `I;16S`).
    """
    if image.mode in _HIGH_BIT_MODES:
        return Image.fromarray(_grey_to_uint8(image)).convert("RGB")
    if image.mode not in _PIL_MODES:
        raise BadImage("unsupported_image", f"image mode {image.mode!r} has no faithful 8-bit RGB conversion.")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.copy() if image.mode == "RGB" else image.convert("RGB")


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if values.max() <= 1:
            values = values * 255
        return np.rint(values.clip(0, 255)).astype(np.uint8)
    values = np.asarray(image).astype(np.int64).clip(min=0)
    peak = values.max()
    if peak <= 65535:
        return ((values + 128) // 257).astype(np.uint8)  # round(v / 257) in integers
    return np.rint(values * (255 / peak)).astype(np.uint8)


def load_image(
    value: Image.Image | bytes | bytearray | str | Path | dict | None,
    image_dir: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """
    Load and fully decode one image, turn it upright by its EXIF orientation tag, and convert it to 8-bit RGB with
    [`to_rgb`].

    Args:
        value (`PIL.Image.Image`, `bytes`, `bytearray`, `str`, `Path`, `dict` or `None`):
            The image, its encoded bytes, its path, or a `datasets.Image(decode=False)` dict
            `{"bytes": bytes | None, "path": str | None}` (the bytes are used when present, else the path).
        image_dir (`str` or `Path`, *optional*):
            Directory that relative paths are resolved against. `None` resolves them against the working directory.
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_IMAGE_PIXELS`):
            Largest accepted `width * height`. Checked from the header, so an oversized file costs no memory.

    Returns:
        `PIL.Image.Image`: A new, fully loaded `RGB` image, detached from any file. A PIL input is not modified
        (a lazily opened one gets its pixels read).

    Raises:
        BadImage: With `reason` `missing_image`, `unreadable_image`, `image_too_large` or `unsupported_image`.
        TypeError: If `value` is of none of the types above.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"`max_pixels` must be a positive int, got {max_pixels!r}.")
    if isinstance(value, Image.Image):
        _check_and_load(value, "the given PIL image", max_pixels)
        return to_rgb(_upright(value))
    source, where = _locate(value, image_dir)
    with _decoding(where):
        image = Image.open(source)
    with image:  # closes the file once the pixels are copied out
        _check_and_load(image, where, max_pixels)
        return to_rgb(_upright(image))


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation tag (1 to 8), 1 (upright) when it has none."""
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def _upright(image: Image.Image) -> Image.Image:
    # `datasets.Image` and `transformers.image_utils.load_image` rotate by the tag on decode; so must we, or a stored
    # image and the boxes and crops measured on it would be in two different frames.
    return image if exif_orientation(image) == 1 else ImageOps.exif_transpose(image)


def encoded_bytes(value: bytes | bytearray | str | Path | dict, image_dir: str | Path | None = None) -> bytes:
    """
    The encoded file bytes behind an image value accepted by [`load_image`] (not a PIL image), resolved the same way.
    Lets a caller store a source image as it was instead of re-encoding it.
    """
    source, _ = _locate(value, image_dir)
    return source.getvalue() if isinstance(source, io.BytesIO) else source.read_bytes()


def _locate(value: object, image_dir: str | Path | None) -> tuple[io.BytesIO | Path, str]:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return io.BytesIO(data), f"image bytes of {path}" if path else "image bytes"
        value = path
    if value is not None and not isinstance(value, (bytes, bytearray, str, Path)):
        raise TypeError(f"An image must be a PIL image, bytes, a path or a datasets.Image dict, got {type(value)}.")
    if not value:
        raise BadImage("missing_image", f"no image: got {value!r}.")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value), "image bytes"
    path = Path(value) if image_dir is None else Path(image_dir, value)
    if not path.is_file():
        raise BadImage("missing_image", f"image file not found: {path}")
    return path, str(path)


def _check_and_load(image: Image.Image, where: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            "image_too_large",
            f"{where}: {width}x{height} = {width * height:,} pixels exceeds max_pixels={max_pixels:,}.",
        )
    if width * height == 0:
        raise BadImage("unreadable_image", f"{where}: image has no pixels ({width}x{height}).")
    with _decoding(where):
        # `n_frames` only exists on multi-frame formats (PIL's documented idiom). MPO's frame 0 is the primary
        # picture by definition (the others are previews or depth maps), so phone photos are kept.
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and image.format != "MPO":
            raise BadImage("unsupported_image", f"{where}: {image.format} image with {frames} frames.")
        image.load()


@contextmanager
def _decoding(where: str) -> Iterator[None]:
    with warnings.catch_warnings():
        # Our `max_pixels` is the size policy: PIL's warning above its own limit is noise (an error under `-W error`).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except BadImage:
            raise
        except Image.DecompressionBombError as e:
            raise BadImage("image_too_large", f"{where}: {e} (PIL's Image.MAX_IMAGE_PIXELS)") from e
        except Exception as e:
            # Decoders report bad data with many types (OSError, SyntaxError, ValueError, EOFError, struct.error...).
            raise BadImage("unreadable_image", f"{where}: cannot decode ({type(e).__name__}: {e}).") from e
