"""Teacher views, dataset checks and the vision-token filter."""

import datasets
import pytest
from PIL import Image

from vzero_trl.schema import dataset_features
from vzero_trl.views import check_dataset_columns, check_row, student_messages, teacher_messages, truncate_at_tokens


def row(**overrides):
    values = dict(
        id="r1",
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What color is the star?"}],
        image=Image.new("RGB", (64, 48)),
        crop=Image.new("RGB", (16, 16), "red"),
        negative_crop=Image.new("RGB", (16, 16), "blue"),
    )
    values.update(overrides)
    return values


def test_teacher_view_appends_the_evidence_to_the_last_user_turn():
    example = row()
    prompt = student_messages(example)
    assert prompt[1]["content"] == [
        {"type": "image", "image": example["image"]},
        {"type": "text", "text": "What color is the star?"},
    ]
    view = teacher_messages(prompt, example["crop"], "PRE", "POST")
    assert view[0] == prompt[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert view[1]["content"] == [
        {"type": "image", "image": example["image"]},
        {"type": "text", "text": "What color is the star?"},
        {"type": "text", "text": "PRE"},
        {"type": "image", "image": example["crop"]},
        {"type": "text", "text": "POST"},
    ]
    assert len(prompt[1]["content"]) == 2  # the student's prompt is left untouched
    negative = teacher_messages(prompt, example["negative_crop"], "PRE", "POST")
    assert negative[1]["content"][3]["image"] is example["negative_crop"]
    assert (
        negative[1]["content"][:3] == view[1]["content"][:3] and negative[1]["content"][4:] == view[1]["content"][4:]
    )


def test_images_column_and_multi_turn_prompts():
    first, second = Image.new("RGB", (8, 8)), Image.new("RGB", (9, 9))
    example = row(
        prompt=[
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
        images=[first, second],
    )
    del example["image"]
    prompt = student_messages(example)
    assert [part.get("image") for part in prompt[0]["content"]] == [first, second, None]
    view = teacher_messages(prompt, example["crop"], "P", "S")
    assert view[0] == prompt[0] and view[2]["content"][-2]["image"] is example["crop"]


def test_check_row_accepts_a_good_row_and_names_bad_fields():
    check_row(row(), ["crop", "negative_crop"], 0)
    with pytest.raises(ValueError, match=r"row id='r1': column 'negative_crop' must hold a PIL image, got str"):
        check_row(row(negative_crop="neg.png"), ["crop", "negative_crop"], 0)
    with pytest.raises(ValueError, match=r"row 3 of the batch: column 'image' must hold a PIL image, got NoneType"):
        example = row(image=None)
        del example["id"]
        check_row(example, ["crop"], 3)
    with pytest.raises(ValueError, match="no user turn"):
        check_row(row(prompt=[{"role": "system", "content": "x"}]), ["crop"], 0)
    with pytest.raises(ValueError, match="must be conversational"):
        check_row(row(prompt="What color?"), ["crop"], 0)


def test_check_row_names_the_row_with_no_image_or_an_image_no_processor_can_resize():
    example = row(images=[])
    del example["image"]
    with pytest.raises(ValueError, match=r"row id='r1': column 'images' must be a non-empty list of images, got \[\]"):
        check_row(example, ["crop"], 0)
    with pytest.raises(
        ValueError, match=r"row id='r1': column 'crop' holds a 450x2 image, more elongated than the 200:1"
    ):
        check_row(row(crop=Image.new("RGB", (450, 2))), ["crop"], 0)
    check_row(row(crop=Image.new("RGB", (400, 2))), ["crop"], 0)  # 200:1 is what Qwen-VL still accepts


def test_check_dataset_columns():
    image = Image.new("RGB", (4, 4))
    good = (
        datasets.Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": "q"}]],
                "image": [image],
                "crop": [image],
                "negative_crop": [image],
            }
        )
        .cast_column("image", datasets.Image())
        .cast_column("crop", datasets.Image())
        .cast_column("negative_crop", datasets.Image())
    )
    check_dataset_columns(good, ["crop", "negative_crop"], "train_dataset")
    check_dataset_columns({"a": good}, ["crop"], "eval_dataset")
    check_dataset_columns(good.to_iterable_dataset(), ["crop", "negative_crop"], "train_dataset")
    check_dataset_columns(None, ["crop"], "eval_dataset")
    with pytest.raises(ValueError, match=r"eval_dataset\['a'\] is missing the column\(s\) \['zoom'\]"):
        check_dataset_columns({"a": good}, ["zoom"], "eval_dataset")
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['image'\]"):
        check_dataset_columns(good.remove_columns("image"), ["crop"], "train_dataset")
    as_paths = good.remove_columns("crop").add_column("crop", ["a.png"])
    with pytest.raises(
        ValueError, match=r"column 'crop' has feature type .*cast_column\('crop', datasets.Image\(\)\)"
    ):
        check_dataset_columns(as_paths, ["crop"], "train_dataset")


def test_the_schema_passes_the_checks_under_every_evidence_setting():
    # One schema (`vzero_trl.schema`) is written by data preparation and the synthetic data; the trainer's checks
    # accept it as the default config reads it and as the random-evidence ablation reads it.
    def empty(random_crop):
        features = dataset_features(random_crop)
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)

    for random_crop in (False, True):
        check_dataset_columns(empty(random_crop), ["crop", "negative_crop"], "train_dataset")
    ablation = ["random_crop", "negative_crop"]  # `crop_column="random_crop"`
    check_dataset_columns(empty(True), ablation, "train_dataset")
    with pytest.raises(ValueError, match="random_crop"):
        check_dataset_columns(empty(False), ablation, "train_dataset")


def test_truncate_at_tokens():
    completions = [[5, 6, 7], [5, 99, 7], [98, 5], []]
    cut, num_cut = truncate_at_tokens(completions, {98, 99}, fill_id=2)
    assert cut == [[5, 6, 7], [5], [2], []]
    assert num_cut == 2
    assert completions[1] == [5, 99, 7]  # input untouched


def test_crop_only_view_puts_the_crop_in_place_of_the_full_image():
    example = row()
    prompt = student_messages(example)
    view = teacher_messages(prompt, example["crop"], "", "", layout="crop_only")
    assert view[0] == prompt[0]
    assert view[1]["content"] == [
        {"type": "image", "image": example["crop"]},
        {"type": "text", "text": "What color is the star?"},
    ]
    assert prompt[1]["content"][0]["image"] is example["image"]  # the student's prompt is left untouched
    framed = teacher_messages(prompt, example["negative_crop"], "PRE", "POST", layout="crop_only")
    assert framed[1]["content"] == [
        {"type": "text", "text": "PRE"},
        {"type": "image", "image": example["negative_crop"]},
        {"type": "text", "text": "POST"},
        {"type": "text", "text": "What color is the star?"},
    ]
    with pytest.raises(ValueError, match="one full image"):
        two = student_messages(row(images=[example["image"], example["image"]]))
        teacher_messages(two, example["crop"], "", "", layout="crop_only")


def test_crop_only_view_renders_as_the_student_prompt_with_the_crop(tiny_models):
    """Rendered by the chat template: with empty texts, the teacher's text is the student's byte for byte."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models[0])
    example = row()
    prompt = student_messages(example)
    render = lambda messages: processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)  # noqa: E731
    assert render(teacher_messages(prompt, example["crop"], "", "", layout="crop_only")) == render(prompt)
    framed = render(teacher_messages(prompt, example["crop"], "Zoomed in: ", "\n", layout="crop_only"))
    assert framed == render(prompt).replace("<|vision_start|>", "Zoomed in: <|vision_start|>", 1).replace(
        "<|vision_end|>", "<|vision_end|>\n", 1
    )


# --- images read as preparation reads them ----------------------------------------------------------------------------


def test_check_row_converts_images_as_prepare_data_does():
    # Transparent pixels whose stored colour is black: the processor's convert("RGB") showed them black, prepare_data
    # (and so the data the crop was cut from) shows them white.
    crop = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    crop.putpixel((0, 0), (255, 0, 0, 255))
    deep = Image.new("I;16", (8, 8))
    deep.putpixel((0, 0), 65535)
    deep.putpixel((1, 0), 32896)  # 128 * 257
    example = row(crop=crop, image=deep)
    check_row(example, ["crop", "negative_crop"], 0)
    assert example["crop"].mode == "RGB" and example["image"].mode == "RGB"
    assert example["crop"].getpixel((0, 0)) == (255, 0, 0) and example["crop"].getpixel((5, 5)) == (255, 255, 255)
    assert example["image"].getpixel((0, 0)) == (255, 255, 255) and example["image"].getpixel((1, 0)) == (128,) * 3
    rgb = row()
    original = rgb["crop"]
    check_row(rgb, ["crop"], 0)
    assert rgb["crop"] is original  # an RGB image is left as it is

    listed = row(images=[Image.new("LA", (8, 8), (10, 0))])
    del listed["image"]
    check_row(listed, ["crop"], 0)
    assert listed["images"][0].getpixel((0, 0)) == (255, 255, 255)


def test_check_row_names_a_row_whose_image_mode_cannot_be_converted():
    with pytest.raises(
        ValueError, match=r"row id='r1': column 'negative_crop' holds an image that cannot be converted.*'La'"
    ):
        check_row(row(negative_crop=Image.new("La", (8, 8))), ["crop", "negative_crop"], 0)


def test_rows_are_checked_against_the_crop_only_teacher_view():
    two = row(images=[Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))])
    del two["image"]
    check_row(dict(two), ["crop"], 0)  # the appended crop works with any number of images
    with pytest.raises(
        ValueError, match=r"row id='r1': it has 2 images, and `teacher_view: crop_only`.*full_and_crop"
    ):
        check_row(two, ["crop"], 0, teacher_view="crop_only")

    image = Image.new("RGB", (4, 4))
    data = datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "prompt": [[{"role": "user", "content": "q"}]] * 3,
            "images": [[image], [image, image], []],
            "crop": [image] * 3,
        }
    )
    check_dataset_columns(data, ["crop"], "train_dataset")
    check_dataset_columns(data.select([0]), ["crop"], "train_dataset", teacher_view="crop_only")
    with pytest.raises(
        ValueError,
        match=r"train_dataset row id='b' \(2 row\(s\) in all\): it has 2 images, and `teacher_view: crop_only`",
    ):
        check_dataset_columns(data, ["crop"], "train_dataset", teacher_view="crop_only")
