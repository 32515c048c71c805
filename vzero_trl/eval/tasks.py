"""Benchmark adapters: the paper's Table 1 benchmarks, from their public dataset ids or local parquet, as one record type.

[`load_benchmark`] reads a benchmark from its public Hub dataset ([`DATASETS`]) or from a local copy in the same schema
and turns each row into an [`EvalItem`]: the image, the question as the model sees it, the reference answer and the
fields the benchmark's score is aggregated over. Images are decoded when `item.image` is read, not when the benchmark is
loaded, so a loaded MME-RealWorld (about 23.5k rows of ~3 Mpx) or HR-Bench 8K (800 rows of ~33 Mpx) holds no pixels.

Each `question` is what the model sees after ZwZ's system prompt (which asks for the answer in `<answer>` tags): options
on their own lines, laid out as the benchmark or its reference evaluation lays them out, with its answer instruction:

- V*: `text` as published, the question, `(A) ...` lines and "Answer with the option's letter from the given choices
  directly.".
- HR-Bench (options are columns): question, `Options:`, `A. ...` lines, [`HRBENCH_INSTRUCTION`], as in the HR-Bench
  authors' VLMEvalKit evaluation.
- ZoomBench: the prompt as published; MCQ rows end "Select from the following choices." and `(A) ...` lines.
- MME-RealWorld: question, " The choices are listed below:", `(A) ...` lines, [`MME_REALWORLD_INSTRUCTION`] (the
  official prompt, identical in lmms-eval and VLMEvalKit, "The best answer is:" included).
- MMStar: its inline `Options: A: ..., B: ...` re-laid as HR-Bench's `Options:` and `A. ...` lines, as VLMEvalKit shows
  MMStar, with the same instruction. A question in no known layout is shown as published.

Schemas were read from the reference evaluations: lmms-eval (`lmms_eval/tasks/{vstar_bench,hrbench,mme_realworld,
mmstar}/utils.py` and `*.yaml`), VLMEvalKit (`vlmeval/dataset/image_mcq.py`: `MMERealWorld`, `HRBenchDataset`,
`ImageMCQDataset.build_prompt`; `vlmeval/dataset/utils/hrbench.py`), the HR-Bench authors' fork
(`DreamMr/HR-Bench:hrbench/vlmeval/dataset/utils/hrbench.py`) and ZwZ (`inclusionAI/Zooming-without-Zooming:
utils/convert_benchmark.py`), cross-checked against third-party loaders of the same Hub files.
"""

import base64
import binascii
import json
import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Literal

import datasets
import pyarrow.parquet as pq
from PIL import Image

from ..images import BadImage, load_image


# Table 1 column order: general perception (VStar, HR-4K, HR-8K, ZoomBench, MME-RealWorld), then OOD (MMStar).
BENCHMARKS = ("vstar", "hrbench_4k", "hrbench_8k", "zoombench", "mme_realworld", "mmstar")
Benchmark = Literal["vstar", "hrbench_4k", "hrbench_8k", "zoombench", "mme_realworld", "mmstar"]


@dataclass
class EvalItem:
    """
    One benchmark question, normalised.

    Attributes:
        benchmark (`str`):
            One of `BENCHMARKS`.
        id (`str`):
            Unique within the benchmark and stable across loads (used to resume and to join predictions).
        image (`PIL.Image.Image`):
            The full image, RGB.
        question (`str`):
            The text shown to the model: the question and, for multiple choice, its options laid out as the benchmark
            (or its reference evaluation) lays them out, plus the benchmark's answer instruction if it has one.
        answer (`str`):
            The reference answer: an option letter (`"A"`...) for multiple choice, a short text for open-ended rows.
        kind (`str`):
            `"mcq"` or `"open"`.
        options (`dict[str, str]`):
            Option letter -> option text for multiple choice (empty for open-ended rows).
        category (`str`, *optional*):
            The benchmark's own category (V* `direct_attributes` / `relative_position`, HR-Bench `single` / `cross`,
            MME-RealWorld domain such as `Monitoring` or `Remote Sensing`, MMStar category).
        group (`str`, *optional*):
            What the benchmark's score aggregates over besides items: HR-Bench `cycle_category`, MME-RealWorld
            `Perception` / `Reasoning`.
    """

    benchmark: str
    id: str
    image: Image.Image
    question: str
    answer: str
    kind: Literal["mcq", "open"]
    options: dict[str, str] = field(default_factory=dict)
    category: str | None = None
    group: str | None = None


class LazyEvalItem(EvalItem):
    """
    An [`EvalItem`] whose `image` is decoded from where the benchmark stores it each time it is read, and not kept:
    what [`load_benchmark`] returns. Construct it like an `EvalItem`, with a zero-argument function returning the RGB
    image (or with the image itself). A subclass because a dataclass field cannot also be a property.
    """

    @property
    def image(self) -> Image.Image:
        try:
            return self._load_image()
        except BadImage as error:
            raise BadImage(error.reason, f"{self.benchmark} item {self.id}: {error}") from error

    @image.setter
    def image(self, image: Image.Image | Callable[[], Image.Image]) -> None:
        self._load_image = image if callable(image) else partial(_same, image)


def _same(image: Image.Image) -> Image.Image:
    return image


@dataclass(frozen=True)
class BenchmarkSource:
    """
    Where a benchmark is published, and the columns its adapter reads.

    Attributes:
        dataset (`str`):
            Hub dataset id.
        split (`str`):
            Split holding the benchmark.
        image (`str`):
            Column holding the image.
        columns (`tuple[str, ...]`):
            Other columns the adapter needs; `"a|b"` accepts either name.
        id (`str`, *optional*):
            Column holding the dataset's own row id. Rows without it are numbered by position in the split.
        config (`str`, *optional*):
            Config (subset) name, for datasets with several.
        revision (`str`, *optional*):
            Commit the default load is pinned to, for reproducibility (`None`: the default branch).
    """

    dataset: str
    split: str
    image: str
    columns: tuple[str, ...]
    id: str | None = None
    config: str | None = None
    revision: str | None = None


# HR-Bench (800 rows per split) keeps both resolutions in one config with a split each; `image` is a base64 JPEG
# string, options are the columns A-D, `category` is single/cross and `cycle_category` names one of the 4 option
# rotations of the 200 questions (VLMEvalKit averages accuracy over it). Files hr_bench_{4k,8k}.parquet (0.43/2.8 GB).
_HRBENCH_COLUMNS = ("question", "A", "B", "C", "D", "answer", "category", "cycle_category")

DATASETS = {
    # 191 rows (115 direct_attributes, 76 relative_position), data/test-00000-of-00001.parquet. `image` is an Image
    # feature; `text` holds the question, 2 or 4 `(A) ...` lines and the answer instruction; `label` is the letter.
    # lmms-eval vstar_bench/_default_template_yaml; the official craigwu/vstar_bench has the same fields as jsonl.
    "vstar": BenchmarkSource(
        "lmms-lab/vstar-bench",
        "test",
        "image",
        ("text", "label", "category"),
        id="question_id",
        revision="b44023b4dca749ed8a76b85eb576627d05a1c174",
    ),
    "hrbench_4k": BenchmarkSource(
        "DreamMr/HR-Bench",
        "hrbench_4k",
        "image",
        _HRBENCH_COLUMNS,
        id="index",
        config="hrbench_version_split",
        revision="83b9013d6293b85dc507e87199ca52517536939c",
    ),
    "hrbench_8k": BenchmarkSource(
        "DreamMr/HR-Bench",
        "hrbench_8k",
        "image",
        _HRBENCH_COLUMNS,
        id="index",
        config="hrbench_version_split",
        revision="83b9013d6293b85dc507e87199ca52517536939c",
    ),
    # 845 rows (621 MCQ, 224 open-ended), data/test.parquet (3.9 GB). The parquet has `id`, `query`, `response`,
    # `image`, `crop_image` (Image features; the crop can be missing, some images are RGBA); ZwZ's converter reads
    # the names of the dataset card, `prompt` and `answer`. No per-row category.
    "zoombench": BenchmarkSource(
        "inclusionAI/ZoomBench",
        "test",
        "image",
        ("query|prompt", "response|answer"),
        id="id",
        revision="b788097e57d30510c6877824833234a73bf80d25",
    ),
    # The English set (about 23.5k rows in 70 shards). `bytes` is a base64 image string, `multi-choice options` a list
    # of 5 `(A) ...` strings, `answer` a letter, `category` `Perception/<domain>` or `Reasoning/<domain>` (lmms-eval
    # derives Perception/Reasoning from it), `l2-category` the task. The pin is seen in one third-party loader only.
    "mme_realworld": BenchmarkSource(
        "yifanzhang114/MME-RealWorld-Lmms-eval",
        "train",
        "bytes",
        ("question", "multi-choice options", "answer", "category"),
        id="index",
        revision="f157390129e8d2b60757eb68d340aade9446b52b",
    ),
    # 1,500 rows, mmstar.parquet: `image` (encoded bytes, an Image feature through the card), `question` with inline
    # options (`Options: A: ..., B: ...`, 2 to 6 of them; MathVista rows use `Choices:` and `(A) ...` lines),
    # `answer` letter, `category` (6 capabilities), `l2_category` (18), `meta_info`. MMMU rows keep their `<image 1>`.
    "mmstar": BenchmarkSource(
        "Lin-Chen/MMStar",
        "val",
        "image",
        ("question", "answer", "category"),
        id="index",
        revision="bc98d668301da7b14f648724866e57302778ab27",
    ),
}

HRBENCH_INSTRUCTION = MMSTAR_INSTRUCTION = "Please select the correct answer from the options above."
MME_REALWORLD_INSTRUCTION = (
    "Select the best answer to the above multiple-choice question based on the image. Respond with only the letter "
    "(A, B, C, D, or E) of the correct option.\nThe best answer is:"
)


def load_benchmark(
    name: Benchmark, source: str | None = None, *, revision: str | None = None, limit: int | None = None
) -> list[EvalItem]:
    """
    Load a benchmark as [`EvalItem`]s, in the order of its split.

    Args:
        name (`str`):
            One of `BENCHMARKS`.
        source (`str`, *optional*):
            Hub dataset id, or a local copy in the schema of the Hub dataset: a `.parquet` or `.jsonl` file (images as
            the dataset stores them: `Image` feature bytes, base64 strings, or paths relative to the file), or a folder
            written by `save_to_disk`. Defaults to the benchmark's dataset in [`DATASETS`]. A Hub source is read with
            the config and split of [`DATASETS`].
        revision (`str`, *optional*):
            Hub commit, branch or tag. Defaults to the pin in [`DATASETS`] for the default dataset, and to the default
            branch for another Hub id. Not allowed with a local source.
        limit (`int`, *optional*):
            Load only the first `limit` rows. Only those rows are read: a Hub dataset is streamed instead of downloaded,
            a local file is read from its start.

    Returns:
        `list[EvalItem]`: One item per row, each decoding its image when `item.image` is read.

    Raises:
        ValueError: For an unknown benchmark, a bad `limit`, a source lacking a column the adapter reads (the message
            names them and the expected schema), an unsupported local file, an empty source, or a row that is not a
            question (a missing or empty field, a gold answer that is not one of its option letters), named by its id.
            [`read_benchmark`] keeps the other rows instead.
        FileNotFoundError: For a local path that does not exist.
    """
    items, broken = read_benchmark(name, source, revision=revision, limit=limit)
    if broken:
        raise ValueError(broken[0]["error"])
    return items


def read_benchmark(
    name: Benchmark, source: str | None = None, *, revision: str | None = None, limit: int | None = None
) -> tuple[list[EvalItem], list[dict[str, str]]]:
    """
    [`load_benchmark`], but a row that is not a question (a missing or empty field, a gold answer that is not one of
    its option letters) does not stop the others: it is returned apart, as `{"benchmark", "id", "error"}` with the
    error naming the benchmark, the row and the source. Within `limit`, items and broken rows together are the first
    `limit` rows.

    Returns:
        `tuple[list[EvalItem], list[dict]]`: The items, and the broken rows.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown benchmark {name!r}; choose from {list(BENCHMARKS)}.")
    if limit is not None and limit < 1:
        raise ValueError(f"`limit` must be a positive number of rows or None, got {limit}.")
    spec = DATASETS[name]
    where = str(source or spec.dataset)
    items, broken = [], []
    for position, (row, image) in enumerate(islice(_rows(name, spec, source, revision, limit), limit)):
        item_id = str(row[spec.id]) if spec.id in row else str(position)
        try:
            fields = item_fields(name, row)
        except (KeyError, ValueError, TypeError, AttributeError) as error:  # a missing or None field, a wrong answer
            reason = f"no field {error.args[0]!r}" if isinstance(error, KeyError) else str(error).rstrip(".")
            empty = [need for need in spec.columns if all(row.get(c) is None for c in need.split("|"))]
            reason += f" (missing or empty: {', '.join(empty)})." if empty else "."
            broken.append({"benchmark": name, "id": item_id, "error": f"{name} row {item_id} of {where}: {reason}"})
        else:
            items.append(LazyEvalItem(name, item_id, image, **fields))
    if not items and not broken:
        raise ValueError(f"{where} holds no {name} rows (split {spec.split!r}).")
    # Stored predictions are keyed by id: two rows with one id would be scored from one record.
    counts = Counter([item.id for item in items] + [row["id"] for row in broken])
    duplicated = [item_id for item_id, count in counts.items() if count > 1]
    if duplicated:
        shown = ", ".join(repr(item_id) for item_id in duplicated[:10]) + (" ..." if len(duplicated) > 10 else "")
        raise ValueError(
            f"{where} holds {len(duplicated)} {name} id(s) on more than one row ({shown}), and each result is stored "
            f"under its row's id. Give every row its own `{spec.id}`, or drop that column to key the rows by position."
        )
    return items, broken


def item_fields(name: Benchmark, row: dict) -> dict:
    """
    One raw row of a benchmark (in its public schema, image columns ignored) as the [`EvalItem`] fields besides
    `benchmark`, `id` and `image`: `question` laid out for the model, `answer`, `kind`, `options`, `category`, `group`.
    Raises `ValueError` for a row whose gold answer is not one of its option letters.
    """
    if name == "vstar":
        return _vstar(row)
    if name in ("hrbench_4k", "hrbench_8k"):
        return _hrbench(row)
    if name == "zoombench":
        return _zoombench(row)
    if name == "mme_realworld":
        return _mme_realworld(row)
    if name == "mmstar":
        return _mmstar(row)
    raise ValueError(f"Unknown benchmark {name!r}; choose from {list(BENCHMARKS)}.")


# --- reading rows ------------------------------------------------------------------------------------------------------


def _rows(
    name: str, spec: BenchmarkSource, source: str | None, revision: str | None, limit: int | None
) -> Iterator[tuple[dict, Callable[[], Image.Image]]]:
    """The rows of a source, without their image, each with a function decoding its image."""
    if source and is_local_source(source):
        path = Path(source).expanduser()
        if revision is not None:
            raise ValueError(f"`revision` is for Hub datasets; {source} is a local path.")
        if not path.exists():
            raise FileNotFoundError(f"No benchmark file or folder at {path}.")
        if path.is_dir():
            yield from _dataset_rows(name, spec, _load_from_disk(path, spec), str(path), None)
        elif path.suffix not in (".parquet", ".jsonl"):
            raise ValueError(
                f"Unsupported benchmark file {path}: expected a .parquet or .jsonl file, or a save_to_disk folder."
            )
        elif limit is not None:
            rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
            yield from _memory_rows(name, spec, rows, str(path), path.parent)
        else:
            read = datasets.Dataset.from_parquet if path.suffix == ".parquet" else datasets.Dataset.from_json
            yield from _dataset_rows(name, spec, read(str(path)), str(path), path.parent)
        return
    dataset_id = source or spec.dataset
    if revision is None and dataset_id == spec.dataset:
        revision = spec.revision
    # Streaming reads only the first rows of the first file: a `limit`ed look at HR-Bench 8K does not fetch 2.8 GB.
    loaded = datasets.load_dataset(
        dataset_id, spec.config, split=spec.split, revision=revision, streaming=limit is not None
    )
    if limit is None:
        yield from _dataset_rows(name, spec, loaded, dataset_id, None)
    else:
        if isinstance((loaded.features or {}).get(spec.image), datasets.Image):
            loaded = loaded.cast_column(spec.image, datasets.Image(decode=False))  # decoded by `load_image`
        yield from _memory_rows(name, spec, loaded, dataset_id, None)


def is_local_source(source: str) -> bool:
    """Whether `source` names a local path rather than a Hub id: an existing path, a `.parquet`/`.jsonl` file name, or
    a path starting with `.`, `/` or `~` (a Hub id "owner/name" also reads as a relative path)."""
    return Path(source).expanduser().exists() or source.endswith((".parquet", ".jsonl")) or source[0] in "./~"


def _load_from_disk(path: Path, spec: BenchmarkSource) -> datasets.Dataset:
    if not (path / "dataset_info.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise ValueError(f"{path} is not a folder written by `save_to_disk`; pass a .parquet or .jsonl file instead.")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise ValueError(f"{path} has the splits {list(loaded)}, not {spec.split!r}.")
        loaded = loaded[spec.split]
    return loaded


def _parquet_rows(path: Path) -> Iterator[dict]:
    # Without pre-buffering, pages are read as rows are needed: a row group of 8K images is not read whole.
    parquet = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    for batch in parquet.iter_batches(batch_size=8):
        yield from batch.to_pylist()


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                yield json.loads(line)


def _memory_rows(
    name: str, spec: BenchmarkSource, rows: Iterable[dict], where: str, image_dir: Path | None
) -> Iterator[tuple[dict, Callable[[], Image.Image]]]:
    for position, row in enumerate(rows):
        if position == 0:
            _check_columns(name, spec, row.keys(), where)
        yield row, partial(_decode, row.pop(spec.image), image_dir)


def _dataset_rows(
    name: str, spec: BenchmarkSource, dataset: datasets.Dataset, where: str, image_dir: Path | None
) -> Iterator[tuple[dict, Callable[[], Image.Image]]]:
    _check_columns(name, spec, dataset.column_names, where)
    # The text fields are read without touching any image; an item reads its image from the memory-mapped table.
    # Encoded bytes, not decoded by `datasets`: `load_image` decodes them, so a corrupt image raises `BadImage`.
    images = dataset.select_columns([spec.image])
    pictures = [column for column, kind in dataset.features.items() if isinstance(kind, datasets.Image)]
    if spec.image in pictures:
        images = images.cast_column(spec.image, datasets.Image(decode=False))
    for position, row in enumerate(dataset.remove_columns(sorted({spec.image, *pictures}))):
        yield row, partial(_dataset_image, images, position, spec.image, image_dir)


def _check_columns(name: str, spec: BenchmarkSource, columns: Iterable[str], where: str) -> None:
    columns = set(columns)
    needed = (spec.image, *spec.columns)
    missing = [need for need in needed if not any(column in columns for column in need.split("|"))]
    if missing:
        expected = ", ".join(need.replace("|", " or ") for need in needed)
        raise ValueError(
            f"{where} lacks the column(s) {missing} that the {name} adapter reads. Expected the schema of "
            f"{spec.dataset} (split {spec.split!r}): {expected}"
            + (f", and optionally {spec.id} (the row id)." if spec.id else ".")
        )


def _dataset_image(images: datasets.Dataset, index: int, column: str, image_dir: Path | None) -> Image.Image:
    return _decode(images[index][column], image_dir)


def _decode(value: object, image_dir: Path | None) -> Image.Image:
    """An RGB image (transparency flattened onto white) from a PIL image, an `Image` feature dict, encoded bytes, a
    file path or a base64 string."""
    if isinstance(value, str) and not _is_file(value, image_dir):
        try:
            value = base64.b64decode(value)
        except binascii.Error as error:
            raise BadImage("unreadable_image", f"neither an image file nor base64 image data ({error}).") from error
    return load_image(value, image_dir)


def _is_file(value: str, image_dir: Path | None) -> bool:
    try:
        return Path(image_dir or "", value).is_file()
    except (OSError, ValueError):  # a base64 string is too long (or odd) for a path
        return False


# --- adapters: one row -> the EvalItem fields besides benchmark, id and image -------------------------------------------


def _vstar(row: dict) -> dict:
    text = row["text"].strip()
    _, options = _paren_options(text)
    return _mcq(text, row["label"], options, category=row["category"])


def _hrbench(row: dict) -> dict:
    options = {letter: str(row[letter]).strip() for letter in "ABCD" if _present(row[letter])}
    lines = "".join(f"{letter}. {text}\n" for letter, text in options.items())
    question = f"{row['question'].strip()}\nOptions:\n{lines}{HRBENCH_INSTRUCTION}"
    return _mcq(question, row["answer"], options, category=row["category"], group=str(row["cycle_category"]))


def _zoombench(row: dict) -> dict:
    # The parquet's `query`/`response` or the card's `prompt`/`answer`. A row is multiple choice when its prompt lists
    # options and the answer is one of their letters; otherwise the answer is a short text (a count, a word...).
    prompt = (row["query"] if "query" in row else row["prompt"]).strip()
    answer = str(row["response"] if "response" in row else row["answer"]).strip()
    _, options = _paren_options(prompt)
    if _letter(answer) in options:
        return _mcq(prompt, answer, options)
    return dict(question=prompt, answer=answer, kind="open", options={})


def _mme_realworld(row: dict) -> dict:
    options = {}
    for letter, text in zip(string.ascii_uppercase, row["multi-choice options"], strict=False):
        text = text.strip()
        marker = re.match(rf"\(\s*{letter}\s*\)\s*", text)  # "(A) text"; a bare text gets its position's letter
        options[letter] = text[marker.end() :] if marker else text
    lines = "\n".join(f"({letter}) {text}" for letter, text in options.items())
    question = f"{row['question'].strip()} The choices are listed below:\n{lines}\n{MME_REALWORLD_INSTRUCTION}"
    category = row["category"]
    group = "Perception" if "perception" in category.lower() else "Reasoning"  # lmms-eval's rule
    return _mcq(question, row["answer"], options, category=category.split("/")[-1], group=group)


def _mmstar(row: dict) -> dict:
    text = row["question"].strip()
    stem, options = _mmstar_options(text)
    letter = _letter(row["answer"])
    if letter in options:
        lines = "".join(f"{key}. {option}\n" for key, option in options.items())
        return _mcq(f"{stem}\nOptions:\n{lines}{MMSTAR_INSTRUCTION}", letter, options, category=row["category"])
    if letter is None:
        raise ValueError(f"the gold answer {row['answer']!r} is not an option letter.")
    # Scoring needs only the letter, so such a row stays in the benchmark, shown exactly as published.
    warnings.warn(
        f"MMStar question without a recognised options layout, shown as published: {text[:120]!r}", stacklevel=3
    )
    return dict(question=text, answer=letter, kind="mcq", options={}, category=row["category"])


def _mcq(question: str, answer: object, options: dict[str, str], **fields: str | None) -> dict:
    letter = _letter(answer)
    if letter is None or letter not in options:
        raise ValueError(f"the gold answer {answer!r} is not one of the option letters {list(options)}.")
    return dict(question=question, answer=letter, kind="mcq", options=options, **fields)


def _letter(value: object) -> str | None:
    """`"A"` from `"A"`, `"a"`, `"(A)"`, `"A."` or `" A "`; `None` for anything else."""
    match = re.fullmatch(r"\(?([A-Za-z])\)?\.?", str(value).strip())
    return match.group(1).upper() if match else None


def _present(value: object) -> bool:
    # Missing options are None in parquet, NaN in copies that went through pandas.
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value).strip() != ""


def _paren_options(text: str) -> tuple[str, dict[str, str]]:
    """
    Options written `(A) ...`, one per line or inline: the text before the first option, and letter -> option. An
    option ends at the next one or at the end of its line. Fewer than two options in sequence from `(A)`: no options.
    """
    markers = []
    for letter in string.ascii_uppercase:
        match = re.compile(rf"(?<!\S)\({letter}\)").search(text, markers[-1].end() if markers else 0)
        if match is None:
            break
        markers.append(match)
    if len(markers) < 2:
        return text, {}
    options = {}
    for match, following in zip(markers, [*markers[1:], None], strict=True):
        end = following.start() if following else len(text)
        line_end = text.find("\n", match.end())
        options[match.group()[1]] = text[match.end() : end if line_end == -1 else min(end, line_end)].strip()
    return text[: markers[0].start()].rstrip(), options


def _labelled_options(block: str) -> dict[str, str]:
    """Options written `A: ..., B: ...` or `A: ...` lines (MMStar); an option may itself contain commas."""
    first = re.match(r"\s*A(?::|\.\s)", block)
    if first is None:
        return {}
    starts, ends = [("A", first.end())], []
    for letter in string.ascii_uppercase[1:]:
        match = re.compile(rf"[,\n]\s*{letter}(?::|\.\s)").search(block, starts[-1][1])
        if match is None:
            break
        ends.append(match.start())
        starts.append((letter, match.end()))
    ends.append(len(block))
    options = {letter: block[start:end].strip() for (letter, start), end in zip(starts, ends, strict=True)}
    return options if len(options) >= 2 else {}


def _mmstar_options(text: str) -> tuple[str, dict[str, str]]:
    for label in ("Options:", "Choices:"):
        head, found, block = text.rpartition(label)
        if found and (options := _labelled_options(block)):
            return head.strip(), options
    stem, options = _paren_options(text)  # MathVista rows: "Hint: ...\nQuestion: ...\nChoices:\n(A) ...\n(B) ..."
    return stem.removesuffix("Choices:").removesuffix("Options:").strip(), options
