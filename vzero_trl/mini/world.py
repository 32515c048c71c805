"""The toy world of the miniature reproduction: one small coloured star on a 4 x 4 grid of 32-pixel cells.

Each image is 128 x 128 pixels on a flat grey background. With the tiny models' image processor (16-pixel patches
merged 2 x 2) one cell is exactly one merged vision token, so the target is small but legible to a vision tower of one
layer. Two to six shapes sit in distinct cells, 16-24 pixels each; exactly one is a star, and the question asks for its
colour among four options in a fixed order. Distractors take any of the four colours, so the star's cell must be found.

The full image holds everything the answer needs; the positive crop (the star with a 25% margin, at least one cell)
makes it easy. The rows follow the trainer's dataset schema, with the negative crop of [`vzero_trl.crops.negative_crop`]
(2x downsample, same size, away from the star) and the random crop of the paper's Table 2 ablation. A crop-sized window
does not always fit beside the star in the 64-pixel downsample (a star in a central cell); the negative crop is then
taken at full resolution, still the crop's size and away from the star.

Three worlds share the images and differ in the answer the models give and in what the teacher was taught
([`vzero_trl.mini.pretrain`] holds the teaching; this module the answer formats):

- `letter`: `The answer is C.`: one decisive token, no room to drift; the teacher learns the gold answers.
- `drift`: `The star is blue, so the answer is C.`: the colour comes first and the letter follows from it. The teacher
  also learns to continue a wrong stated colour consistently (its letter follows the colour it is given), the paper's
  "locally plausible continuation" of a drifted prefix, and the student is trained long enough to see the colour in
  part.
- `prior`: `The answer is C.`, but a share of the teacher's training answers name one fixed option (`PRIOR_LETTER`)
  whatever the image shows: it reads the crop, and still puts real mass on that option under both views. These are
  teacher errors the image does not support, the premise of the paper's contrast.
"""

import random
import re
from typing import Literal

import datasets
from PIL import Image, ImageDraw

from ..crops import NoRoomForNegative, crop_image, expand_box, negative_crop, random_box
from ..schema import dataset_features
from ..toy.synthetic import COLORS, SHAPES, draw_shape


World = Literal["letter", "drift", "prior"]
WORLDS: tuple[World, ...] = ("letter", "drift", "prior")
GRID, CELL = 4, 32
NUM_SHAPES = (2, 6)  # the star and 1-5 distractors
BACKGROUND = 128
TARGET = "star"
OPTIONS = ("red", "green", "blue", "yellow")
LETTERS = "ABCD"
PRIOR_LETTER = "A"  # the option the prior world's teacher was taught to name whatever the image shows
DISTRACTORS = tuple(kind for kind in SHAPES if kind != TARGET)
QUESTION = "\n".join(
    [f"What is the color of the {TARGET} in the image?"]
    + [f"{letter}. {color}" for letter, color in zip(LETTERS, OPTIONS, strict=True)]
    + ["Answer with the option's letter from the given choices."]
)
FEATURES = dataset_features(random_crop=True)
_LETTER_AT_END = re.compile(r"answer is ([ABCD])\.?\s*$")


def make_example(index: int, seed: int = 0, split: str = "train") -> dict:
    """
    One row of the toy world; the same `(index, seed, split)` always gives byte-identical images.

    Args:
        index (`int`):
            Index of the row.
        seed (`int`, *optional*, defaults to `0`):
            World seed.
        split (`str`, *optional*, defaults to `"train"`):
            Name mixed into the seed, so that splits never share an image.

    Returns:
        `dict`: `id`, `prompt` (one user turn, no image placeholder), `image` (128 x 128 RGB), `bbox` (tight half-open
        box of the star), `crop`, `negative_crop`, `random_crop` (all the size of `crop`) and `answer` (the letter).
    """
    rng = random.Random(f"vzero-mini/{seed}/{split}/{index}")
    size = (GRID * CELL, GRID * CELL)
    grey = BACKGROUND
    image = Image.new("RGB", size, (grey, grey, grey))
    draw = ImageDraw.Draw(image)

    cells = rng.sample(range(GRID * GRID), rng.randint(*NUM_SHAPES))
    color = rng.choice(OPTIONS)
    bbox = None
    for n, cell in enumerate(cells):
        side = rng.randint(16, 24)
        x0 = (cell % GRID) * CELL + rng.randint(0, CELL - side)
        y0 = (cell // GRID) * CELL + rng.randint(0, CELL - side)
        if n == 0:  # the star, measured from its drawn pixels so the box is tight
            mask = Image.new("L", (side, side))
            draw_shape(ImageDraw.Draw(mask), TARGET, (0, 0, side, side), 255)
            image.paste(COLORS[color], (x0, y0, x0 + side, y0 + side), mask)
            mx0, my0, mx1, my1 = mask.getbbox()
            bbox = [x0 + mx0, y0 + my0, x0 + mx1, y0 + my1]
        else:
            draw_shape(draw, rng.choice(DISTRACTORS), (x0, y0, x0 + side, y0 + side), COLORS[rng.choice(OPTIONS)])

    crop = crop_image(image, expand_box(bbox, size, margin=0.25, min_side=CELL))
    try:
        negative = negative_crop(image, bbox, crop.size, factor=2, seed=rng.getrandbits(32))
    except NoRoomForNegative:  # a star near the centre leaves no crop-sized room in the 64-pixel downsample
        negative = negative_crop(image, bbox, crop.size, factor=1, seed=rng.getrandbits(32))
    return {
        "id": f"mini-{seed}-{split}-{index:06d}",
        "prompt": [{"role": "user", "content": QUESTION}],
        "image": image,
        "bbox": bbox,
        "crop": crop,
        "negative_crop": negative,
        "random_crop": crop_image(image, random_box(size, crop.size, seed=rng.getrandbits(32))),
        "answer": LETTERS[OPTIONS.index(color)],
    }


def make_rows(num_examples: int, seed: int = 0, split: str = "train") -> list[dict]:
    """`num_examples` rows of [`make_example`], indices `0..num_examples-1`, as a list (PIL images in memory)."""
    return [make_example(index, seed=seed, split=split) for index in range(num_examples)]


def make_dataset(num_examples: int, seed: int = 0, split: str = "train") -> datasets.Dataset:
    """The rows of [`make_rows`] as a [`~datasets.Dataset`] with the trainer's schema (`FEATURES`)."""
    return datasets.Dataset.from_list(make_rows(num_examples, seed, split), features=FEATURES)


def reference_answer(letter: str, world: World) -> str:
    """
    The answer the models are taught to give for the option `letter` in `world`.

    >>> reference_answer("C", "letter"), reference_answer("C", "drift")
    ('The answer is C.', 'The star is blue, so the answer is C.')
    """
    if world in ("letter", "prior"):
        return f"The answer is {letter}."
    if world == "drift":
        return f"The {TARGET} is {OPTIONS[LETTERS.index(letter)]}, so the answer is {letter}."
    raise ValueError(f"world must be one of {WORLDS}, got {world!r}.")


def parse_answer(text: str) -> str | None:
    """The option letter of a completion that ends with `answer is X.`, else `None` (an unparsable answer)."""
    match = _LETTER_AT_END.search(text.strip())
    return match.group(1) if match else None
