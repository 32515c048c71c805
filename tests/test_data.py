"""Data preparation: ZwZ and generic rows become V-Zero rows, bad rows are recorded and never fatal, runs resume."""

import io
import json
import math
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw

from vzero_trl.crops import downsample, downsample_box, negative_box
from vzero_trl.prepare import pipeline
from vzero_trl.prepare.convert import (
    PrepareConfig,
    RejectedRow,
    clean_question,
    convert_row,
    parse_bbox,
    prompt_tokens,
    row_seed,
)
from vzero_trl.prepare.pipeline import load_source, local_splits, open_dataset, prepare
from vzero_trl.schema import dataset_features
from vzero_trl.toy.synthetic import make_dataset, make_example


HINT = "Only focus on the objects inside the red bounding box in the image to answer this question."
OPTIONS = "A. red\nB. green\nC. blue\nD. yellow\nAnswer with the option's letter from the given choices."


def zwz_problem(question):
    return f"{question}\n\n{HINT}\n\n{OPTIONS}"


def boxed(image, bbox):
    """ZwZ's released images: a red rectangle, width 5, around the box grown by 5% per side."""
    out = image.copy()
    x0, y0, x1, y1 = bbox
    dx, dy = 0.05 * (x1 - x0), 0.05 * (y1 - y0)
    ImageDraw.Draw(out).rectangle((x0 - dx, y0 - dy, x1 + dx, y1 + dy), outline="red", width=5)
    return out


@pytest.fixture(scope="module")
def zwz(tmp_path_factory):
    """A ZwZ-like source: parquet rows pointing at boxed JPEGs, clean originals in a separate folder."""
    root = tmp_path_factory.mktemp("zwz")
    (root / "images" / "part1").mkdir(parents=True)
    (root / "original_images").mkdir()
    rows = []
    for i in range(6):
        example = make_example(i, seed=3)
        x0, y0, x1, y1 = example["bbox"]
        bbox = [x0 + 0.4, y0 + 0.6, x1 - 0.3, y1 - 0.2]  # SAM3-style float boxes inside the tight box
        name = f"part1/img_{i}.jpg"
        boxed(example["image"], bbox).save(root / "images" / name, quality=95)
        example["image"].save(root / "original_images" / f"img_{i}.jpg", quality=95)
        rows.append(
            {
                "images": [f"images/{name}"],
                "problem": zwz_problem(example["prompt"][0]["content"].split("\n")[0]),
                "answer": example["answer"],
                "bbox": bbox,
                "status": "valid vqa",
            }
        )
    datasets.Dataset.from_list(rows).to_parquet(root / "train.parquet")
    return root


def zwz_config(root, tmp_path, **overrides):
    settings = dict(
        dataset=str(root / "train.parquet"),
        output_dir=str(tmp_path / "out"),
        source_format="zwz",
        image_dir=str(root),
        clean_image_dir=str(root / "original_images"),
        shard_size=2,
    )
    settings.update(overrides)
    return PrepareConfig(**settings)


def decoded(dataset):
    return [
        {k: (np.asarray(v).tobytes() if isinstance(v, Image.Image) else v) for k, v in row.items()} for row in dataset
    ]


# --- pure pieces ------------------------------------------------------------------------------------------------------


def test_clean_question_removes_the_red_box_sentence_only():
    assert clean_question(zwz_problem("What is the color of the star?")) == (
        f"What is the color of the star?\n\n{OPTIONS}"
    )
    assert (
        clean_question("Only focus on the object inside the red bounding box in the image to answer the question. Q?")
        == "Q?"
    )
    assert clean_question("No hint here.\nA. x") == "No hint here.\nA. x"


@pytest.mark.parametrize(
    "value,fmt,expected",
    [
        ([10.2, 20.7, 30.1, 40.0], "xyxy", (10, 20, 31, 40)),  # rounded outward: floor, floor, ceil, ceil
        ("(519.6,5.5,1854.7,2596.9)", "xyxy", (519, 5, 1855, 2597)),  # ZwZ's string form
        ("[1e1, 2E1, 3.0e1, 4e1]", "xyxy", (10, 20, 30, 40)),
        ([0.1, 0.25, 0.5, 0.75], "xyxy_norm", (200, 750, 1000, 2250)),  # x * 2000, y * 3000
        ([10, 20, 5.5, 7], "xywh", (10, 20, 16, 27)),  # x1 = 10 + 5.5 -> ceil 16; y1 = 27
        ([-1.5, 0, 2000.9, 3001.5], "xyxy", (0, 0, 2000, 3000)),  # within the 2 px tolerance: clipped
    ],
)
def test_parse_bbox_conventions(value, fmt, expected):
    assert parse_bbox(value, (2000, 3000), fmt) == expected


@pytest.mark.parametrize(
    "value,fmt,reason",
    [
        ([1, 2, 3], "xyxy", "bad_bbox"),
        ("no numbers", "xyxy", "bad_bbox"),
        ([0, 0, math.nan, 5], "xyxy", "bad_bbox"),
        ([10, 10, 10, 20], "xyxy", "empty_bbox"),
        ([10, 10, 5, 20], "xyxy", "empty_bbox"),
        ([10, 10, 0, 5], "xywh", "empty_bbox"),
        ([-10, 0, 50, 50], "xyxy", "bbox_outside_image"),
        ([10, 10, 105, 50], "xyxy", "bbox_outside_image"),
        ([150, 150, 160, 160], "xyxy", "bbox_outside_image"),
        ([10, 10, 500, 500], "xyxy_norm", "bad_bbox"),
    ],
)
def test_parse_bbox_rejects(value, fmt, reason):
    with pytest.raises(RejectedRow) as error:
        parse_bbox(value, (100, 100), fmt)
    assert error.value.reason == reason and isinstance(error.value, ValueError)


def test_row_seed_is_stable_and_distinct():
    assert row_seed(0, "a", "negative") == row_seed(0, "a", "negative")
    assert (
        len(
            {
                row_seed(0, "a", "negative"),
                row_seed(1, "a", "negative"),
                row_seed(0, "b", "negative"),
                row_seed(0, "a", "random"),
            }
        )
        == 4
    )
    # Pinned: the seed must not depend on the process (no salted hash()).
    assert row_seed(0, "train-00000000", "negative") == int.from_bytes(
        __import__("hashlib").sha256(b"0/train-00000000/negative").digest()[:8], "big"
    )


# --- ZwZ --------------------------------------------------------------------------------------------------------------


def test_zwz_rows_become_v_zero_rows_with_exact_crops(zwz, tmp_path):
    config = zwz_config(zwz, tmp_path, random_crop=True)
    source, _ = load_source(config)
    for index in range(len(source)):
        row = convert_row(source[index], index, config)
        clean = Image.open(zwz / "original_images" / f"img_{index}.jpg").convert("RGB")
        assert row["image"]["bytes"] == (zwz / "original_images" / f"img_{index}.jpg").read_bytes()  # clean, lossless
        x0, y0, x1, y1 = row["bbox"]
        crop = Image.open(io.BytesIO(row["crop"]["bytes"]))
        assert np.array_equal(np.asarray(crop), np.asarray(clean)[y0:y1, x0:x1])  # pixel for pixel
        # negative: the crop's size, from the 2x-downsampled image, away from the downsampled target
        negative = np.asarray(Image.open(io.BytesIO(row["negative_crop"]["bytes"])))
        box = negative_box(clean.size, row["bbox"], crop.size, factor=2, seed=row_seed(0, row["id"], "negative"))
        assert negative.shape[:2] == (crop.size[1], crop.size[0])
        assert np.array_equal(negative, np.asarray(downsample(clean, 2))[box[1] : box[3], box[0] : box[2]])
        tx0, ty0, tx1, ty1 = downsample_box(row["bbox"], 2)
        assert box[2] <= tx0 or box[0] >= tx1 or box[3] <= ty0 or box[1] >= ty1
        assert Image.open(io.BytesIO(row["random_crop"]["bytes"])).size == crop.size
        assert HINT not in row["prompt"][0]["content"] and OPTIONS in row["prompt"][0]["content"]
        assert row["id"] == f"train-{index:08d}" and row["answer"] in "ABCD"


def test_zwz_without_clean_images_is_refused_unless_allowed(zwz, tmp_path):
    with pytest.raises(ValueError, match="red box burned in"):
        PrepareConfig(dataset="x", output_dir="y", source_format="zwz")
    config = zwz_config(zwz, tmp_path, clean_image_dir=None, allow_boxed_images=True)
    row = convert_row(load_source(config)[0][0], 0, config)
    assert row["image"]["bytes"] == (zwz / "images" / "part1" / "img_0.jpg").read_bytes()


def test_negative_crops_are_reproducible_and_follow_the_seed(zwz, tmp_path):
    config = zwz_config(zwz, tmp_path)
    row = load_source(config)[0][1]
    first, again = convert_row(row, 1, config), convert_row(row, 1, config)
    other = convert_row(row, 1, zwz_config(zwz, tmp_path, seed=7))
    assert first["negative_crop"] == again["negative_crop"]
    assert first["negative_crop"] != other["negative_crop"]


# --- generic and crop sources -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generic_rows():
    rows = []
    for i in range(3):
        example = make_example(i, seed=5)
        x0, y0, x1, y1 = example["bbox"]
        w, h = example["image"].size
        rows.append(
            {
                "image": example["image"],
                "question": example["prompt"][0]["content"],
                "answer": example["answer"],
                "xyxy": [x0, y0, x1, y1],
                "norm": [x0 / w, y0 / h, x1 / w, y1 / h],
                "xywh": [x0, y0, x1 - x0, y1 - y0],
                "crop": example["crop"],
                "uid": f"u{i}",
            }
        )
    return rows


@pytest.mark.parametrize("fmt,column", [("xyxy", "xyxy"), ("xyxy_norm", "norm"), ("xywh", "xywh")])
def test_generic_box_conventions_give_the_same_rows(generic_rows, fmt, column):
    config = PrepareConfig(dataset="x", output_dir="y", bbox_column=column, bbox_format=fmt, id_column="uid")
    reference = PrepareConfig(dataset="x", output_dir="y", bbox_column="xyxy", id_column="uid")
    for i, row in enumerate(generic_rows):
        assert convert_row(row, i, config) == convert_row(row, i, reference)


def test_crop_source_keeps_the_given_crop(generic_rows):
    config = PrepareConfig(dataset="x", output_dir="y", source_format="crop", bbox_column="xyxy", crop_margin=0.5)
    row = convert_row(generic_rows[0], 0, config)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(row["crop"]["bytes"]))), np.asarray(generic_rows[0]["crop"])
    )
    assert Image.open(io.BytesIO(row["negative_crop"]["bytes"])).size == generic_rows[0]["crop"].size


def test_crop_margin_and_min_side(generic_rows):
    row = generic_rows[0]
    x0, y0, x1, y1 = row["xyxy"]
    config = PrepareConfig(dataset="x", output_dir="y", bbox_column="xyxy", crop_margin=0.5, crop_min_side=100)
    crop = Image.open(io.BytesIO(convert_row(row, 0, config)["crop"]["bytes"]))
    assert crop.size == (
        max(100, (x1 - x0) + 2 * math.ceil(0.5 * (x1 - x0))),
        max(100, (y1 - y0) + 2 * math.ceil(0.5 * (y1 - y0))),
    )


# --- the pipeline: bad rows, resume, parallelism ------------------------------------------------------------------------


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mixed_source(tmp_path_factory):
    """Good rows in odd image modes, and one row for every kind of bad row, as a parquet of image bytes."""
    root = tmp_path_factory.mktemp("mixed")
    base = make_example(0, seed=9)
    image, box = base["image"], base["bbox"]
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG")
    truncated = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]
    gray16 = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    rgba = image.convert("RGBA")
    cmyk = io.BytesIO()
    image.convert("CMYK").save(cmyk, format="JPEG")
    cases = {
        "good": (png_bytes(image), box, None),
        "cmyk": (cmyk.getvalue(), box, None),
        "rgba": (png_bytes(rgba), box, None),
        "gray16": (png_bytes(gray16), box, None),
        "gray": (png_bytes(image.convert("L")), box, None),
        "unreadable_image": (b"this is not an image", box, None),
        "truncated_image": (truncated, box, None),
        "missing_image": (None, box, None),
        "bbox_outside_image": (png_bytes(image), [400, 400, 600, 600], None),
        "empty_bbox": (png_bytes(image), [50, 50, 50, 80], None),
        "negative_area": (png_bytes(image), [80, 80, 50, 50], None),
        "bbox_too_large": (png_bytes(image), [0, 0, 300, 300], None),
        # a 240 px crop cannot fit in the 224 px downsampled image
        "no_room_for_negative": (png_bytes(image), [104, 104, 344, 344], None),
        "missing_bbox": (png_bytes(image), None, None),
        "missing_question": (png_bytes(image), box, "skip"),
        "too_large_image": (png_bytes(Image.new("RGB", (2000, 1000))), [10, 10, 20, 20], None),
    }
    rows = []
    for name, (data, bbox, question) in cases.items():
        rows.append(
            {
                "uid": name,
                "image": None if data is None else {"bytes": data, "path": None},
                "question": None if question == "skip" else base["prompt"][0]["content"],
                "bbox": bbox,
                "answer": "A",
            }
        )
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "bbox": datasets.List(datasets.Value("float64")),
            "answer": datasets.Value("string"),
        }
    )
    datasets.Dataset.from_list(rows, features=features).to_parquet(root / "mixed.parquet")
    return root / "mixed.parquet"


EXPECTED_REJECTS = {
    "unreadable_image": "unreadable_image",
    "truncated_image": "unreadable_image",
    "missing_image": "missing_field",
    "bbox_outside_image": "bbox_outside_image",
    "empty_bbox": "empty_bbox",
    "negative_area": "empty_bbox",
    "bbox_too_large": "bbox_too_large",
    "no_room_for_negative": "no_room_for_negative",
    "missing_bbox": "missing_field",
    "missing_question": "missing_field",
    "too_large_image": "image_too_large",
}


def mixed_config(source, tmp_path, **overrides):
    settings = dict(
        dataset=str(source),
        output_dir=str(tmp_path / "out"),
        id_column="uid",
        max_bbox_side=250,
        max_image_pixels=1_000_000,
        shard_size=4,
    )
    settings.update(overrides)
    return PrepareConfig(**settings)


def test_every_bad_row_is_recorded_with_its_reason_and_good_rows_are_kept(mixed_source, tmp_path):
    summary = prepare(mixed_config(mixed_source, tmp_path))
    out = tmp_path / "out"
    rejects = {json.loads(line)["id"]: json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()}
    assert {uid: r["reason"] for uid, r in rejects.items()} == EXPECTED_REJECTS
    dataset = datasets.load_from_disk(str(out / "dataset"))
    assert dataset.features == dataset_features(random_crop=False)
    assert dataset["id"] == ["good", "cmyk", "rgba", "gray16", "gray"]
    for row in dataset:
        assert row["image"].mode == "RGB" and row["crop"].mode == "RGB" and row["negative_crop"].mode == "RGB"
    # 16-bit gray 257 * v is scaled back to v, not clipped to 255
    gray = np.asarray(dataset[4]["image"])
    assert np.array_equal(np.asarray(dataset[3]["image"]), gray)
    assert summary["kept"] == 5 and summary["rejected"] == 11 and summary["source_rows"] == 16
    assert summary["rejected_by_reason"]["unreadable_image"] == 2
    card = (out / "README.md").read_text()
    assert "**5 kept**, 11 rejected" in card and "| `no_room_for_negative` | 1 |" in card


def test_a_run_that_rejects_every_row_reports_it_and_writes_no_dataset(zwz, tmp_path):
    config = zwz_config(zwz, tmp_path, max_bbox_side=1)
    summary = prepare(config)
    assert (summary["kept"], summary["rejected"], summary["rejected_by_reason"]) == (0, 6, {"bbox_too_large": 6})
    assert not (tmp_path / "out" / "dataset").exists()
    assert "**0 kept**, 6 rejected" in (tmp_path / "out" / "README.md").read_text()
    with pytest.raises(ValueError, match="every row was rejected"):
        pipeline.publish(zwz_config(zwz, tmp_path, max_bbox_side=1, push_to_hub=True, hub_dataset_id="me/x"), summary)


def test_token_limits_reject_long_prompts_and_counts_match_the_processor(tiny_processor_dir, generic_rows, tmp_path):
    from vzero_trl.processing import load_processor

    processor = load_processor(tiny_processor_dir)
    row = generic_rows[0]
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": row["image"]}, {"type": "text", "text": row["question"]}],
        }
    ]
    budget = processor.image_processor.size
    counted = prompt_tokens(processor, messages, budget["shortest_edge"], budget["longest_edge"])
    actual = processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert counted == len(actual["input_ids"][0])

    common = dict(
        dataset="x",
        output_dir="y",
        bbox_column="xyxy",
        processor=str(tiny_processor_dir),
        min_pixels=budget["shortest_edge"],
        max_pixels=budget["longest_edge"],
    )
    convert_row(row, 0, PrepareConfig(**common, max_student_tokens=counted, max_teacher_tokens=counted + 200))
    with pytest.raises(RejectedRow, match="student_prompt_too_long"):
        convert_row(row, 0, PrepareConfig(**common, max_student_tokens=counted - 1))
    with pytest.raises(RejectedRow, match="teacher_prompt_too_long"):
        convert_row(row, 0, PrepareConfig(**common, max_teacher_tokens=counted + 1))


@pytest.fixture(scope="module")
def tiny_processor_dir(tmp_path_factory):
    from vzero_trl.toy.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-proc"))


def test_an_interrupted_run_resumes_to_the_same_dataset(zwz, tmp_path, monkeypatch):
    reference = prepare(zwz_config(zwz, tmp_path / "uninterrupted"))

    calls = {"n": 0}
    real = pipeline.convert_row

    def crash_on_fourth_row(row, index, config):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # like a kill in the middle of the second shard
        return real(row, index, config)

    monkeypatch.setattr(pipeline, "convert_row", crash_on_fourth_row)
    config = zwz_config(zwz, tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        prepare(config)
    shards = tmp_path / "interrupted" / "out" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["00000"]
    first_shard = (shards / "00000" / "rejects.jsonl").stat()

    # A kill while a shard was being written leaves its half-written staging folder behind.
    (shards / "00001.tmp" / "data").mkdir(parents=True)
    (shards / "00001.tmp" / "data" / "data-00000-of-00001.arrow").write_bytes(b"half a shard")

    monkeypatch.setattr(pipeline, "convert_row", real)
    resumed = prepare(config)
    assert not (shards / "00001.tmp").exists()
    assert (shards / "00000" / "rejects.jsonl").stat().st_mtime_ns == first_shard.st_mtime_ns  # not redone
    assert sorted(p.name for p in shards.iterdir()) == ["00000", "00001", "00002"]
    assert {k: v for k, v in resumed.items() if k != "settings"} == {
        k: v for k, v in reference.items() if k != "settings"
    }
    a = datasets.load_from_disk(str(tmp_path / "uninterrupted" / "out" / "dataset"))
    b = datasets.load_from_disk(str(tmp_path / "interrupted" / "out" / "dataset"))
    assert decoded(a) == decoded(b) and len(a) == 6
    a, b = a.cast_column("image", datasets.Image(decode=False)), b.cast_column("image", datasets.Image(decode=False))
    assert a["image"] == b["image"]  # the same encoded bytes


def test_parallel_workers_give_the_same_dataset(zwz, tmp_path):
    prepare(zwz_config(zwz, tmp_path / "one"))
    prepare(zwz_config(zwz, tmp_path / "two", num_proc=2))
    a = datasets.load_from_disk(str(tmp_path / "one" / "out" / "dataset"))
    b = datasets.load_from_disk(str(tmp_path / "two" / "out" / "dataset"))
    assert decoded(a) == decoded(b)


def test_resuming_with_other_settings_is_refused(zwz, tmp_path):
    prepare(zwz_config(zwz, tmp_path, limit=2))
    with pytest.raises(ValueError, match=r"'seed': \(0, 1\)"):
        prepare(zwz_config(zwz, tmp_path, limit=2, seed=1))
    prepare(zwz_config(zwz, tmp_path, limit=2, num_proc=2))  # the worker count does not change rows


def test_bad_settings_fail_early():
    for overrides, message in [
        (dict(source_format="coco"), "source_format"),
        (dict(bbox_format="cxcywh"), "bbox_format"),
        (dict(shard_size=0), "shard_size"),
        (dict(max_bbox_side=5, min_bbox_side=10), "max_bbox_side"),
        (dict(max_student_tokens=100), "need `processor`"),
        (dict(push_to_hub=True), "hub_dataset_id"),
    ]:
        with pytest.raises(ValueError, match=message):
            PrepareConfig(dataset="x", output_dir="y", **overrides)


# --- publishing ---------------------------------------------------------------------------------------------------------


def run_with_hub(hub, home, code_or_args):
    import os
    import subprocess
    import sys

    command = (
        [sys.executable, *code_or_args] if isinstance(code_or_args, list) else [sys.executable, "-c", code_or_args]
    )
    env = {**os.environ, **hub.env(home)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=str(Path(__file__).parent.parent))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_script_pushes_to_a_hub_and_load_dataset_returns_identical_rows(fake_hub, mixed_source, tmp_path):
    out = tmp_path / "out"
    stdout = run_with_hub(
        fake_hub,
        tmp_path / "home",
        [
            "scripts/prepare_data.py",
            "--dataset",
            str(mixed_source),
            "--output_dir",
            str(out),
            "--id_column",
            "uid",
            "--max_bbox_side",
            "250",
            "--max_image_pixels",
            "1000000",
            "--shard_size",
            "4",
            "--push_to_hub",
            "--hub_dataset_id",
            "user/vzero-mixed",
            "--license",
            "apache-2.0",
        ],
    )
    assert "Kept 5 of 16 rows" in stdout and "unreadable_image: 2" in stdout

    stored = fake_hub.files("user/vzero-mixed")
    assert {"README.md", "rejects.jsonl", "summary.json"} <= stored.keys()
    assert any(name.endswith(".parquet") for name in stored)
    card = stored["README.md"].decode()
    assert "**5 kept**, 11 rejected" in card and "| `image_too_large` | 1 |" in card
    metadata = card.split("---")[1]
    assert "dataset_info:" in metadata and "configs:" in metadata  # what push_to_hub wrote is kept
    assert "license: apache-2.0" in metadata and "- v-zero" in metadata
    assert stored["rejects.jsonl"] == (out / "rejects.jsonl").read_bytes()
    assert 'datasets.load_dataset("user/vzero-mixed", split="train")' in card
    # No local path reaches the Hub: the source and output folder are named by their last component only.
    for public in (card, stored["summary.json"].decode()):
        assert str(tmp_path) not in public and str(mixed_source.parent) not in public
    assert "built from `mixed.parquet`" in card
    assert json.loads(stored["summary.json"])["settings"]["output_dir"] == "out"

    dumped = tmp_path / "loaded.pkl"
    run_with_hub(
        fake_hub,
        tmp_path / "home2",
        (
            "import pickle, numpy as np, datasets\n"
            "ds = datasets.load_dataset('user/vzero-mixed', split='train')\n"
            "rows = [{k: (np.asarray(v).tobytes() if hasattr(v, 'mode') else v) for k, v in r.items()} for r in ds]\n"
            f"pickle.dump(rows, open({str(dumped)!r}, 'wb'))\n"
        ),
    )
    import pickle

    assert pickle.loads(dumped.read_bytes()) == decoded(datasets.load_from_disk(str(out / "dataset")))


# --- issue 13: sources and rows that used to give wrong results or crash -------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def jsonl_source(tmp_path):
    """Eight good rows as JSON Lines pointing at PNG files."""
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(8):
        example = make_example(i, seed=4)
        example["image"].save(tmp_path / "img" / f"{i}.png")
        rows.append({"image": f"{i}.png", "question": "What color?", "bbox": example["bbox"], "answer": "A"})
    return tmp_path, rows


def jsonl_config(root, **overrides):
    settings = dict(dataset=str(root / "rows.jsonl"), output_dir=str(root / "out"), image_dir=str(root / "img"))
    settings.update(overrides)
    return PrepareConfig(**settings)


def test_exif_rotated_jpeg_is_stored_upright_and_its_box_and_crop_agree(tmp_path):
    # Stored 120x80 with tag 6 ("rotate 90 degrees clockwise to display"): `datasets` decodes it as 80x120, and the box
    # is given in that upright frame. The stored image, the box and the crop must all be in it.
    stored = make_example(0, seed=2, canvas_size=(120, 80))["image"]
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "img").mkdir()
    stored.save(tmp_path / "img" / "rotated.jpg", quality=95, exif=exif)
    box = [10, 70, 40, 100]  # lies outside the stored 120x80 grid: only valid upright
    write_jsonl(tmp_path / "rows.jsonl", [{"image": "rotated.jpg", "question": "What color?", "bbox": box}])
    summary = prepare(jsonl_config(tmp_path, negative_factor=1))
    assert (summary["kept"], summary["rejected"]) == (1, 0)
    row = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))[0]
    upright = Image.open(tmp_path / "img" / "rotated.jpg").transpose(Image.Transpose.ROTATE_270).convert("RGB")
    assert row["image"].size == (80, 120) and row["bbox"] == box
    assert np.array_equal(np.asarray(row["image"]), np.asarray(upright))
    assert np.array_equal(np.asarray(row["crop"]), np.asarray(row["image"].crop(box)))


def test_rgb_png_with_a_colour_key_is_stored_as_its_crops_see_it(tmp_path):
    # An RGB PNG whose tRNS chunk makes (0, 0, 0) transparent: the crops are composited onto white, so the stored
    # image must show white there too, not the black its original bytes decode to.
    image = np.full((80, 80, 3), 200, np.uint8)
    image[10:30, 10:30] = 0
    (tmp_path / "img").mkdir()
    Image.fromarray(image).save(tmp_path / "img" / "key.png", transparency=(0, 0, 0))
    write_jsonl(tmp_path / "rows.jsonl", [{"image": "key.png", "question": "What color?", "bbox": [5, 5, 35, 35]}])
    prepare(jsonl_config(tmp_path, negative_factor=1))
    row = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))[0]
    assert np.asarray(row["image"].convert("RGB"))[20, 20].tolist() == [255, 255, 255]
    assert np.array_equal(np.asarray(row["crop"]), np.asarray(row["image"].convert("RGB").crop((5, 5, 35, 35))))


def test_extreme_aspect_ratios_are_rejected_with_a_reason_even_with_token_limits(tiny_processor_dir):
    image = make_example(0, seed=1, canvas_size=(1000, 1000))["image"]
    row = {"image": image, "question": "What color?", "bbox": [10, 10, 460, 12]}  # a 450x2 box
    limits = dict(processor=str(tiny_processor_dir), max_student_tokens=10**6, max_teacher_tokens=10**6)
    for config in (PrepareConfig(dataset="x", output_dir="y"), PrepareConfig(dataset="x", output_dir="y", **limits)):
        with pytest.raises(RejectedRow, match=r"positive crop 450x2 has an aspect ratio of 225.0:1") as error:
            convert_row(row, 0, config)
        assert error.value.reason == "extreme_aspect_ratio"
    wide = {"image": Image.new("RGB", (1000, 4)), "question": "What color?", "bbox": [0, 0, 4, 4]}
    with pytest.raises(RejectedRow, match=r"image 1000x4 has an aspect ratio of 250.0:1"):
        convert_row(wide, 0, PrepareConfig(dataset="x", output_dir="y"))
    convert_row(row, 0, PrepareConfig(dataset="x", output_dir="y", crop_min_side=3))  # 450x3: 150:1 is fine


@pytest.mark.parametrize("fmt", ["xyxy", "xywh"])
def test_normalised_boxes_read_as_pixels_are_rejected_saying_which_format_to_use(fmt):
    with pytest.raises(RejectedRow, match="bbox_format='xyxy_norm'") as error:
        parse_bbox([0.1, 0.2, 0.5, 0.6], (640, 480), fmt)
    assert error.value.reason == "normalised_bbox"


@pytest.mark.parametrize("fmt", ["xyxy", "xywh"])
def test_a_tiny_image_keeps_its_pixel_box(fmt):
    # A whole pixel of a 2x2 image used to be rejected as `normalised_bbox`, with advice to use `xyxy_norm`.
    assert parse_bbox([1, 0, 2, 1] if fmt == "xyxy" else [1, 0, 1, 1], (2, 2), fmt) == (1, 0, 2, 1)
    assert parse_bbox([0, 0, 1, 1], (4, 3), fmt) == (0, 0, 1, 1)
    with pytest.raises(RejectedRow, match=r"at most the corner pixel of the 5x4 image.*bbox_format='xyxy_norm'"):
        parse_bbox([0, 0, 1, 1], (5, 4), fmt)  # a quarter of a side or less: normalised
    with pytest.raises(RejectedRow, match=r"corner pixel of the 2x2 image"):
        parse_bbox([0.5, 0, 1, 1], (2, 2), fmt)  # fractions are not pixels


def test_crop_margin_error_names_the_value():
    with pytest.raises(ValueError, match=r"`crop_margin` must be >= 0, got -0.5"):
        PrepareConfig(dataset="x", output_dir="y", crop_margin=-0.5)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_source_that_grew_since_the_last_run_is_refused_not_half_converted(jsonl_source, fmt):
    root, rows = jsonl_source
    path = root / f"rows.{fmt}"

    def write(rows):
        if fmt == "jsonl":
            write_jsonl(path, rows)
        else:
            datasets.Dataset.from_list(rows).to_parquet(path)

    write(rows[:6])
    config = jsonl_config(root, dataset=str(path), shard_size=4)
    assert prepare(config)["kept"] == 6
    prepare(config)  # unchanged: reassembled as it was
    write(rows)
    with pytest.raises(ValueError, match=r"changed since .* 6 rows then, 8 now"):
        prepare(config)
    summary = prepare(jsonl_config(root, dataset=str(path), shard_size=4, output_dir=str(root / "fresh")))
    assert summary["kept"] + summary["rejected"] == summary["source_rows"] == 8 and summary["kept"] == 8


def test_each_malformed_jsonl_line_is_a_rejected_row_naming_its_line(jsonl_source):
    root, rows = jsonl_source
    good = [json.dumps(row) for row in rows[:3]]
    lines = [
        good[0],
        "[1, 2, 3]",  # line 2: not an object
        "",  # line 3: blank, not a row
        good[1][: len(good[1]) // 2],  # line 4: cut short
        '{"image": "2.png", "question": "What \\ud800 color?", "bbox": [1, 2, 30, 40]}',  # line 5: a lone surrogate
        good[2],
    ]
    (root / "rows.jsonl").write_text("\n".join(lines) + "\n")
    summary = prepare(jsonl_config(root))
    assert (summary["source_rows"], summary["kept"], summary["rejected"]) == (5, 2, 3)
    rejects = [json.loads(line) for line in (root / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["reason"]) for r in rejects] == [(1, "malformed_line")] * 1 + [
        (2, "malformed_line"),
        (3, "malformed_line"),
    ]
    assert "rows.jsonl line 2 holds a JSON list, not an object" in rejects[0]["message"]
    assert "rows.jsonl line 4 is not valid JSON" in rejects[1]["message"]
    assert "rows.jsonl line 5 holds a string that is not valid Unicode" in rejects[2]["message"]
    assert datasets.load_from_disk(str(root / "out" / "dataset"))["id"] == ["train-00000000", "train-00000004"]


def test_an_empty_source_is_a_clear_error(tmp_path):
    (tmp_path / "rows.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"rows.jsonl \(split 'train'\) has no rows: there is nothing to prepare"):
        prepare(jsonl_config(tmp_path))


def test_open_dataset_names_the_splits_a_local_source_has(tmp_path):
    rows = make_dataset(3, seed=0).select_columns(["id", "answer"])
    datasets.DatasetDict(train=rows, test=rows.select([0])).save_to_disk(tmp_path / "split")
    rows.save_to_disk(tmp_path / "unsplit")
    rows.to_parquet(tmp_path / "rows.parquet")
    assert local_splits(str(tmp_path / "split")) == ["train", "test"]
    assert local_splits(str(tmp_path / "unsplit")) == local_splits(str(tmp_path / "rows.parquet")) == []
    assert local_splits("org/dataset") is None  # a Hub id: `datasets` checks its split names
    assert len(open_dataset(str(tmp_path / "split"), split="test")) == 1
    # A DatasetDict folder without the split used to raise a bare KeyError.
    with pytest.raises(ValueError, match=r"has the splits \['train', 'test'\], not 'validation'"):
        open_dataset(str(tmp_path / "split"), split="validation")
    # A source without splits is the train split; it used to come back whole under any split name.
    for unsplit in ("unsplit", "rows.parquet"):
        assert len(open_dataset(str(tmp_path / unsplit))) == 3
        with pytest.raises(
            ValueError, match=r"one dataset without splits, read as the 'train' split; it has no 'test'"
        ):
            open_dataset(str(tmp_path / unsplit), split="test")


def test_duplicate_ids_are_rejected_naming_the_first_row(jsonl_source):
    root, rows = jsonl_source
    for row, uid in zip(rows, ["a", "b", "a", "c", "b", "d", "e", "f"], strict=True):
        row["uid"] = uid
    write_jsonl(root / "rows.jsonl", rows)
    summary = prepare(jsonl_config(root, id_column="uid", shard_size=3, num_proc=2))
    rejects = [json.loads(line) for line in (root / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["id"], r["reason"]) for r in rejects] == [
        (2, "a", "duplicate_id"),
        (4, "b", "duplicate_id"),
    ]
    assert "is already row 0's" in rejects[0]["message"] and "is already row 1's" in rejects[1]["message"]
    assert (summary["kept"], summary["rejected"]) == (6, 2)


def test_a_missing_id_column_is_an_error(zwz, tmp_path):
    with pytest.raises(ValueError, match=r"`id_column` 'uid' is not a column of .*'problem'"):
        prepare(zwz_config(zwz, tmp_path, id_column="uid"))


def test_a_failed_first_run_does_not_block_the_corrected_command(zwz, tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare(zwz_config(zwz, tmp_path, dataset=str(zwz / "trian.parquet")))
    assert prepare(zwz_config(zwz, tmp_path))["kept"] == 6


def run_script(*args):
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    command = [sys.executable, "scripts/prepare_data.py", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=str(root), timeout=300)


def test_the_script_fails_with_the_reject_summary_when_every_row_is_rejected(zwz, tmp_path):
    config = zwz_config(zwz, tmp_path, max_bbox_side=1)
    flags = ["--source_format", "zwz", "--image_dir", config.image_dir, "--clean_image_dir", config.clean_image_dir]
    result = run_script("--dataset", config.dataset, "--output_dir", config.output_dir, *flags, "--max_bbox_side", "1")
    assert result.returncode == 1
    assert "Every one of the 6 rows was rejected (bbox_too_large: 6), so no dataset was written" in result.stderr
    assert "Kept" not in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["kept"] + summary["rejected"] == summary["source_rows"] == 6


def test_killing_the_main_process_stops_its_workers(zwz, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    pids.mkdir()
    config = zwz_config(zwz, tmp_path, num_proc=2, shard_size=1)
    code = (
        "import os, time\n"
        "from vzero_trl.prepare import pipeline\n"
        "from vzero_trl.prepare.convert import PrepareConfig\n"
        "def stuck(row, index, config):\n"
        f"    open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close()\n"
        "    time.sleep(300)\n"
        "pipeline.convert_row = stuck\n"
        f"pipeline.prepare(PrepareConfig(**{ {k: v for k, v in vars(config).items()}!r}))\n"
    )
    main = subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).parent.parent))
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and main.poll() is None:
            time.sleep(0.2)
            workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, "the workers never started"
        main.send_signal(signal.SIGKILL)
        main.wait()

        def alive(pid):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return False
            return state != "Z"

        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers)
    finally:
        main.kill()
        for pid in workers:  # only the workers this test started, if the fix failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_local_card_load_hint_works_and_the_card_hides_absolute_paths(zwz, tmp_path):
    prepare(zwz_config(zwz, tmp_path))
    card = (tmp_path / "out" / "README.md").read_text()
    hint = re.search(r"`dataset = (datasets\.load_from_disk\(\"[^\"]+\"\))`", card.replace("\n", " "))
    assert len(eval(hint.group(1), {"datasets": datasets})) == 6
    settings = card.split("## Settings")[1]
    assert str(tmp_path) not in settings and str(zwz) not in settings
    assert "dataset: train.parquet" in settings and "clean_image_dir: original_images" in settings
    assert "built from `train.parquet`" in card
