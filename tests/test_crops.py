import random
import types
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vzero_trl import crops
from vzero_trl.crops import (
    NoRoomForNegative,
    clip_box,
    crop_image,
    downsample,
    downsample_box,
    downsample_size,
    expand_box,
    negative_box,
    negative_crop,
    random_box,
    validate_box,
)


def _overlaps(a, b):
    return not (a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3])


def _valid_negative_positions(image_size, target_box, crop_size, factor):
    # Brute force from the definition: every top-left corner whose crop fits and misses the downsampled target.
    width, height = downsample_size(image_size, factor)
    target = downsample_box(target_box, factor)
    crop_w, crop_h = crop_size
    return {
        (x, y)
        for x in range(width - crop_w + 1)
        for y in range(height - crop_h + 1)
        if not _overlaps((x, y, x + crop_w, y + crop_h), target)
    }


# (image_size, target_box, crop_size, factor): centre, corners, odd sizes whose downsampled target pokes out of the
# floored downsampled image, a crop as wide as the image (only above/below is possible), factors 1 and 3.
NEGATIVE_CASES = [
    ((20, 16), (8, 6, 12, 10), (3, 2), 2),
    ((20, 16), (0, 0, 5, 5), (4, 4), 2),
    ((21, 15), (17, 11, 21, 15), (2, 3), 2),
    ((20, 20), (6, 2, 10, 6), (10, 2), 2),
    ((12, 9), (3, 3, 6, 5), (2, 2), 1),
    ((30, 27), (10, 10, 14, 13), (3, 4), 3),
    ((9, 7), (2, 1, 3, 6), (1, 1), 1),
]


def test_validate_box_returns_python_int_tuple():
    assert validate_box([1, 2, 3, 4], (10, 10)) == (1, 2, 3, 4)
    box = validate_box(np.array([0, 0, 10, 10]), (10, 10))  # the full image is allowed (half-open)
    assert box == (0, 0, 10, 10) and all(type(v) is int for v in box)


@pytest.mark.parametrize(
    "box",
    [(0, 0, 11, 5), (0, 0, 5, 11), (3, 3, 3, 5), (3, 3, 5, 3), (-1, 0, 2, 2), (5, 0, 2, 2), (0, 0, 1.5, 2), (0, 0, 1)],
)
def test_validate_box_rejects_bad_boxes_naming_the_argument(box):
    with pytest.raises(ValueError, match="`target_box`") as info:
        validate_box(box, (10, 10), name="target_box")
    assert str(box) in str(info.value)


def test_validate_box_error_shows_image_size():
    with pytest.raises(ValueError, match=r"\(12, 10\)"):
        validate_box((0, 0, 13, 4), (12, 10))


def test_clip_box():
    assert clip_box((-3, 2, 5, 12), (10, 10)) == (0, 2, 5, 10)
    assert clip_box((2, 2, 5, 5), (10, 10)) == (2, 2, 5, 5)
    assert clip_box((-5, -5, 20, 20), (10, 8)) == (0, 0, 10, 8)
    with pytest.raises(ValueError, match="no area"):
        clip_box((10, 0, 15, 5), (10, 10))  # starts at the right edge: nothing left


@pytest.mark.parametrize(
    "box, image_size, margin, min_side, expected",
    [
        # Side 20, pad ceil(0.25 * 20) = 5 on each side: 40 - 5 = 35, 60 + 5 = 65.
        ((40, 40, 60, 60), (100, 100), 0.25, 0, (35, 35, 65, 65)),
        # 0.14 * 50 is 7.000000000000001 in floats; the pad must still be 7: 10 - 7 = 3, 60 + 7 = 67.
        ((10, 10, 60, 60), (100, 100), 0.14, 0, (3, 3, 67, 67)),
        # Width 4 -> 10: extra 6, 3 on the left (10 - 3 = 7). Height 2 -> 10: extra 8, 4 above (10 - 4 = 6).
        ((10, 10, 14, 12), (100, 100), 0.0, 10, (7, 6, 17, 16)),
        # Odd extra: 3 -> 6 puts 1 before and 2 after: (9, 15) still covers (10, 13).
        ((10, 10, 13, 13), (100, 100), 0.0, 6, (9, 9, 15, 15)),
        # Top-left corner: pad 0.5 * 4 = 2 clips at 0 -> (0, 6); then 6 -> 10 would start at -2, shifted to 0.
        ((0, 0, 4, 4), (100, 100), 0.5, 10, (0, 0, 10, 10)),
        # Bottom-right corner: width 5 -> 20 would start at 95 - 7 = 88, shifted back to 100 - 20 = 80; height 10 -> 20
        # would start at 85, shifted to 80.
        ((95, 90, 100, 100), (100, 100), 0.0, 20, (80, 80, 100, 100)),
        # min_side larger than the image is capped by each image side.
        ((2, 2, 4, 4), (10, 6), 0.0, 50, (0, 0, 10, 6)),
        # Nothing to do.
        ((2, 3, 7, 9), (10, 10), 0.0, 0, (2, 3, 7, 9)),
    ],
)
def test_expand_box_hand_computed(box, image_size, margin, min_side, expected):
    assert expand_box(box, image_size, margin=margin, min_side=min_side) == expected


def test_expand_box_contains_input_and_stays_inside():
    rng = random.Random(0)
    for _ in range(500):
        width, height = rng.randint(1, 60), rng.randint(1, 60)
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, rng.randint(x0 + 1, width), rng.randint(y0 + 1, height))
        min_side = rng.randint(0, 70)
        out = expand_box(box, (width, height), margin=rng.choice([0.0, 0.1, 0.25, 1.0]), min_side=min_side)
        assert 0 <= out[0] <= box[0] and 0 <= out[1] <= box[1]
        assert box[2] <= out[2] <= width and box[3] <= out[3] <= height
        assert out[2] - out[0] >= min(min_side, width) and out[3] - out[1] >= min(min_side, height)


def test_expand_box_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`margin`"):
        expand_box((1, 1, 3, 3), (10, 10), margin=-0.1)
    with pytest.raises(ValueError, match="`min_side`"):
        expand_box((1, 1, 3, 3), (10, 10), min_side=-1)
    with pytest.raises(ValueError, match="`box`"):
        expand_box((1, 1, 30, 3), (10, 10))


def test_downsample_size():
    assert downsample_size((449, 301), 2) == (224, 150)  # floors
    assert downsample_size((1, 3), 4) == (1, 1)  # never below 1
    assert downsample_size((7, 5), 1) == (7, 5)
    for factor in (0, -2, 1.5):
        with pytest.raises(ValueError, match="`factor`"):
            downsample_size((10, 10), factor)


def test_downsample_box_rounds_outward():
    # 3 // 2 = 1, 5 // 2 = 2, ceil(8 / 2) = 4, ceil(9 / 2) = 5.
    assert downsample_box((3, 5, 8, 9), 2) == (1, 2, 4, 5)
    # 7 // 3 = 2, 9 // 3 = 3, ceil(10 / 3) = 4, ceil(12 / 3) = 4.
    assert downsample_box((7, 9, 10, 12), 3) == (2, 3, 4, 4)
    rng = random.Random(0)
    for _ in range(500):
        factor = rng.randint(1, 5)
        x0, y0 = rng.randrange(50), rng.randrange(50)
        box = (x0, y0, x0 + rng.randint(1, 20), y0 + rng.randint(1, 20))
        small = downsample_box(box, factor)
        # Covers the target once scaled back up, and is the smallest such box.
        assert small[0] * factor <= box[0] < (small[0] + 1) * factor
        assert small[1] * factor <= box[1] < (small[1] + 1) * factor
        assert (small[2] - 1) * factor < box[2] <= small[2] * factor
        assert (small[3] - 1) * factor < box[3] <= small[3] * factor


def test_negative_box_hand_computed():
    # 20x20 downsampled by 2 is 10x10; the target (0, 0, 20, 10) becomes (0, 0, 10, 5), the top half. A 10x5 crop
    # fits only at x = 0, and misses the target only at y = 5 (y + 5 <= 0 is impossible): the bottom half.
    for seed in range(5):
        assert negative_box((20, 20), (0, 0, 20, 10), (10, 5), factor=2, seed=seed) == (0, 5, 10, 10)


@pytest.mark.parametrize("image_size, target_box, crop_size, factor", NEGATIVE_CASES)
def test_negative_box_samples_only_valid_positions(image_size, target_box, crop_size, factor):
    valid = _valid_negative_positions(image_size, target_box, crop_size, factor)
    width, height = downsample_size(image_size, factor)
    target = downsample_box(target_box, factor)
    for seed in range(300):
        box = negative_box(image_size, target_box, crop_size, factor=factor, seed=seed)
        assert (box[2] - box[0], box[3] - box[1]) == crop_size
        assert 0 <= box[0] and 0 <= box[1] and box[2] <= width and box[3] <= height
        assert not _overlaps(box, target)
        assert box[:2] in valid


@pytest.mark.parametrize("image_size, target_box, crop_size, factor", NEGATIVE_CASES)
def test_negative_box_is_a_bijection_from_randrange(monkeypatch, image_size, target_box, crop_size, factor):
    # Exact uniformity: replace the RNG by one whose `randrange(n)` returns the seed. If `negative_box` calls
    # `randrange(len(valid))` once and maps 0..n-1 onto the valid positions one to one, each is equally likely.
    calls = []

    class SeedAsIndex:
        def __init__(self, seed):
            self.seed = seed

        def randrange(self, n):
            calls.append(n)
            return self.seed

    monkeypatch.setattr(crops, "random", types.SimpleNamespace(Random=SeedAsIndex))
    valid = _valid_negative_positions(image_size, target_box, crop_size, factor)
    sampled = [negative_box(image_size, target_box, crop_size, factor, seed=i)[:2] for i in range(len(valid))]
    assert calls == [len(valid)] * len(valid)
    assert sorted(sampled) == sorted(valid)


def test_negative_box_is_roughly_uniform_with_the_real_rng():
    # 12x10 downsampled by 2 is 6x5, the target (4, 4, 8, 6) becomes (2, 2, 4, 3), 2x2 crops.
    image_size, target_box, crop_size = (12, 10), (4, 4, 8, 6), (2, 2)
    valid = _valid_negative_positions(image_size, target_box, crop_size, 2)
    counts = Counter(negative_box(image_size, target_box, crop_size, seed=s)[:2] for s in range(4000))
    assert set(counts) == valid
    expected = 4000 / len(valid)
    assert all(abs(count - expected) < 0.3 * expected for count in counts.values())


def test_negative_box_is_deterministic_and_varies_with_seed():
    args = ((448, 448), (200, 200, 220, 220), (32, 32))
    assert negative_box(*args, seed=7) == negative_box(*args, seed=7)
    assert len({negative_box(*args, seed=s) for s in range(20)}) > 15


@pytest.mark.parametrize(
    "image_size, target_box, crop_size",
    [
        ((20, 20), (0, 0, 4, 4), (11, 2)),  # wider than the 10x10 downsampled image
        ((20, 20), (0, 0, 20, 20), (1, 1)),  # the target fills the image
        ((20, 20), (4, 4, 16, 16), (3, 3)),  # (2, 2, 8, 8) in 10x10 leaves 2-pixel strips only
    ],
)
def test_negative_box_raises_when_there_is_no_room(image_size, target_box, crop_size):
    with pytest.raises(NoRoomForNegative) as info:
        negative_box(image_size, target_box, crop_size, factor=2)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(image_size) in message and str(target_box) in message and str(crop_size) in message
    assert "factor=2" in message and "smaller" in message


def test_negative_box_validates_target_box():
    with pytest.raises(ValueError, match="`target_box`"):
        negative_box((20, 20), (0, 0, 30, 4), (2, 2))


def test_random_box_is_uniform_over_all_positions():
    # A 2x2 box in a 4x3 image has 3 * 2 = 6 positions.
    counts = Counter(random_box((4, 3), (2, 2), seed=s) for s in range(3000))
    assert set(counts) == {(x, y, x + 2, y + 2) for x in range(3) for y in range(2)}
    assert all(abs(count - 500) < 150 for count in counts.values())
    assert random_box((448, 448), (40, 30), seed=3) == random_box((448, 448), (40, 30), seed=3)


def test_random_box_raises_plain_value_error_when_the_crop_does_not_fit():
    with pytest.raises(ValueError, match="`crop_size`") as info:
        random_box((10, 10), (11, 3))
    assert not isinstance(info.value, NoRoomForNegative)


@pytest.fixture
def noise_image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(37, 50, 3), dtype=np.uint8))


def test_crop_image_matches_numpy_slicing(noise_image):
    box = (3, 5, 41, 30)
    np.testing.assert_array_equal(np.asarray(crop_image(noise_image, box)), np.asarray(noise_image)[5:30, 3:41])
    with pytest.raises(ValueError, match="outside the image"):
        crop_image(noise_image, (0, 0, 51, 10))  # PIL alone would pad with black


def test_downsample_size_and_mode(noise_image):
    small = downsample(noise_image, 2)
    assert small.size == (25, 18) and small.mode == "RGB"
    assert downsample(noise_image, 1).tobytes() == noise_image.tobytes()


def test_negative_crop_equals_crop_of_downsampled_image(noise_image):
    target_box, crop_size = (20, 10, 30, 20), (6, 5)
    for seed in range(5):
        expected = downsample(noise_image, 2).crop(negative_box(noise_image.size, target_box, crop_size, seed=seed))
        got = negative_crop(noise_image, target_box, crop_size, seed=seed)
        assert got.size == crop_size
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
