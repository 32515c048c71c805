"""The student and teacher views of a V-Zero example, and the checks that keep bad rows out of training.

The student sees the full image and the question. Each teacher view takes one of two layouts:

- `"full_and_crop"` (paper Fig. 4): the student's prompt with the evidence appended to its last user turn,
  `[full image, question, prefix, crop image, suffix]`;
- `"crop_only"` (Vision-OPD): the crop takes the full image's place, `[prefix, crop image, suffix, question]`; with
  empty prefix and suffix (the default) the teacher's text is the student's, byte for byte.

The positive and negative views differ only in the crop image, so the gap between their log-probabilities measures how
much the rollout depends on the question-relevant region.

Dataset schema (one row per prompt): `prompt` (conversational, one user turn with the question text), `image` (the full
image; or `images`, a list), the positive crop and the negative crop (column names from the config); optional `bbox`,
`answer` (evaluation only, never read by training) and `id` (named in error messages; rows are never grouped by it).
[`~vzero_trl.schema.dataset_features`] writes it down as `datasets` features.
"""

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import datasets
import pyarrow.compute as pc
from PIL import Image
from trl.data_utils import is_conversational, prepare_multimodal_messages

from .images import MAX_ASPECT_RATIO, BadImage, to_rgb


# Paper Fig. 4: the teacher sees the full image and the question, then this sentence with the crop image between the
# prefix and the suffix. The paper does not say how the pieces are joined; we start the sentence on a new line.
TEACHER_CROP_PREFIX = "\nThe next image is a cropped view of the target image from the original image: "
TEACHER_CROP_SUFFIX = (
    ". Use the crop as focused visual evidence for the relevant object or region, while keeping the original image as "
    "context."
)


def student_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """
    The student's multimodal prompt: the row's conversation with its image(s) inserted before the first user text,
    exactly as `trl.DistillationTrainer` builds it.

    Args:
        row (`dict`):
            A dataset row with `prompt` and `image` (one image) or `images` (a list).

    Returns:
        `list[dict]`: messages whose contents are lists of `{"type": "text" | "image", ...}` blocks.
    """
    images = row["images"] if "images" in row else [row["image"]]
    return prepare_multimodal_messages(row["prompt"], images=images)


def teacher_messages(
    student_prompt: list[dict[str, Any]],
    crop: Image.Image,
    prefix: str,
    suffix: str,
    layout: Literal["full_and_crop", "crop_only"] = "full_and_crop",
) -> list[dict[str, Any]]:
    """
    A teacher view: the student's multimodal prompt with `[prefix, crop, suffix]` appended to its last user turn
    (`"full_and_crop"`), or put in place of its one image (`"crop_only"`; empty texts are left out).

    Args:
        student_prompt (`list[dict]`):
            Output of [`student_messages`]. It is not modified.
        crop (`PIL.Image.Image`):
            Evidence image, positive or negative.
        prefix (`str`):
            Text before the crop image.
        suffix (`str`):
            Text after the crop image.
        layout (`str`, *optional*, defaults to `"full_and_crop"`):
            `"full_and_crop"` or `"crop_only"`, see the module docstring. `"crop_only"` needs a prompt with exactly one
            image.

    Returns:
        `list[dict]`: the teacher's messages.
    """
    messages = copy.copy(student_prompt)
    if layout == "crop_only":
        where = [
            (i, k) for i, m in enumerate(messages) for k, block in enumerate(m["content"]) if block["type"] == "image"
        ]
        if len(where) != 1:
            raise ValueError(
                f"The crop-only teacher view replaces the one full image, but the prompt has {len(where)}."
            )
        (i, k), content = where[0], messages[where[0][0]]["content"]
        evidence = [
            {"type": "text", "text": prefix},
            {"type": "image", "image": crop},
            {"type": "text", "text": suffix},
        ]
        evidence = [block for block in evidence if block["type"] == "image" or block["text"]]
        messages[i] = {**messages[i], "content": [*content[:k], *evidence, *content[k + 1 :]]}
        return messages
    last_user = max(i for i, message in enumerate(messages) if message["role"] == "user")
    evidence = [{"type": "text", "text": prefix}, {"type": "image", "image": crop}, {"type": "text", "text": suffix}]
    messages[last_user] = {**messages[last_user], "content": [*messages[last_user]["content"], *evidence]}
    return messages


def check_dataset_columns(
    dataset: Any,
    crop_columns: Sequence[str],
    name: str,
    *,
    teacher_view: Literal["full_and_crop", "crop_only"] = "full_and_crop",
) -> None:
    """
    Fail before training when a dataset lacks a column V-Zero reads, stores images in a non-image column, or (for
    `teacher_view="crop_only"`, map-style datasets) holds a row with other than one image, named with the setting.

    Args:
        dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict` of them):
            The train or eval dataset, or `None`.
        crop_columns (`Sequence[str]`):
            Evidence columns that must exist (the positive, and the negative unless gating is off).
        name (`str`):
            How the error calls the dataset, e.g. `"train_dataset"`.
        teacher_view (`str`, *optional*, defaults to `"full_and_crop"`):
            The configured `teacher_view`.
    """
    if dataset is None:
        return
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            check_dataset_columns(value, crop_columns, f"{name}[{key!r}]", teacher_view=teacher_view)
        return
    columns = dataset.column_names
    if columns is None:  # a streaming dataset whose features are unknown until read: rows are checked per batch
        return
    missing = [c for c in ("prompt", *crop_columns) if c not in columns]
    if "image" not in columns and "images" not in columns:
        missing.append("image")
    if missing:
        raise ValueError(
            f"{name} is missing the column(s) {missing}; it has {sorted(columns)}. V-Zero needs `prompt`, `image` (or "
            f"`images`) and the evidence columns {list(crop_columns)}: set `crop_column` / `negative_crop_column` to "
            "the names your dataset uses, or build the columns (see the README's dataset schema)."
        )
    features = dataset.features
    for column in [*crop_columns, "image"]:
        if column in columns and features is not None and not isinstance(features[column], datasets.Image):
            raise ValueError(
                f"{name} column {column!r} has feature type {features[column]}, but V-Zero needs images there. If it "
                f"holds paths or bytes, cast it: `dataset = dataset.cast_column({column!r}, datasets.Image())`."
            )
    if teacher_view == "crop_only" and "images" in columns and isinstance(dataset, datasets.Dataset):
        # Counted from the Arrow lists, without decoding an image; streamed rows are checked by `check_row`.
        ids = dataset["id"] if "id" in columns else range(len(dataset))
        images = dataset.select_columns(["images"]).with_format("arrow")
        counts = [
            n for batch in images.iter(batch_size=1000) for n in pc.list_value_length(batch["images"]).to_pylist()
        ]
        bad = [(row_id, n) for row_id, n in zip(ids, counts, strict=True) if n != 1]
        if bad:
            row_id, count = bad[0]
            where = f"row id={row_id!r}" if "id" in columns else f"row {row_id}"
            raise ValueError(
                f"{name} {where} ({len(bad)} row(s) in all): {_CROP_ONLY_NEEDS_ONE_IMAGE.format(count=count)}"
            )


def check_row(
    row: dict[str, Any],
    crop_columns: Iterable[str],
    index: int,
    *,
    teacher_view: Literal["full_and_crop", "crop_only"] = "full_and_crop",
) -> None:
    """
    Reject a row the teacher cannot replay, naming the row and the field, and convert its images in place to 8-bit RGB
    with [`~vzero_trl.images.to_rgb`], as `scripts/prepare_data.py` converts them: the processor's own conversion is
    lossy for some modes (it drops transparency, clips 16-bit values), and the views must show what the data holds.

    Args:
        row (`dict`):
            A raw dataset row as the trainer receives it. Its images are replaced by their RGB conversions.
        crop_columns (`Iterable[str]`):
            Evidence columns to check.
        index (`int`):
            Position of the row in its batch, used in the message when the row has no `id`.
        teacher_view (`str`, *optional*, defaults to `"full_and_crop"`):
            The configured `teacher_view`; `"crop_only"` needs exactly one image per row.
    """
    where = f"row id={row['id']!r}" if "id" in row else f"row {index} of the batch"
    if not is_conversational(row):
        raise ValueError(
            f"{where}: `prompt` must be conversational, e.g. [{{'role': 'user', 'content': question}}], got "
            f"{row.get('prompt')!r:.200}."
        )
    if not any(message["role"] == "user" for message in row["prompt"]):
        raise ValueError(f"{where}: `prompt` has no user turn to attach the evidence to.")
    images = row["images"] if "images" in row else [row.get("image")]
    if not isinstance(images, list) or not images:
        raise ValueError(
            f"{where}: column 'images' must be a non-empty list of images, got {images!r:.100}. V-Zero needs the full "
            "image the question is about: drop rows without one."
        )
    if teacher_view == "crop_only" and len(images) != 1:
        raise ValueError(f"{where}: {_CROP_ONLY_NEEDS_ONE_IMAGE.format(count=len(images))}")
    converted = [_rgb_image(where, "image", image) for image in images]
    if "images" in row:
        row["images"] = converted
    else:
        row["image"] = converted[0]
    for column in crop_columns:
        row[column] = _rgb_image(where, column, row.get(column))


_CROP_ONLY_NEEDS_ONE_IMAGE = (
    "it has {count} images, and `teacher_view: crop_only` puts the crop in place of the one full image. Use "
    "`teacher_view: full_and_crop`, or keep one image per row."
)


def _rgb_image(where: str, column: str, value: Any) -> Image.Image:
    if not isinstance(value, Image.Image):
        raise ValueError(
            f"{where}: column {column!r} must hold a PIL image, got {type(value).__name__}. Store images in an "
            f"`datasets.Image()` column (cast paths or bytes with `cast_column`) and drop rows without one."
        )
    width, height = value.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(
            f"{where}: column {column!r} holds a {width}x{height} image, more elongated than the "
            f"{MAX_ASPECT_RATIO:g}:1 vision processors accept. Drop the row, or prepare the data with "
            "`scripts/prepare_data.py`, which rejects such rows (`extreme_aspect_ratio`)."
        )
    if value.mode == "RGB":
        return value
    try:
        return to_rgb(value)
    except BadImage as error:
        raise ValueError(
            f"{where}: column {column!r} holds an image that cannot be converted to RGB as `scripts/prepare_data.py` "
            f"converts images: {error} Convert it to RGB in the dataset, or prepare the data with the script, which "
            "rejects such rows (`unsupported_image`)."
        ) from error


# Config attributes naming vision placeholder tokens, which the student must never sample.
VISION_TOKEN_ATTRIBUTES = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def vision_token_ids(config: dict[str, Any]) -> set[int]:
    """The ids of the vision placeholder tokens a model config (`config.to_dict()`) names: never to be generated."""
    return {config[name] for name in VISION_TOKEN_ATTRIBUTES if config.get(name) is not None}


def truncate_at_tokens(completions: list[list[int]], stop_ids: set[int], fill_id: int) -> tuple[list[list[int]], int]:
    """
    Cut each completion before the first token in `stop_ids`.

    A sampled vision placeholder (e.g. `<|image_pad|>`) has no image features behind it, so the teacher replay would
    fail or be wrong. Generation suppresses these tokens, but some backends (vLLM) ignore the suppression.

    Args:
        completions (`list[list[int]]`):
            Completion token ids.
        stop_ids (`set[int]`):
            Token ids that must not appear.
        fill_id (`int`):
            Token used when the cut leaves nothing (a completion must keep at least one token), normally EOS.

    Returns:
        `tuple[list[list[int]], int]`: the cut completions and how many were cut.
    """
    cut, num_cut = [], 0
    for ids in completions:
        stop = next((k for k, token in enumerate(ids) if token in stop_ids), None)
        if stop is None:
            cut.append(ids)
        else:
            cut.append(ids[:stop] or [fill_id])
            num_cut += 1
    return cut, num_cut
