"""Small local copies of the Table 1 benchmarks, in the schema of each public dataset, for tests that cannot download.

`write_fixture(name, folder)` writes `folder/<name>.parquet` (the layout `scripts/evaluate.py --data_dir` reads) and
returns its path; `write_all_fixtures(folder)` writes all six. Each file stores its images as the real dataset does and
keeps the quirks the adapters must handle (see `vzero_trl.eval.tasks.DATASETS` for the schemas and their sources):

- `vstar`: `image` (`Image` feature), `text` with `(A) ...` lines and the answer instruction, `label`, `category`,
  `question_id`; 2 or 4 options; one label written ` c`.
- `hrbench_4k`, `hrbench_8k`: `index`, `question`, `A`-`D`, `answer`, `category` (single/cross), `cycle_category`,
  `image` (base64 JPEG); two questions, each in its 4 option rotations (correct option at A, B, C, D in cycles 0-3).
- `zoombench`: `id`, `query`, `response`, `image`, `crop_image` (`Image` features); MCQ and open-ended rows, an RGBA
  image, missing crops, and an MCQ-looking prompt whose answer is a value (an open-ended row).
- `mme_realworld`: `index`, `question`, `multi-choice options` (5 `(A) ...` strings), `answer`, `category`
  (`Perception/...`, `Reasoning/...`), `l2-category`, `bytes` (base64; one palette PNG with transparency).
- `mmstar`: `index`, `question` with inline options (`Options: A: ..., B: ...` with commas inside options, newline
  separated, 6 options, and a MathVista `Choices:` row), `image` (encoded bytes), `answer`, `category`,
  `l2_category`, `meta_info`.

Every image has its own size, so a test can tell which one it got.
"""

import base64
import io
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from vzero_trl.eval.tasks import BENCHMARKS


VSTAR_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def picture(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    """A plain background with a darker square in the middle."""
    image = Image.new("RGB", size, color)
    w, h = size
    ImageDraw.Draw(image).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=tuple(c // 2 for c in color))
    return image


def encode(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"transparency": 0} if image.mode == "P" else {}))
    return buffer.getvalue()


def transparent_rgba(size: tuple[int, int]) -> Image.Image:
    """Opaque blue on the left half, fully transparent (alpha 0, colour black) on the right half."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2 - 1, size[1] - 1), fill=(30, 60, 200, 255))
    return image


def transparent_palette(size: tuple[int, int]) -> Image.Image:
    """A palette image whose index 0 (black) is transparent: the top half; the bottom half is red (index 1)."""
    image = Image.new("P", size, 0)
    image.putpalette([0, 0, 0, 220, 30, 30] + [0, 0, 0] * 254)
    ImageDraw.Draw(image).rectangle((0, size[1] // 2, size[0] - 1, size[1] - 1), fill=1)
    return image


def write_vstar(folder: Path) -> Path:
    rows = [
        ("What is the material of the glove?", ["rubber", "cotton", "kevlar", "leather"], "A", "direct_attributes"),
        ("Is the dog on the left or right side of the river?", ["left", "right"], "B", "relative_position"),
        ("What is the color of the dustpan?", ["purple", "red", "blue", "white"], " c", "direct_attributes"),
        ("Is the clock on the left or right side of the lamp?", ["left", "right"], "A", "relative_position"),
    ]
    records = {"image": [], "text": [], "label": [], "category": [], "question_id": []}
    for i, (question, options, label, category) in enumerate(rows):
        lines = "".join(f"({'ABCD'[k]}) {option}\n" for k, option in enumerate(options))
        records["image"].append({"bytes": encode(picture((64 + 8 * i, 48), (200, 150, 40))), "path": f"sa_{i}.jpg"})
        records["text"].append(f"{question}\n{lines}{VSTAR_INSTRUCTION}")
        records["label"].append(label)
        records["category"].append(category)
        records["question_id"].append(i)
    features = datasets.Features(
        image=datasets.Image(),
        text=datasets.Value("string"),
        label=datasets.Value("string"),
        category=datasets.Value("string"),
        question_id=datasets.Value("int64"),
    )
    return _write(datasets.Dataset.from_dict(records, features=features), folder / "vstar.parquet")


def write_hrbench(folder: Path, resolution: str) -> Path:
    """Two questions x 4 option rotations; `resolution` is "4k" or "8k" (the 8K images are larger)."""
    questions = [
        ("What is the color of the umbrella held by the woman?", ["red", "blue", "green", "yellow"], "single"),
        ("Which building is taller, the hotel or the bank?", ["the hotel", "the bank", "same", "unknown"], "cross"),
    ]
    width = 96 if resolution == "4k" else 128
    rows = []
    for q, (question, options, category) in enumerate(questions):
        for cycle in range(4):
            rotated = options[-cycle:] + options[:-cycle] if cycle else options  # correct one moves to A, B, C, D
            image = picture((width + q, width * 9 // 16), (90, 140, 200))
            rows.append({
                "index": 4 * q + cycle,
                "question": question,
                **dict(zip("ABCD", rotated, strict=True)),
                "answer": "ABCD"[cycle],
                "category": category,
                "cycle_category": cycle,
                "image": base64.b64encode(encode(image)).decode(),
            })  # fmt: skip
    return _write(datasets.Dataset.from_list(rows), folder / f"hrbench_{resolution}.parquet")


def write_zoombench(folder: Path) -> Path:
    choices = " Select from the following choices."
    rows = [
        (f"How many birds are on the wire?{choices}\n(A) 3\n(B) 4\n(C) 5\n(D) 6", "B", True),
        ("What is the number on the bus? Answer with the number only.", "1024", True),
        (f"What color is the kite?{choices}\n(A) red\n(B) green\n(C) blue", "C", False),
        ("What material is the bench made of?", "wood", False),
        (f"How many windows are lit?{choices}\n(A) 2\n(B) 3", "3", True),
    ]
    records = {"id": [], "query": [], "response": [], "image": [], "crop_image": []}
    for i, (query, response, has_crop) in enumerate(rows):
        image = transparent_rgba((80, 40)) if i == 2 else picture((80 + 4 * i, 60), (60, 160, 90))
        records["id"].append(i)
        records["query"].append(query)
        records["response"].append(response)
        records["image"].append({"bytes": encode(image, "PNG"), "path": None})
        records["crop_image"].append(
            {"bytes": encode(picture((20, 20), (60, 160, 90))), "path": None} if has_crop else None
        )
    features = datasets.Features(
        id=datasets.Value("int64"),
        query=datasets.Value("string"),
        response=datasets.Value("string"),
        image=datasets.Image(),
        crop_image=datasets.Image(),
    )
    return _write(datasets.Dataset.from_dict(records, features=features), folder / "zoombench.parquet")


def write_mme_realworld(folder: Path) -> Path:
    none = "The image does not feature the {}."
    rows = [
        ("How many cars are in the parking lot?", ["3", "4", "5", "6", none.format("cars")], "B",
         "Perception/Monitoring", "vehicle/counting"),
        ("What is written on the red sign?", ["STOP", "EXIT", "OPEN", "PUSH", none.format("sign")], "E",
         "Perception/OCR with Complex Context", "text recognition/scene"),
        ("Which way should the ego car turn at the next crossing?", ["left", "right", "straight", "back",
         none.format("crossing")], "A", "Reasoning/Autonomous_Driving", "intention/ego"),
        ("What will the person by the door most likely do next?", ["sit", "run", "wait", "enter",
         none.format("person")], "D", "Reasoning/Monitoring", "person/prediction"),
    ]  # fmt: skip
    records = []
    for i, (question, options, answer, category, task) in enumerate(rows):
        image = (
            encode(transparent_palette((40, 30)), "PNG") if i == 1 else encode(picture((50 + i, 40), (120, 90, 60)))
        )
        records.append({
            "index": i,
            "question": question,
            "multi-choice options": [f"({'ABCDE'[k]}) {option}" for k, option in enumerate(options)],
            "answer": answer,
            "category": category,
            "l2-category": task,
            "bytes": base64.b64encode(image).decode(),
        })  # fmt: skip
    return _write(datasets.Dataset.from_list(records), folder / "mme_realworld.parquet")


MMSTAR_QUESTIONS = [
    (
        "Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is on the "
        "book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The suitcase is beneath "
        "the book.",
        "A", "coarse perception", "image scene and topic",
    ),
    (
        "What is shown?\nOptions: A: A cat, sitting on a mat., B: Two dogs, C: 3, 4, and 5, D: None",
        "C", "fine-grained perception", "recognition",
    ),
    ("Is the light on?\nOptions: A: Yes\nB: No", "B", "instance reasoning", "single-instance reasoning"),
    (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
        "Question: How many snowmen are there?\nChoices:\n(A) 10\n(B) 15\n(C) 12\n(D) 20",
        "C", "math", "numeric commonsense and calculation",
    ),
    (
        "In which year was the bridge opened?\nOptions: A: 1990, B: 1995, C: 2000, D: 2005, E: 2010, F: 2015",
        "F", "science & technology", "geography & earth science & agriculture",
    ),
]  # fmt: skip


def write_mmstar(folder: Path, questions: list[tuple[str, str, str, str]] = MMSTAR_QUESTIONS) -> Path:
    records = []
    for i, (question, answer, category, l2_category) in enumerate(questions):
        records.append({
            "index": i,
            "question": question,
            "image": encode(picture((32 + 2 * i, 32), (30, 30, 30 + 40 * i))),
            "answer": answer,
            "category": category,
            "l2_category": l2_category,
            "meta_info": {"source": "MMBench", "split": "val", "image_path": f"images/{i}.jpg"},
        })  # fmt: skip
    return _write(datasets.Dataset.from_list(records), folder / "mmstar.parquet")


def write_fixture(name: str, folder: str | Path) -> Path:
    """Write the local copy of benchmark `name` to `folder/<name>.parquet` and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if name == "vstar":
        return write_vstar(folder)
    if name in ("hrbench_4k", "hrbench_8k"):
        return write_hrbench(folder, name.removeprefix("hrbench_"))
    if name == "zoombench":
        return write_zoombench(folder)
    if name == "mme_realworld":
        return write_mme_realworld(folder)
    if name == "mmstar":
        return write_mmstar(folder)
    raise ValueError(f"No fixture for {name!r}; choose from {BENCHMARKS}.")


def write_all_fixtures(folder: str | Path) -> dict[str, Path]:
    """Write every benchmark's local copy into `folder`: benchmark name -> path."""
    return {name: write_fixture(name, folder) for name in BENCHMARKS}


def _write(dataset: datasets.Dataset, path: Path) -> Path:
    dataset.to_parquet(str(path))
    return path
