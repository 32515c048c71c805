"""Box geometry for V-Zero's evidence views: the positive crop around the target and the negative crop away from it.

Boxes are `tuple[int, int, int, int]` = `(x0, y0, x1, y1)` in pixels, half-open (`x1`, `y1` excluded), which is exactly
what `PIL.Image.Image.crop` takes; sizes are `(width, height)`. Everything above the "PIL edge" line is pure integer
geometry; only the last few functions touch images.

The negative crop follows the paper: "an equal-size crop randomly sampled outside the target region after a 2x
downsampling of the original image". [`negative_box`] samples its position exactly uniformly in O(1).
"""

import math
import numbers
import random
from collections.abc import Sequence

from PIL import Image


Box = tuple[int, int, int, int]
Size = tuple[int, int]


class NoRoomForNegative(ValueError):
    """Raised when no crop of the requested size fits in the downsampled image without overlapping the target."""


def _validate_size(size: Sequence[int], name: str) -> Size:
    if len(size) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in size):
        raise ValueError(f"`{name}` must be (width, height) with positive ints, got {size}.")
    return int(size[0]), int(size[1])


def _validate_factor(factor: int) -> int:
    if not isinstance(factor, numbers.Integral) or factor < 1:
        raise ValueError(f"`factor` must be an int >= 1, got {factor!r}. Use 1 for no downsampling.")
    return int(factor)


def _validate_ordered(box: Sequence[int], name: str) -> Box:
    if len(box) != 4 or not all(isinstance(v, numbers.Integral) for v in box):
        raise ValueError(f"`{name}` must be 4 ints (x0, y0, x1, y1), got {box}.")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x0 < 0 or y0 < 0 or x0 >= x1 or y0 >= y1:
        raise ValueError(f"`{name}` {box} must satisfy 0 <= x0 < x1 and 0 <= y0 < y1 (half-open, non-empty).")
    return x0, y0, x1, y1


def validate_box(box: Sequence[int], image_size: Sequence[int], name: str = "box") -> Box:
    """
    Check that a box is a non-empty half-open pixel box inside an image.

    Args:
        box (`Sequence[int]`):
            `(x0, y0, x1, y1)` with `x1`, `y1` excluded. Any 4-int sequence (a list from a dataset row works).
        image_size (`Sequence[int]`):
            `(width, height)` of the image.
        name (`str`, *optional*, defaults to `"box"`):
            Argument name shown in the error message.

    Returns:
        `Box`: The box as a tuple of Python ints.
    """
    width, height = _validate_size(image_size, "image_size")
    x0, y0, x1, y1 = _validate_ordered(box, name)
    if x1 > width or y1 > height:
        raise ValueError(f"`{name}` {box} lies outside the image of size {(width, height)}; clip it with `clip_box`.")
    return x0, y0, x1, y1


def clip_box(box: Sequence[int], image_size: Sequence[int]) -> Box:
    """
    Intersect a box `(x0, y0, x1, y1)`, whose coordinates may be negative or too large, with the image of
    `image_size` `(width, height)`. Raises `ValueError` when nothing of the box is left inside the image.
    """
    width, height = _validate_size(image_size, "image_size")
    x0, y0, x1, y1 = box
    clipped = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise ValueError(f"`box` {tuple(box)} has no area inside the image of size {(width, height)}.")
    return clipped


def _grow_interval(lo: int, hi: int, size: int, margin: float, min_side: int) -> tuple[int, int]:
    # The tolerance keeps float noise from adding a pixel: 0.14 * 50 is 7.000000000000001, and must pad by 7.
    pad = math.ceil(margin * (hi - lo) - 1e-9)
    lo, hi = max(lo - pad, 0), min(hi + pad, size)
    side = min(max(hi - lo, min_side), size)
    lo -= (side - (hi - lo)) // 2
    lo = min(max(lo, 0), size - side)  # centred where possible, shifted back inside at the borders
    return lo, lo + side


def expand_box(box: Sequence[int], image_size: Sequence[int], margin: float = 0.0, min_side: int = 0) -> Box:
    """
    Grow a box by a relative margin, then to a minimum side, staying inside the image.

    Args:
        box (`Sequence[int]`):
            `(x0, y0, x1, y1)` inside the image.
        image_size (`Sequence[int]`):
            `(width, height)` of the image.
        margin (`float`, *optional*, defaults to `0.0`):
            Each side grows by `margin` times the box's length along that axis (rounded up), then is clipped to the
            image. `0.25` turns a 20-pixel side into 30 pixels.
        min_side (`int`, *optional*, defaults to `0`):
            Each side is then grown to at least `min_side` pixels (at most the image side), centred on the box where
            possible and shifted inward at the image borders.

    Returns:
        `Box`: The expanded box, inside the image and containing the input box.
    """
    x0, y0, x1, y1 = validate_box(box, image_size)
    if margin < 0:
        raise ValueError(f"`margin` must be >= 0 (a fraction of the box side), got {margin}.")
    if not isinstance(min_side, numbers.Integral) or min_side < 0:
        raise ValueError(f"`min_side` must be an int >= 0, got {min_side!r}.")
    width, height = image_size
    x0, x1 = _grow_interval(x0, x1, width, margin, min_side)
    y0, y1 = _grow_interval(y0, y1, height, margin, min_side)
    return x0, y0, x1, y1


def downsample_size(image_size: Sequence[int], factor: int) -> Size:
    """
    Size of an image downsampled by an integer factor: `(max(1, width // factor), max(1, height // factor))`.
    """
    width, height = _validate_size(image_size, "image_size")
    factor = _validate_factor(factor)
    return max(1, width // factor), max(1, height // factor)


def downsample_box(box: Sequence[int], factor: int) -> Box:
    """
    Scale a box down by an integer factor, rounding outward (floor of `x0 / factor`, ceil of `x1 / factor`) so the
    scaled box fully covers the target. It may reach past a downsampled image whose size was floored.
    """
    x0, y0, x1, y1 = _validate_ordered(box, "box")
    factor = _validate_factor(factor)
    return x0 // factor, y0 // factor, -(-x1 // factor), -(-y1 // factor)


def _axis_ranges(size: int, crop: int, lo: int, hi: int) -> tuple[tuple[range, range], range]:
    # Top-left positions 0..size-crop along one axis, split into those whose span [p, p + crop) misses [lo, hi)
    # (left of it, right of it) and those whose span overlaps it (the range in between). All are empty when the crop
    # is larger than the image.
    last = size - crop
    left = range(0, min(lo - crop, last) + 1)
    right = range(hi, last + 1)
    middle = range(max(lo - crop + 1, 0), min(hi, last + 1))
    return (left, right), middle


def _pick(ranges: tuple[range, ...], index: int) -> int:
    for r in ranges:
        if index < len(r):
            return r[index]
        index -= len(r)
    raise IndexError(index)


def negative_box(
    image_size: Sequence[int], target_box: Sequence[int], crop_size: Sequence[int], factor: int = 2, seed: int = 0
) -> Box:
    """
    Sample a box of `crop_size` in the downsampled image that does not overlap the downsampled target.

    A position `(x, y)` is valid when the crop lies left of, right of, above or below the target. The valid positions
    are the disjoint union `(x valid) × (all y)` + `(x overlapping) × (y valid)`; each factor is at most two integer
    ranges, so one `randrange` over the total count picks a position exactly uniformly, in O(1).

    Args:
        image_size (`Sequence[int]`):
            `(width, height)` of the full-resolution image.
        target_box (`Sequence[int]`):
            Target box in full-resolution pixels.
        crop_size (`Sequence[int]`):
            `(width, height)` of the negative crop, in downsampled pixels (V-Zero uses the positive crop's size).
        factor (`int`, *optional*, defaults to `2`):
            Downsampling factor, see [`downsample_size`] and [`downsample_box`].
        seed (`int`, *optional*, defaults to `0`):
            Seed of the `random.Random` that picks the position; the same seed gives the same box.

    Returns:
        `Box`: A box in the coordinates of the image of size `downsample_size(image_size, factor)`.

    Raises:
        `NoRoomForNegative`: When the crop does not fit in the downsampled image without overlapping the target.
    """
    validate_box(target_box, image_size, name="target_box")
    crop_w, crop_h = _validate_size(crop_size, "crop_size")
    width, height = downsample_size(image_size, factor)
    tx0, ty0, tx1, ty1 = downsample_box(target_box, factor)
    x_valid, x_overlap = _axis_ranges(width, crop_w, tx0, tx1)
    y_valid, y_overlap = _axis_ranges(height, crop_h, ty0, ty1)
    num_x_valid, num_y_valid = sum(map(len, x_valid)), sum(map(len, y_valid))
    num_y = num_y_valid + len(y_overlap)
    count = num_x_valid * num_y + len(x_overlap) * num_y_valid
    if count == 0:
        raise NoRoomForNegative(
            f"No room for a negative crop: crop_size={tuple(crop_size)} does not fit outside target_box="
            f"{tuple(target_box)} (downsampled to {(tx0, ty0, tx1, ty1)}) in image_size={tuple(image_size)} "
            f"downsampled with factor={factor} to {(width, height)}. Use a smaller crop_size or a smaller factor."
        )
    index = random.Random(seed).randrange(count)
    if index < num_x_valid * num_y:
        x, y = _pick(x_valid, index // num_y), _pick((*y_valid, y_overlap), index % num_y)
    else:
        index -= num_x_valid * num_y
        x, y = _pick((x_overlap,), index // num_y_valid), _pick(y_valid, index % num_y_valid)
    return x, y, x + crop_w, y + crop_h


def random_box(image_size: Sequence[int], crop_size: Sequence[int], seed: int = 0) -> Box:
    """
    Sample a box of `crop_size` uniformly anywhere inside the image (the paper's "random evidence" ablation).

    Args:
        image_size (`Sequence[int]`):
            `(width, height)` of the image.
        crop_size (`Sequence[int]`):
            `(width, height)` of the box; must fit in the image.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the `random.Random` that picks the position.

    Returns:
        `Box`: A box inside the image.
    """
    width, height = _validate_size(image_size, "image_size")
    crop_w, crop_h = _validate_size(crop_size, "crop_size")
    if crop_w > width or crop_h > height:
        raise ValueError(f"`crop_size` {tuple(crop_size)} does not fit in the image of size {(width, height)}.")
    rng = random.Random(seed)
    x, y = rng.randrange(width - crop_w + 1), rng.randrange(height - crop_h + 1)
    return x, y, x + crop_w, y + crop_h


# ---------------------------------------------------------------- PIL edge


def crop_image(image: Image.Image, box: Sequence[int]) -> Image.Image:
    """Crop `image` to `box` after checking that the box lies inside it (PIL would silently pad with black)."""
    return image.crop(validate_box(box, image.size))


def downsample(image: Image.Image, factor: int) -> Image.Image:
    """
    Resize `image` to `downsample_size(image.size, factor)` with bicubic resampling.

    Pillow widens the bicubic filter when shrinking, so fine detail is blurred away as in a genuinely lower-resolution
    view instead of aliasing into spurious texture; bicubic is also what Qwen-VL image processors resize with.
    """
    return image.resize(downsample_size(image.size, factor), Image.Resampling.BICUBIC)


def negative_crop(
    image: Image.Image, target_box: Sequence[int], crop_size: Sequence[int], factor: int = 2, seed: int = 0
) -> Image.Image:
    """The negative evidence view: `downsample(image, factor).crop(negative_box(image.size, ...))`."""
    box = negative_box(image.size, target_box, crop_size, factor=factor, seed=seed)
    return downsample(image, factor).crop(box)
