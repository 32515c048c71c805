import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from vzero_trl.crops import (
    NoRoomForNegative,
    crop_image,
    downsample,
    downsample_box,
    expand_box,
)
from vzero_trl.schema import dataset_features
from vzero_trl.toy import synthetic
from vzero_trl.toy.synthetic import COLORS, SHAPES, make_dataset, make_example


IMAGE_COLUMNS = ("image", "crop", "negative_crop", "random_crop")


@pytest.fixture(scope="module")
def examples():
    return [make_example(index, seed=0) for index in range(12)]


def _options(row):
    lines = row["prompt"][0]["content"].split("\n")
    return lines, dict(line.split(". ", 1) for line in lines[1:5])


def _target_color(row):
    return COLORS[_options(row)[1][row["answer"]]]


def _find(haystack, needle):
    # Every top-left (x, y) where `needle` occurs in `haystack` pixel for pixel; candidates from the first pixel.
    h, w = needle.shape[:2]
    ys, xs = np.nonzero(np.all(haystack == needle[0, 0], axis=-1))
    return [
        (x, y, x + w, y + h)
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True)
        if np.array_equal(haystack[y : y + h, x : x + w], needle)
    ]


def _overlaps(a, b):
    return not (a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3])


def test_same_index_and_seed_give_identical_rows():
    a, b = make_example(3, seed=1), make_example(3, seed=1)
    for column in IMAGE_COLUMNS:
        assert a[column].tobytes() == b[column].tobytes()
    assert {k: a[k] for k in ("id", "prompt", "bbox", "answer")} == {
        k: b[k] for k in ("id", "prompt", "bbox", "answer")
    }


def test_different_index_or_seed_give_different_images():
    base = make_example(3, seed=1)["image"].tobytes()
    assert make_example(4, seed=1)["image"].tobytes() != base
    assert make_example(3, seed=2)["image"].tobytes() != base


def test_row_layout(examples):
    row = examples[5]
    assert row["id"] == "synthetic-0-000005"
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert all(isinstance(v, int) for v in row["bbox"]) and len(row["bbox"]) == 4
    for column in IMAGE_COLUMNS:
        assert isinstance(row[column], Image.Image) and row[column].mode == "RGB"
    assert row["image"].size == (448, 448)


def test_question_has_four_options_and_one_correct_letter(examples):
    for row in examples:
        lines, options = _options(row)
        assert lines[0].startswith("What is the color of the ") and lines[0].endswith(" in the image?")
        assert lines[0].split()[-4] in SHAPES
        assert list(options) == ["A", "B", "C", "D"]
        assert len(set(options.values())) == 4 and set(options.values()) <= set(COLORS)
        assert row["answer"] in options
        assert lines[5] == "Answer with the option's letter from the given choices."
    # Shuffled: the correct letter is not always the same.
    assert len({row["answer"] for row in examples}) > 1


def test_target_box_is_small_tight_and_visible(examples):
    for row in examples:
        x0, y0, x1, y1 = row["bbox"]
        assert 0 <= x0 < x1 <= 448 and 0 <= y0 < y1 <= 448
        # Side between 4% and 7% of the canvas: round(0.04 * 448) = 18 (a star spans 95% of it, so 17) and
        # round(0.07 * 448) = 31.
        assert 17 <= max(x1 - x0, y1 - y0) <= 31
        # Tight and unoccluded: the answer colour reaches every edge of the box.
        is_target = np.all(np.asarray(row["image"])[y0:y1, x0:x1] == _target_color(row), axis=-1)
        assert is_target[0].any() and is_target[-1].any() and is_target[:, 0].any() and is_target[:, -1].any()


def test_target_kind_is_unique_and_distractors_avoid_it(monkeypatch):
    drawn = []
    draw_shape = synthetic.draw_shape

    def recording_draw_shape(draw, kind, box, fill):
        drawn.append((kind, box))
        draw_shape(draw, kind, box, fill)

    monkeypatch.setattr(synthetic, "draw_shape", recording_draw_shape)
    for index in range(8):
        drawn.clear()
        row = make_example(index, num_distractors=30)
        kind = row["prompt"][0]["content"].split("\n")[0].split()[-4]
        # The first call draws the target onto its mask; the 30 others are distractors.
        assert len(drawn) == 31 and drawn[0][0] == kind
        assert all(k != kind for k, _ in drawn[1:])
        keep_out = expand_box(row["bbox"], (448, 448), margin=0.25)
        assert not any(_overlaps(box, keep_out) for _, box in drawn[1:])


def test_crop_is_the_expanded_box(examples):
    for row in examples:
        box = expand_box(row["bbox"], row["image"].size, margin=0.25, min_side=32)
        np.testing.assert_array_equal(np.asarray(row["crop"]), np.asarray(crop_image(row["image"], box)))
        assert min(row["crop"].size) >= 32


def test_negative_crop_comes_from_the_downsampled_image_away_from_the_target(examples):
    for row in examples:
        assert row["negative_crop"].size == row["crop"].size
        target = downsample_box(row["bbox"], 2)
        matches = _find(np.asarray(downsample(row["image"], 2)), np.asarray(row["negative_crop"]))
        assert any(not _overlaps(box, target) for box in matches)


def test_random_crop_comes_from_the_full_image(examples):
    for row in examples[:4]:
        assert row["random_crop"].size == row["crop"].size
        assert _find(np.asarray(row["image"]), np.asarray(row["random_crop"]))


def test_too_small_canvas_raises_no_room_for_negative():
    # A 40x40 canvas downsampled by 2 is 20x20, smaller than the 32-pixel minimum positive crop.
    with pytest.raises(NoRoomForNegative, match=r"\(40, 40\)"):
        make_example(0, canvas_size=(40, 40), num_distractors=2)


def test_make_dataset_round_trips_through_disk(tmp_path):
    dataset = make_dataset(4, seed=3, num_distractors=10)
    assert dataset.features == dataset_features() and len(dataset) == 4
    dataset.save_to_disk(str(tmp_path / "synthetic"))
    loaded = datasets.load_from_disk(str(tmp_path / "synthetic"))
    assert loaded.features == dataset_features()
    for index, row in enumerate(loaded):
        expected = make_example(index, seed=3, num_distractors=10)
        for column in IMAGE_COLUMNS:
            assert isinstance(row[column], Image.Image)
            assert row[column].convert("RGB").tobytes() == expected[column].tobytes()
        assert {k: row[k] for k in ("id", "prompt", "bbox", "answer")} == {
            k: expected[k] for k in ("id", "prompt", "bbox", "answer")
        }


def test_make_dataset_rejects_empty():
    with pytest.raises(ValueError, match="`num_examples`"):
        make_dataset(0)


def test_cli_saves_a_dataset(tmp_path):
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "vzero_trl.toy.synthetic", str(out), "--num_examples", "3", "--seed", "5"],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
    )
    loaded = datasets.load_from_disk(str(out))
    assert loaded["id"] == ["synthetic-5-000000", "synthetic-5-000001", "synthetic-5-000002"]
    assert loaded[0]["image"].tobytes() == make_example(0, seed=5)["image"].tobytes()
