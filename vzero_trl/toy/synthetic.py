"""Synthetic fine-grained VQA: find one small shape in a cluttered canvas and name its colour.

This is the default training data of the demo and of the tests. Each canvas holds many distractor shapes and exactly
one target whose shape kind appears nowhere else, so the question ("What is the color of the star...?") identifies it
without a box hint. The target covers about 4-7% of the canvas side, small enough that the full image is hard and the
positive crop is easy, which is the gap V-Zero's evidence gating measures. Rows carry the three evidence views of
[`vzero_trl.crops`]: the positive crop, the downsampled negative crop and the random crop of the ablation.

Generate a dataset on disk with `python -m vzero_trl.toy.synthetic OUTPUT_DIR --num_examples N --seed S`.
"""

import argparse
import math
import random
from collections.abc import Sequence

import datasets
from PIL import Image, ImageDraw

from ..crops import Box, crop_image, expand_box, negative_box, negative_crop, random_box
from ..schema import dataset_features


COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "pink": (245, 125, 185),
}

# Polygon vertices in the unit square; "circle" and "ring" are ellipses.
_POLYGONS = {
    "square": ((0, 0), (1, 0), (1, 1), (0, 1)),
    "triangle": ((0.5, 0), (1, 1), (0, 1)),
    "diamond": ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
    "hexagon": ((0.25, 0), (0.75, 0), (1, 0.5), (0.75, 1), (0.25, 1), (0, 0.5)),
    "cross": tuple(
        (u / 3, v / 3)
        for u, v in ((1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 2), (0, 2), (0, 1), (1, 1))
    ),
    "star": tuple(
        (0.5 + r * math.sin(k * math.pi / 5), 0.55 - r * math.cos(k * math.pi / 5))
        for k, r in enumerate((0.5, 0.2) * 5)
    ),
}
SHAPES = ("circle", "ring", *_POLYGONS)


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Box, fill: int | tuple[int, int, int]) -> None:
    # ImageDraw coordinates are inclusive, so a half-open box ends at x1 - 1.
    x0, y0, x1, y1 = box
    x1, y1 = x1 - 1, y1 - 1
    if kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=max(2, (x1 - x0) // 5))
    else:
        draw.polygon([(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in _POLYGONS[kind]], fill=fill)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    # A mosaic of 16-pixel grey tiles over a muted colour: not flat, yet every palette colour stands out. NEAREST
    # tiles keep PNG encoding (done by `datasets`) ~5x faster than smooth noise. `randbytes` is seeded, unlike
    # `Image.effect_noise`.
    grid = (max(1, size[0] // 16), max(1, size[1] // 16))
    noise = Image.frombytes("L", grid, rng.randbytes(grid[0] * grid[1])).resize(size, Image.Resampling.NEAREST)
    base = Image.new("RGB", size, tuple(rng.randint(90, 150) for _ in range(3)))
    return Image.blend(base, noise.convert("RGB"), 0.2)


def make_example(
    index: int, seed: int = 0, canvas_size: Sequence[int] = (448, 448), num_distractors: int = 24
) -> dict:
    """
    Build one synthetic example; the same `(index, seed)` always gives byte-identical images.

    Args:
        index (`int`):
            Index of the example in the dataset.
        seed (`int`, *optional*, defaults to `0`):
            Dataset seed; with `index` it seeds the `random.Random` behind every choice.
        canvas_size (`Sequence[int]`, *optional*, defaults to `(448, 448)`):
            `(width, height)` of the full image. Very small canvases can raise
            [`~vzero_trl.crops.NoRoomForNegative`].
        num_distractors (`int`, *optional*, defaults to `24`):
            Number of clutter shapes, none of the target's kind and none touching the target.

    Returns:
        `dict`: A row with `id` (`str`), `prompt` (conversational, one user turn without an image placeholder),
        `image` (RGB `PIL.Image.Image`), `bbox` (tight half-open `[x0, y0, x1, y1]` of the target), the evidence views
        `crop`, `negative_crop` and `random_crop` (`PIL.Image.Image`, all the size of `crop`) and `answer` (the correct
        option letter, for evaluation only).
    """
    rng = random.Random(f"vzero-synthetic/{seed}/{index}")  # str seeds go through SHA-512: stable across runs
    size = (int(canvas_size[0]), int(canvas_size[1]))
    image = _background(rng, size)
    short_side = min(size)

    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    side = rng.randint(max(3, round(0.04 * short_side)), max(3, round(0.07 * short_side)))
    x0, y0, _, _ = random_box(size, (side, side), seed=rng.getrandbits(32))
    # Draw the target on its own mask so the box is measured from the drawn pixels, tight by construction.
    mask = Image.new("L", (side, side))
    draw_shape(ImageDraw.Draw(mask), kind, (0, 0, side, side), 255)
    mx0, my0, mx1, my1 = mask.getbbox()
    bbox = [x0 + mx0, y0 + my0, x0 + mx1, y0 + my1]

    # Distractors are placed like negative crops (factor 1) around a padded target box, so none covers the target.
    keep_out = expand_box(bbox, size, margin=0.25)
    draw = ImageDraw.Draw(image)
    for _ in range(num_distractors):
        d = rng.randint(max(3, round(0.03 * short_side)), max(3, round(0.12 * short_side)))
        box = negative_box(size, keep_out, (d, d), factor=1, seed=rng.getrandbits(32))
        draw_shape(draw, rng.choice([k for k in SHAPES if k != kind]), box, COLORS[rng.choice(list(COLORS))])
    image.paste(COLORS[color], (x0, y0, x0 + side, y0 + side), mask)

    options = [color, *rng.sample([c for c in COLORS if c != color], 3)]
    rng.shuffle(options)
    letters = "ABCD"
    question = "\n".join(
        [f"What is the color of the {kind} in the image?"]
        + [f"{letter}. {option}" for letter, option in zip(letters, options, strict=True)]
        + ["Answer with the option's letter from the given choices."]
    )

    crop = crop_image(image, expand_box(bbox, size, margin=0.25, min_side=32))
    return {
        "id": f"synthetic-{seed}-{index:06d}",
        "prompt": [{"role": "user", "content": question}],
        "image": image,
        "bbox": bbox,
        "crop": crop,
        "negative_crop": negative_crop(image, bbox, crop.size, factor=2, seed=rng.getrandbits(32)),
        "random_crop": crop_image(image, random_box(size, crop.size, seed=rng.getrandbits(32))),
        "answer": letters[options.index(color)],
    }


def make_dataset(num_examples: int, seed: int = 0, **example_kwargs) -> datasets.Dataset:
    """
    Build a dataset of `num_examples` rows of [`make_example`] with indices `0..num_examples-1`.

    Args:
        num_examples (`int`):
            Number of rows.
        seed (`int`, *optional*, defaults to `0`):
            Dataset seed passed to every [`make_example`] call.
        **example_kwargs:
            Passed to [`make_example`] (`canvas_size`, `num_distractors`).

    Returns:
        [`~datasets.Dataset`]: Rows with the V-Zero schema, [`~vzero_trl.schema.dataset_features`]; image columns decode to `PIL.Image.Image`.
    """
    if num_examples < 1:
        raise ValueError(f"`num_examples` must be >= 1, got {num_examples}.")
    rows = [make_example(index, seed=seed, **example_kwargs) for index in range(num_examples)]
    return datasets.Dataset.from_list(rows, features=dataset_features())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic V-Zero dataset with `Dataset.save_to_disk`.")
    parser.add_argument("output_dir", help="Directory for `Dataset.save_to_disk`.")
    parser.add_argument("--num_examples", type=int, default=256, help="Number of rows.")
    parser.add_argument("--seed", type=int, default=0, help="Dataset seed.")
    args = parser.parse_args(argv)
    make_dataset(args.num_examples, seed=args.seed).save_to_disk(args.output_dir)


if __name__ == "__main__":
    main()
