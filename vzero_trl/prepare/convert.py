"""Turn grounded-VQA rows into V-Zero rows: full image, cleaned question, positive crop, negative crop.

Three source layouts (`PrepareConfig.source_format`):

- `"zwz"`: Zooming-without-Zooming rows (`inclusionAI/ZwZ-RL-VQA`): `images` (a list with one path, to an image with a
  red box burned in), `problem` (the question, with a sentence telling the model to look inside the red box, then the
  options and the answer instruction), `answer` (a letter) and `bbox` (`[x1, y1, x2, y2]` in original pixels, floats,
  sometimes a string like `"(519.6,5.5,1854.7,2596.9)"`). The student must see the clean original image, found in
  `clean_image_column` or in `clean_image_dir` under the same file name, and the red-box sentence is removed.
- `"generic"`: an image, a question and a bbox in one of the conventions of `bbox_format`.
- `"crop"`: like generic, plus a ready-made positive crop in `crop_column` (a bbox is still needed to place the negative
  crop away from the target).

A row that cannot be converted raises [`RejectedRow`] with a machine-readable `reason`; the pipeline records it and
goes on. Reasons: `missing_field`, `missing_image`, `unreadable_image`, `image_too_large`, `unsupported_image`,
`multiple_images`, `empty_question`, `bad_bbox`, `normalised_bbox`, `empty_bbox`, `bbox_outside_image`,
`bbox_too_small`, `bbox_too_large`, `extreme_aspect_ratio`, `no_room_for_negative`, `student_prompt_too_long`,
`teacher_prompt_too_long`; the pipeline adds `malformed_line` and `duplicate_id` ([`~vzero_trl.prepare.pipeline.convert_shard`]).

Boxes are read in the frame of the upright image: an EXIF orientation tag is applied first ([`~vzero_trl.images`]), as
`datasets` and image viewers apply it, and the stored image is that upright image.
"""

import functools
import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from ..checks import check_range
from ..crops import Box, NoRoomForNegative, crop_image, expand_box, negative_crop, random_box
from ..images import DEFAULT_MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO, BadImage, encoded_bytes, exif_orientation, load_image
from ..views import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX, student_messages, teacher_messages


# The sentence ZwZ appends to every question before the options, pointing at the red box burned into its images.
ZWZ_HINT = re.compile(
    r"\s*Only focus on the objects? inside the red bounding box in the image to answer (?:this|the) question\.?",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class RejectedRow(ValueError):
    """A source row that cannot become a V-Zero row; `reason` is the short name counted in the dataset card."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class PrepareConfig:
    """
    Settings of a data-preparation run (`scripts/prepare_data.py`); every field is a command-line flag.

    Parameters:
        > Source

        dataset (`str`):
            A Hub dataset id, a local parquet/json/jsonl/csv file (or a glob of them), or a folder written by
            `Dataset.save_to_disk`.
        output_dir (`str`):
            Where shards, the assembled dataset (`dataset/`), `rejects.jsonl`, `summary.json` and the card go.
        dataset_config (`str`, *optional*):
            Hub dataset configuration name.
        split (`str`, *optional*, defaults to `"train"`):
            Split to convert.
        source_format (`str`, *optional*, defaults to `"generic"`):
            `"zwz"`, `"generic"` or `"crop"` (see the module docstring).
        image_dir (`str`, *optional*):
            Folder that relative image paths are resolved against.

        > Columns

        image_column (`str`, *optional*):
            Column with the full image (a path, bytes, an image, or a one-item list of those). Defaults to `"images"`
            for ZwZ and `"image"` otherwise.
        clean_image_column (`str`, *optional*):
            Column with the clean (box-free) image, for ZwZ.
        clean_image_dir (`str`, *optional*):
            Folder of clean images, looked up by the image's relative path, then by its file name (ZwZ's
            `original_images`).
        allow_boxed_images (`bool`, *optional*, defaults to `False`):
            Accept ZwZ rows without a clean image source, training on images with the red box burned in.
        question_column (`str`, *optional*):
            Defaults to `"problem"` for ZwZ and `"question"` otherwise.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Kept for evaluation only; missing answers are allowed.
        bbox_column (`str`, *optional*, defaults to `"bbox"`):
            Target box column.
        bbox_format (`str`, *optional*, defaults to `"xyxy"`):
            `"xyxy"`: absolute `[x0, y0, x1, y1]` pixels (ZwZ); `"xyxy_norm"`: the same divided by width and height
            (values in `[0, 1]`); `"xywh"`: absolute `[x, y, width, height]` (COCO).
        crop_column (`str`, *optional*, defaults to `"crop"`):
            Ready-made positive crop, for `source_format="crop"`.
        id_column (`str`, *optional*):
            Row id column. Without it a row's id is `"<split>-<index>"`, its position in the source split. Ids must be
            unique: a row whose id an earlier row has is rejected (`duplicate_id`).

        > Evidence crops

        crop_margin (`float`, *optional*, defaults to `0.0`):
            Each side of the positive crop grows by this fraction of the box side (ZwZ crops are tight: `0`).
        crop_min_side (`int`, *optional*, defaults to `0`):
            Minimum side of the positive crop in pixels (grown around the box).
        negative_factor (`int`, *optional*, defaults to `2`):
            Downsampling factor of the full image before the negative crop is taken (the paper's 2x).
        random_crop (`bool`, *optional*, defaults to `False`):
            Also write a `random_crop` column: a crop of the positive crop's size anywhere in the image (the paper's
            random-evidence ablation, Table 2).
        seed (`int`, *optional*, defaults to `0`):
            Run seed. Each row's crop positions derive from it and the row id, so a rerun is identical bit for bit.

        > Filters

        min_bbox_side (`int`, *optional*, defaults to `1`):
            Rows whose box is narrower or shorter than this are rejected (`bbox_too_small`).
        max_bbox_side (`int`, *optional*):
            Rows whose box is wider or taller than this are rejected (`bbox_too_large`).
        bbox_tolerance (`float`, *optional*, defaults to `2.0`):
            A box may stick out of the image by this many pixels (float rounding); it is then clipped. Beyond that the
            row is rejected (`bbox_outside_image`).
        max_image_pixels (`int`, *optional*, defaults to `12288 * 12288`):
            Larger images are rejected from their header, before decoding (`image_too_large`).
        max_aspect_ratio (`float`, *optional*, defaults to `200.0`):
            Rows whose image or positive crop has a longer side more than this many times its shorter side are
            rejected (`extreme_aspect_ratio`). Qwen-VL processors refuse images beyond 200:1.
        processor (`str`, *optional*):
            Processor (model id or path) used to count prompt tokens for the two limits below.
        min_pixels (`int`, *optional*, defaults to `65536`), max_pixels (`int`, *optional*, defaults to `16777216`):
            Pixel budget of every image when counting tokens (the official V-Zero settings).
        max_student_tokens (`int`, *optional*):
            Reject rows whose student prompt (image + question) is longer (`student_prompt_too_long`).
        max_teacher_tokens (`int`, *optional*):
            Reject rows whose teacher prompt (image + question + crop sentence) is longer (`teacher_prompt_too_long`).

        > Run

        num_proc (`int`, *optional*, defaults to `1`):
            Worker processes; each converts whole shards.
        shard_size (`int`, *optional*, defaults to `1000`):
            Rows per shard: the unit of parallel work and of resuming.
        limit (`int`, *optional*):
            Convert only the first `limit` rows (for trials).
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Push the dataset, its card, `rejects.jsonl` and `summary.json` to `hub_dataset_id`.
        hub_dataset_id (`str`, *optional*):
            Target dataset repository, `owner/name`.
        hub_private (`bool`, *optional*, defaults to `False`):
            Create the repository as private.
        license (`str`, *optional*):
            Licence written into the card (ZwZ is `apache-2.0`).
    """

    dataset: str = field(metadata={"help": "Hub dataset id, local parquet/json/jsonl/csv file(s), or a saved folder."})
    output_dir: str = field(metadata={"help": "Output folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    split: str = field(default="train", metadata={"help": "Split to convert."})
    source_format: Literal["zwz", "generic", "crop"] = field(default="generic", metadata={"help": "Row layout."})
    image_dir: str | None = field(default=None, metadata={"help": "Base folder of relative image paths."})
    image_column: str | None = field(default=None, metadata={"help": "Full image column."})
    clean_image_column: str | None = field(default=None, metadata={"help": "Clean (box-free) image column."})
    clean_image_dir: str | None = field(default=None, metadata={"help": "Folder of clean images."})
    allow_boxed_images: bool = field(default=False, metadata={"help": "Accept ZwZ images with the red box."})
    question_column: str | None = field(default=None, metadata={"help": "Question column."})
    answer_column: str = field(default="answer", metadata={"help": "Answer column (evaluation only)."})
    bbox_column: str = field(default="bbox", metadata={"help": "Target box column."})
    bbox_format: Literal["xyxy", "xyxy_norm", "xywh"] = field(default="xyxy", metadata={"help": "Box convention."})
    crop_column: str = field(default="crop", metadata={"help": "Ready-made positive crop column."})
    id_column: str | None = field(default=None, metadata={"help": "Row id column."})
    crop_margin: float = field(default=0.0, metadata={"help": "Positive crop margin, fraction of the box side."})
    crop_min_side: int = field(default=0, metadata={"help": "Minimum positive crop side in pixels."})
    negative_factor: int = field(default=2, metadata={"help": "Downsampling factor before the negative crop."})
    random_crop: bool = field(default=False, metadata={"help": "Also write a random_crop column."})
    seed: int = field(default=0, metadata={"help": "Run seed of the crop positions."})
    min_bbox_side: int = field(default=1, metadata={"help": "Reject boxes with a smaller side."})
    max_bbox_side: int | None = field(default=None, metadata={"help": "Reject boxes with a larger side."})
    bbox_tolerance: float = field(default=2.0, metadata={"help": "Pixels a box may stick out before rejection."})
    max_image_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, metadata={"help": "Reject larger images."})
    max_aspect_ratio: float = field(
        default=MAX_ASPECT_RATIO, metadata={"help": "Reject images and crops with a more elongated shape."}
    )
    processor: str | None = field(default=None, metadata={"help": "Processor for the token limits."})
    min_pixels: int = field(default=65536, metadata={"help": "Pixel budget (min) for token counts."})
    max_pixels: int = field(default=16777216, metadata={"help": "Pixel budget (max) for token counts."})
    max_student_tokens: int | None = field(default=None, metadata={"help": "Student prompt token limit."})
    max_teacher_tokens: int | None = field(default=None, metadata={"help": "Teacher prompt token limit."})
    num_proc: int = field(default=1, metadata={"help": "Worker processes."})
    shard_size: int = field(default=1000, metadata={"help": "Rows per shard (unit of work and of resuming)."})
    limit: int | None = field(default=None, metadata={"help": "Convert only the first rows."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the result to hub_dataset_id."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Target dataset repository owner/name."})
    hub_private: bool = field(default=False, metadata={"help": "Create a private repository."})
    license: str | None = field(default=None, metadata={"help": "Licence for the dataset card."})

    def __post_init__(self):
        zwz = self.source_format == "zwz"
        self.image_column = self.image_column or ("images" if zwz else "image")
        self.question_column = self.question_column or ("problem" if zwz else "question")
        if self.source_format not in ("zwz", "generic", "crop"):
            raise ValueError(f"`source_format` must be 'zwz', 'generic' or 'crop', got {self.source_format!r}.")
        if self.bbox_format not in ("xyxy", "xyxy_norm", "xywh"):
            raise ValueError(f"`bbox_format` must be 'xyxy', 'xyxy_norm' or 'xywh', got {self.bbox_format!r}.")
        if zwz and not (self.clean_image_column or self.clean_image_dir or self.allow_boxed_images):
            raise ValueError(
                "ZwZ images have a red box burned in around the target, which would show the student where to look. "
                "Pass `clean_image_dir` (the extracted `original_images`) or `clean_image_column`, or set "
                "`allow_boxed_images` to train on the boxed images anyway."
            )
        self._check_numbers()
        if (self.max_student_tokens or self.max_teacher_tokens) and not self.processor:
            raise ValueError("`max_student_tokens` / `max_teacher_tokens` need `processor` to count tokens with.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("`push_to_hub` needs `hub_dataset_id` (owner/name).")

    def _check_numbers(self) -> None:
        """Every numeric field is a finite number in its range (NaN fails); counts and sizes are whole numbers."""
        count, unset = dict(integer=True), dict(integer=True, optional=True)
        check_range("negative_factor", self.negative_factor, 1, **count, fix="The paper downsamples 2x.")
        check_range("num_proc", self.num_proc, 1, **count)
        check_range("shard_size", self.shard_size, 1, **count)
        check_range("limit", self.limit, 1, **unset)
        check_range("seed", self.seed, 0, 2**32 - 1, **count, fix="Seeds are below 2**32.")
        check_range("crop_margin", self.crop_margin, 0, fix="ZwZ crops are tight: 0.")
        check_range("crop_min_side", self.crop_min_side, 0, **count)
        check_range("min_bbox_side", self.min_bbox_side, 1, **count)
        check_range("max_bbox_side", self.max_bbox_side, self.min_bbox_side, **unset, fix="It bounds min_bbox_side.")
        check_range("bbox_tolerance", self.bbox_tolerance, 0, fix="The default is 2 pixels of float rounding.")
        check_range("max_image_pixels", self.max_image_pixels, 1, **count)
        check_range(
            "max_aspect_ratio",
            self.max_aspect_ratio,
            1,
            MAX_ASPECT_RATIO,
            fix=f"It is the longer side over the shorter; vision processors refuse more than {MAX_ASPECT_RATIO:g}:1.",
        )
        check_range("max_pixels", self.max_pixels, 1, **count)
        check_range("min_pixels", self.min_pixels, 1, self.max_pixels, **count, fix="`max_pixels` bounds it.")
        check_range("max_student_tokens", self.max_student_tokens, 1, **unset)
        check_range("max_teacher_tokens", self.max_teacher_tokens, 1, **unset)


def clean_question(text: str) -> str:
    """Remove ZwZ's red-box sentence, keeping the question, the options and the answer instruction."""
    text = ZWZ_HINT.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_bbox(value: Any, image_size: tuple[int, int], bbox_format: str = "xyxy", tolerance: float = 2.0) -> Box:
    """
    Read a box in any supported convention and return it as integer, half-open, absolute `(x0, y0, x1, y1)` inside
    the image, rounded outward so it covers the whole target.

    Args:
        value (`Sequence[float]` or `str`):
            Four numbers, or a string holding four numbers such as `"(519.6,5.5,1854.7,2596.9)"`.
        image_size (`tuple[int, int]`):
            `(width, height)` of the image the box refers to.
        bbox_format (`str`, *optional*, defaults to `"xyxy"`):
            `"xyxy"`, `"xyxy_norm"` or `"xywh"`, see [`PrepareConfig`].
        tolerance (`float`, *optional*, defaults to `2.0`):
            Pixels the box may stick out of the image before it is rejected; within it the box is clipped.

    Returns:
        `Box`: the box. Raises [`RejectedRow`] (`bad_bbox`, `normalised_bbox`, `empty_bbox`, `bbox_outside_image`)
        otherwise.
    """
    numbers = [float(n) for n in _NUMBER.findall(value)] if isinstance(value, str) else value
    try:
        x0, y0, a, b = (float(v) for v in numbers)
    except (TypeError, ValueError):
        raise RejectedRow("bad_bbox", f"expected 4 numbers, got {value!r:.100}") from None
    if not all(math.isfinite(v) for v in (x0, y0, a, b)):
        raise RejectedRow("bad_bbox", f"non-finite coordinates {value!r:.100}")
    width, height = image_size
    if bbox_format != "xyxy_norm" and all(0 <= v <= 1 for v in (x0, y0, a, b)):
        # Read as pixels such a box is at most the corner pixel. That is a real region of a tiny image only: whole-
        # number coordinates spanning at least a quarter of each side (a 1-pixel box on an image up to 4x4) are pixels.
        whole = all(v.is_integer() for v in (x0, y0, a, b))
        span = (a, b) if bbox_format == "xywh" else (a - x0, b - y0)
        if not (whole and 4 * max(span[0], 1) >= width and 4 * max(span[1], 1) >= height):
            raise RejectedRow(
                "normalised_bbox",
                f"box {value!r:.100} lies within [0, 1]: read as {bbox_format!r} pixels it is at most the corner "
                f"pixel of the {width}x{height} image, so it is taken as normalised by the image size. Use "
                "bbox_format='xyxy_norm' ([x0, y0, x1, y1] divided by width and height)",
            )
    if bbox_format == "xywh":
        a, b = x0 + a, y0 + b
    elif bbox_format == "xyxy_norm":
        if max(abs(x0), abs(y0), abs(a), abs(b)) > 1.5:
            raise RejectedRow("bad_bbox", f"bbox_format='xyxy_norm' expects values in [0, 1], got {value!r:.100}")
        x0, y0, a, b = x0 * width, y0 * height, a * width, b * height
    if a <= x0 or b <= y0:
        raise RejectedRow("empty_bbox", f"box {value!r:.100} has no area")
    if x0 < -tolerance or y0 < -tolerance or a > width + tolerance or b > height + tolerance:
        raise RejectedRow("bbox_outside_image", f"box {value!r:.100} lies outside the image of size {image_size}")
    box = (max(math.floor(x0), 0), max(math.floor(y0), 0), min(math.ceil(a), width), min(math.ceil(b), height))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise RejectedRow(
            "bbox_outside_image", f"box {value!r:.100} has no area inside the image of size {image_size}"
        )
    return box


def row_id(row: dict[str, Any], index: int, config: PrepareConfig) -> str:
    """The row's id: its `id_column` value, or `"<split>-<index>"` (its position in the source split)."""
    if config.id_column and row.get(config.id_column) is not None:
        return str(row[config.id_column])
    return f"{config.split}-{index:08d}"


def row_seed(seed: int, row_id: str, purpose: str) -> int:
    """A 64-bit seed for one row and one use, stable across runs, processes and Python versions."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{row_id}/{purpose}".encode()).digest()[:8], "big")


def convert_row(row: dict[str, Any], index: int, config: PrepareConfig) -> dict[str, Any]:
    """
    Convert one source row into a V-Zero row: `id`, `prompt`, `image`, `bbox`, `crop`, `negative_crop`
    (`random_crop` if configured) and `answer`.

    Args:
        row (`dict`):
            The source row, images not decoded (paths, bytes or `{"bytes", "path"}` dicts; images work too).
        index (`int`):
            Position of the row in the source split (its id when there is no `id_column`).
        config ([`PrepareConfig`]):
            The run's settings.

    Returns:
        `dict`: the V-Zero row. Raises [`RejectedRow`] when the row cannot be converted.
    """
    identifier = row_id(row, index, config)
    if config.clean_image_column or config.clean_image_dir:
        image, image_bytes = _clean_image(row, config)
    else:
        image, image_bytes = _load(
            _single(_field(row, config.image_column), config.image_column), config, config.image_dir
        )
    _check_aspect_ratio("image", image.size, config.max_aspect_ratio)
    question = _field(row, config.question_column)
    question = clean_question(question) if isinstance(question, str) else ""
    if not question:
        raise RejectedRow("empty_question", f"column {config.question_column!r} holds no question text")

    bbox = parse_bbox(_field(row, config.bbox_column), image.size, config.bbox_format, config.bbox_tolerance)
    sides = (bbox[2] - bbox[0], bbox[3] - bbox[1])
    if min(sides) < config.min_bbox_side:
        raise RejectedRow("bbox_too_small", f"box {bbox} has a side under min_bbox_side={config.min_bbox_side}")
    if config.max_bbox_side is not None and max(sides) > config.max_bbox_side:
        raise RejectedRow("bbox_too_large", f"box {bbox} has a side over max_bbox_side={config.max_bbox_side}")

    if config.source_format == "crop":
        crop, _ = _load(_field(row, config.crop_column), config, config.image_dir)
    else:
        crop = crop_image(
            image, expand_box(bbox, image.size, margin=config.crop_margin, min_side=config.crop_min_side)
        )
    _check_aspect_ratio("positive crop", crop.size, config.max_aspect_ratio)  # the negative crop has its size
    try:
        negative = negative_crop(
            image, bbox, crop.size, factor=config.negative_factor, seed=row_seed(config.seed, identifier, "negative")
        )
    except NoRoomForNegative as error:
        raise RejectedRow("no_room_for_negative", str(error)) from None

    answer = row.get(config.answer_column)
    output = {
        "id": identifier,
        "prompt": [{"role": "user", "content": question}],
        "image": image,
        "bbox": list(bbox),
        "crop": crop,
        "negative_crop": negative,
        "answer": None if answer is None else str(answer),
    }
    if config.random_crop:
        box = random_box(image.size, crop.size, seed=row_seed(config.seed, identifier, "random"))
        output["random_crop"] = crop_image(image, box)
    if config.processor:
        _check_prompt_lengths(output, config)
    # Stored as encoded bytes chosen here, not left to `datasets`: it would store a PIL image's source *path* when it
    # has one, and re-encode JPEGs at quality 75.
    for column in ("image", "crop", "negative_crop", "random_crop"):
        if column in output:
            output[column] = encode_image(output[column], image_bytes if column == "image" else None)
    return output


def _check_aspect_ratio(what: str, size: tuple[int, int], limit: float) -> None:
    # Checked before any token count: the processor (Qwen's `smart_resize`) raises on such a shape, which would make
    # the row an `unexpected_error` here, or stop training with no row named.
    ratio = max(size) / min(size)
    if ratio > limit:
        raise RejectedRow(
            "extreme_aspect_ratio",
            f"{what} {size[0]}x{size[1]} has an aspect ratio of {ratio:.1f}:1 > max_aspect_ratio={limit:g}; "
            "vision processors cannot resize it (Qwen-VL refuses more than 200:1)",
        )


def encode_image(image: Image.Image, source_bytes: bytes | None = None) -> dict[str, Any]:
    """
    An image as a `datasets.Image()` value `{"bytes", "path": None}`: the source file's own bytes when they decode to
    exactly `image` (an RGB JPEG, PNG or WebP, upright, without a transparent colour key: nothing was converted, so
    nothing is lost and photos stay compact), otherwise lossless PNG. An EXIF-rotated or colour-keyed source is
    re-encoded, since its bytes would decode rotated or with black where `image` has white.
    """
    if source_bytes is not None:
        with Image.open(io.BytesIO(source_bytes)) as source:
            if (
                source.format in ("JPEG", "PNG", "WEBP")
                and source.mode == "RGB"
                and source.size == image.size
                and not source.has_transparency_data
                and exif_orientation(source) == 1
            ):
                return {"bytes": source_bytes, "path": None}
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def prompt_tokens(processor, messages: list[dict[str, Any]], min_pixels: int, max_pixels: int) -> int:
    """
    Number of tokens of a rendered prompt whose images are resized within `[min_pixels, max_pixels]`, counted without
    processing any pixels: each image placeholder token expands to the image's visual tokens (Qwen-VL layout).
    """
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    count = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    budget = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    merge = processor.image_processor.merge_size**2
    for message in messages:
        for part in message["content"]:
            if part["type"] == "image":
                width, height = part["image"].size
                count += processor.image_processor.get_number_of_image_patches(height, width, budget) // merge - 1
    return count


@functools.lru_cache(maxsize=2)
def _processor(name: str):
    from ..processing import load_processor

    return load_processor(name)


def _check_prompt_lengths(output: dict[str, Any], config: PrepareConfig) -> None:
    processor = _processor(config.processor)
    student = student_messages(output)
    if config.max_student_tokens is not None:
        count = prompt_tokens(processor, student, config.min_pixels, config.max_pixels)
        if count > config.max_student_tokens:
            raise RejectedRow(
                "student_prompt_too_long", f"{count} tokens > max_student_tokens={config.max_student_tokens}"
            )
    if config.max_teacher_tokens is not None:
        # Both views have the same length: they differ only in the crop image, and both crops have the same size.
        teacher = teacher_messages(student, output["crop"], TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX)
        count = prompt_tokens(processor, teacher, config.min_pixels, config.max_pixels)
        if count > config.max_teacher_tokens:
            raise RejectedRow(
                "teacher_prompt_too_long", f"{count} tokens > max_teacher_tokens={config.max_teacher_tokens}"
            )


def _field(row: dict[str, Any], column: str) -> Any:
    value = row.get(column)
    if value is None:
        raise RejectedRow("missing_field", f"column {column!r} is missing or empty")
    return value


def _single(value: Any, column: str) -> Any:
    # V-Zero trains on one full image per prompt; ZwZ stores it as a one-item list.
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise RejectedRow("multiple_images", f"column {column!r} holds {len(value)} images, V-Zero needs one")
        return value[0]
    return value


def _load(value: Any, config: PrepareConfig, image_dir: str | None) -> tuple[Image.Image, bytes | None]:
    # The decoded RGB image, and the encoded bytes it came from (None for an in-memory image).
    try:
        image = load_image(value, image_dir=image_dir, max_pixels=config.max_image_pixels)
    except BadImage as error:
        raise RejectedRow(error.reason, str(error)) from None
    return image, None if isinstance(value, Image.Image) else encoded_bytes(value, image_dir)


def _clean_image(row: dict[str, Any], config: PrepareConfig) -> tuple[Image.Image, bytes | None]:
    if config.clean_image_column:
        return _load(
            _single(_field(row, config.clean_image_column), config.clean_image_column), config, config.image_dir
        )
    # ZwZ: the clean original has the boxed image's relative path (or at least its file name) under clean_image_dir.
    reference = _single(_field(row, config.image_column), config.image_column)
    path = reference.get("path") if isinstance(reference, dict) else reference
    if not isinstance(path, str | Path):
        raise RejectedRow("missing_image", "the boxed image has no file path to find its clean original by")
    path, folder = Path(path), Path(config.clean_image_dir)
    candidates = [folder / path.name] if path.is_absolute() else [folder / path, folder / path.name]
    for candidate in candidates:
        if candidate.is_file():
            return _load(str(candidate), config, None)
    raise RejectedRow(
        "missing_image", f"no clean image for {str(path)!r} under clean_image_dir={config.clean_image_dir!r}"
    )
