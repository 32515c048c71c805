"""Benchmark adapters, on local copies written in each public dataset's schema (tests/fixtures/benchmarks.py)."""

import base64
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.benchmarks import VSTAR_INSTRUCTION, encode, picture, write_all_fixtures, write_fixture, write_mmstar
from PIL import Image

from vzero_trl.eval.tasks import (
    BENCHMARKS,
    DATASETS,
    HRBENCH_INSTRUCTION,
    MME_REALWORLD_INSTRUCTION,
    EvalItem,
    LazyEvalItem,
    _letter,
    _paren_options,
    load_benchmark,
    read_benchmark,
)
from vzero_trl.images import BadImage


ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    # Full loads of a local parquet go through `Dataset.from_parquet`, which caches an Arrow copy: keep it out of ~.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
        yield


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return write_all_fixtures(tmp_path_factory.mktemp("benchmarks"))


def summary(items: list[EvalItem]) -> list[tuple]:
    """Everything an item carries, with its image as (mode, size, pixels)."""
    return [
        (i.benchmark, i.id, i.question, i.answer, i.kind, i.options, i.category, i.group,
         i.image.mode, i.image.size, i.image.tobytes())
        for i in items
    ]  # fmt: skip


def test_every_benchmark_has_a_default_source():
    assert tuple(DATASETS) == BENCHMARKS
    for spec in DATASETS.values():
        assert spec.dataset.count("/") == 1 and spec.split and spec.image
        assert spec.revision is None or re.fullmatch(r"[0-9a-f]{40}", spec.revision)
    assert DATASETS["hrbench_4k"].config == DATASETS["hrbench_8k"].config == "hrbench_version_split"
    assert (DATASETS["hrbench_4k"].split, DATASETS["hrbench_8k"].split) == ("hrbench_4k", "hrbench_8k")


def test_write_all_fixtures(tmp_path):
    paths = write_all_fixtures(tmp_path)
    assert list(paths) == list(BENCHMARKS)
    assert all(path == tmp_path / f"{name}.parquet" and path.is_file() for name, path in paths.items())
    with pytest.raises(ValueError, match="No fixture"):
        write_fixture("vqa", tmp_path)


def test_vstar(fixtures):
    items = load_benchmark("vstar", str(fixtures["vstar"]))
    assert all(isinstance(item, EvalItem) for item in items)
    assert [i.id for i in items] == ["0", "1", "2", "3"]
    assert items[0].question == (
        "What is the material of the glove?\n(A) rubber\n(B) cotton\n(C) kevlar\n(D) leather\n" + VSTAR_INSTRUCTION
    )
    assert [i.options for i in items[:2]] == [
        {"A": "rubber", "B": "cotton", "C": "kevlar", "D": "leather"},
        {"A": "left", "B": "right"},
    ]
    assert [i.answer for i in items] == ["A", "B", "C", "A"]  # the label " c" is normalised
    assert [i.kind for i in items] == ["mcq"] * 4
    assert [i.category for i in items] == ["direct_attributes", "relative_position"] * 2
    assert [i.group for i in items] == [None] * 4
    assert [(i.image.mode, i.image.size) for i in items] == [("RGB", (64 + 8 * k, 48)) for k in range(4)]


@pytest.mark.parametrize("name, width", [("hrbench_4k", 96), ("hrbench_8k", 128)])
def test_hrbench_cycles(fixtures, name, width):
    items = load_benchmark(name, str(fixtures[name]))
    assert [i.id for i in items] == [str(k) for k in range(8)]
    assert [i.answer for i in items] == list("ABCD") * 2  # each question in its 4 rotations
    assert [i.group for i in items] == ["0", "1", "2", "3"] * 2
    assert [i.category for i in items] == ["single"] * 4 + ["cross"] * 4
    assert {i.options[i.answer] for i in items[:4]} == {"red"} and {i.options[i.answer] for i in items[4:]} == {
        "the hotel"
    }
    assert items[1].question == (
        "What is the color of the umbrella held by the woman?\nOptions:\nA. yellow\nB. red\nC. blue\nD. green\n"
        + HRBENCH_INSTRUCTION
    )
    assert [i.image.size for i in items] == [(width, width * 9 // 16)] * 4 + [(width + 1, width * 9 // 16)] * 4
    assert {i.image.mode for i in items} == {"RGB"}


def test_hrbench_missing_options_are_left_out(fixtures, tmp_path):
    # None in parquet, NaN in a copy that went through pandas (json reads the NaN literal back as a float).
    rows = pq.read_table(fixtures["hrbench_4k"]).to_pylist()[:2]
    rows[0]["D"], rows[1]["D"] = None, float("nan")
    (tmp_path / "hrbench_4k.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    items = load_benchmark("hrbench_4k", str(tmp_path / "hrbench_4k.jsonl"))
    assert [list(i.options) for i in items] == [["A", "B", "C"]] * 2
    assert items[0].question.endswith("\nC. green\n" + HRBENCH_INSTRUCTION)


def test_zoombench_mcq_and_open_rows(fixtures):
    items = load_benchmark("zoombench", str(fixtures["zoombench"]))
    assert [i.id for i in items] == ["0", "1", "2", "3", "4"]
    assert [(i.kind, i.answer) for i in items] == [
        ("mcq", "B"),
        ("open", "1024"),
        ("mcq", "C"),
        ("open", "wood"),
        ("open", "3"),  # options listed but the answer is a value, not a letter
    ]
    assert items[0].question == (
        "How many birds are on the wire? Select from the following choices.\n(A) 3\n(B) 4\n(C) 5\n(D) 6"
    )
    assert items[0].options == {"A": "3", "B": "4", "C": "5", "D": "6"}
    assert items[2].options == {"A": "red", "B": "green", "C": "blue"}
    assert [i.options for i in items if i.kind == "open"] == [{}, {}, {}]
    assert {(i.category, i.group) for i in items} == {(None, None)}
    kite = items[2].image  # RGBA: opaque blue left half, transparent black right half
    assert (kite.mode, kite.size) == ("RGB", (80, 40))
    assert kite.getpixel((10, 20)) == (30, 60, 200) and kite.getpixel((70, 20)) == (255, 255, 255)


def test_zoombench_card_schema(fixtures, tmp_path):
    # ZwZ's converter reads the dataset card's names, `prompt` and `answer`; without `id` rows are numbered.
    table = pq.read_table(fixtures["zoombench"])
    card = table.drop_columns(["id"]).rename_columns(["prompt", "answer", "image", "crop_image"])
    pq.write_table(card, tmp_path / "zoombench.parquet")
    items = load_benchmark("zoombench", str(tmp_path / "zoombench.parquet"))
    expected = load_benchmark("zoombench", str(fixtures["zoombench"]))
    assert summary(items) == summary(expected)


def test_mme_realworld(fixtures):
    items = load_benchmark("mme_realworld", str(fixtures["mme_realworld"]))
    assert [i.id for i in items] == ["0", "1", "2", "3"]
    assert items[0].question == (
        "How many cars are in the parking lot? The choices are listed below:\n(A) 3\n(B) 4\n(C) 5\n(D) 6\n"
        "(E) The image does not feature the cars.\n" + MME_REALWORLD_INSTRUCTION
    )
    assert items[0].options == {"A": "3", "B": "4", "C": "5", "D": "6", "E": "The image does not feature the cars."}
    assert [i.answer for i in items] == ["B", "E", "A", "D"]
    assert [i.group for i in items] == ["Perception", "Perception", "Reasoning", "Reasoning"]
    assert [i.category for i in items] == [
        "Monitoring",
        "OCR with Complex Context",
        "Autonomous_Driving",
        "Monitoring",
    ]
    sign = items[1].image  # palette PNG, transparent top half, red bottom half
    assert (sign.mode, sign.size) == ("RGB", (40, 30))
    assert sign.getpixel((5, 5)) == (255, 255, 255) and sign.getpixel((5, 25)) == (220, 30, 30)


def test_mmstar_layouts(fixtures):
    items = load_benchmark("mmstar", str(fixtures["mmstar"]))
    assert [i.options for i in items] == [
        {
            "A": "The suitcase is on the book.",
            "B": "The suitcase is beneath the cat.",
            "C": "The suitcase is beneath the bed.",
            "D": "The suitcase is beneath the book.",
        },
        {"A": "A cat, sitting on a mat.", "B": "Two dogs", "C": "3, 4, and 5", "D": "None"},  # commas inside options
        {"A": "Yes", "B": "No"},  # one option per line
        {"A": "10", "B": "15", "C": "12", "D": "20"},  # MathVista's `Choices:` layout
        dict(zip("ABCDEF", ["1990", "1995", "2000", "2005", "2010", "2015"], strict=True)),
    ]
    assert items[1].question == (
        "What is shown?\nOptions:\nA. A cat, sitting on a mat.\nB. Two dogs\nC. 3, 4, and 5\nD. None\n"
        "Please select the correct answer from the options above."
    )
    assert items[3].question == (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
        "Question: How many snowmen are there?\nOptions:\nA. 10\nB. 15\nC. 12\nD. 20\n"
        "Please select the correct answer from the options above."
    )
    assert [i.answer for i in items] == ["A", "C", "B", "C", "F"]
    assert [i.category for i in items][:2] == ["coarse perception", "fine-grained perception"]
    assert {(i.kind, i.group) for i in items} == {("mcq", None)}
    assert [i.image.size for i in items] == [(32 + 2 * k, 32) for k in range(5)]  # stored as plain encoded bytes


def test_mmstar_row_without_options_layout_is_kept_as_published(tmp_path):
    text = "Which of the four pictures in the figure shows a square? Answer with its letter."
    path = write_mmstar(tmp_path, [(text, "b", "logical reasoning", "diagram reasoning")])
    with pytest.warns(UserWarning, match="without a recognised options layout"):
        (item,) = load_benchmark("mmstar", str(path))
    assert (item.question, item.answer, item.kind, item.options) == (text, "B", "mcq", {})


def test_option_and_letter_parsing():
    assert _paren_options("How many? (A) 0 (B) 2 (C) 3") == ("How many?", {"A": "0", "B": "2", "C": "3"})
    assert _paren_options("Pick:\n(A) x (y)\n(B) z\nAnswer now.") == ("Pick:", {"A": "x (y)", "B": "z"})
    assert _paren_options("Only (A) one option") == ("Only (A) one option", {})
    assert _paren_options("(B) no A\n(C) c") == ("(B) no A\n(C) c", {})
    assert [_letter(v) for v in ["A", " b ", "(C)", "D.", "AB", "1", "", None]] == ["A", "B", "C", "D"] + [None] * 4


def test_limit_reads_only_the_first_rows(fixtures, tmp_path):
    # Rows after the limit are never read: a broken gold answer there only fails a full load.
    rows = pq.read_table(fixtures["hrbench_4k"]).to_pylist()
    rows[-1]["answer"] = "Z"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hrbench_4k.parquet")
    (tmp_path / "hrbench_4k.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for source in ("hrbench_4k.parquet", "hrbench_4k.jsonl"):
        items = load_benchmark("hrbench_4k", str(tmp_path / source), limit=3)
        assert [i.id for i in items] == ["0", "1", "2"]
        with pytest.raises(ValueError, match=r"hrbench_4k row 7 of .*: the gold answer 'Z' is not one of"):
            load_benchmark("hrbench_4k", str(tmp_path / source))
    assert len(load_benchmark("hrbench_4k", str(fixtures["hrbench_4k"]), limit=100)) == 8


def test_images_are_decoded_when_read(fixtures, tmp_path):
    rows = pq.read_table(fixtures["hrbench_8k"]).to_pylist()
    rows[-1]["image"] = base64.b64encode(b"not an image").decode()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hrbench_8k.parquet")
    items = load_benchmark("hrbench_8k", str(tmp_path / "hrbench_8k.parquet"))  # loads: nothing is decoded yet
    assert items[0].image.size == (128, 72)
    assert items[0].image is not items[0].image  # decoded anew on every read, never kept
    with pytest.raises(BadImage, match="hrbench_8k item 7: image bytes: cannot decode"):
        _ = items[7].image


def test_a_corrupt_image_feature_names_its_benchmark_and_item(fixtures, tmp_path):
    # V* stores an `Image` feature: its bytes are decoded by vzero_trl, not by `datasets` (a bare OSError).
    table = pq.read_table(fixtures["vstar"])
    rows = table.to_pylist()
    rows[2]["image"] = {"bytes": b"\xff\xd8\xff\xe0 truncated", "path": "sa_2.jpg"}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "vstar.parquet")
    for limit in (None, 4):
        items = load_benchmark("vstar", str(tmp_path / "vstar.parquet"), limit=limit)
        assert items[1].image.size == (72, 48)
        with pytest.raises(BadImage, match="vstar item 2: image bytes of sa_2.jpg: cannot decode"):
            _ = items[2].image


@pytest.mark.parametrize("limit", [None, 4])
def test_rows_missing_a_field_are_named_and_read_benchmark_keeps_the_others(fixtures, tmp_path, limit):
    rows = pq.read_table(fixtures["vstar"]).to_pylist()
    for row in rows:
        row["image"] = base64.b64encode(row["image"]["bytes"]).decode()
    del rows[1]["label"]
    (tmp_path / "vstar.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = str(tmp_path / "vstar.jsonl")
    message = rf"vstar row 1 of {re.escape(source)}: .*\(missing or empty: label\)"
    with pytest.raises(ValueError, match=message):
        load_benchmark("vstar", source, limit=limit)
    items, broken = read_benchmark("vstar", source, limit=limit)
    assert [item.id for item in items] == ["0", "2", "3"] and [row["id"] for row in broken] == ["1"]
    assert re.match(message, broken[0]["error"]) and broken[0]["benchmark"] == "vstar"


def test_local_sources_agree(fixtures, tmp_path):
    for name in ("hrbench_4k", "zoombench", "mmstar"):
        expected = summary(load_benchmark(name, str(fixtures[name])))  # a parquet file, read whole
        assert summary(load_benchmark(name, str(fixtures[name]), limit=10)) == expected  # ... read row by row
        dataset = datasets.Dataset.from_parquet(str(fixtures[name]))
        dataset.save_to_disk(str(tmp_path / name))
        assert summary(load_benchmark(name, str(tmp_path / name))) == expected
        datasets.DatasetDict({DATASETS[name].split: dataset}).save_to_disk(str(tmp_path / f"{name}_dict"))
        assert summary(load_benchmark(name, str(tmp_path / f"{name}_dict"), limit=2)) == expected[:2]
    # A jsonl copy can store images as paths relative to the file.
    (tmp_path / "images").mkdir()
    rows = pq.read_table(fixtures["vstar"]).to_pylist()
    for row in rows:
        (tmp_path / "images" / row["image"]["path"]).write_bytes(row["image"]["bytes"])
        row["image"] = f"images/{row['image']['path']}"
    (tmp_path / "vstar.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = summary(load_benchmark("vstar", str(fixtures["vstar"])))
    assert summary(load_benchmark("vstar", str(tmp_path / "vstar.jsonl"))) == expected
    assert summary(load_benchmark("vstar", str(tmp_path / "vstar.jsonl"), limit=1)) == expected[:1]


def test_hub_sources(fake_hub, fixtures, tmp_path):
    # A Hub repo laid out as DreamMr/HR-Bench: one config, a split per resolution, one parquet file each.
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("hrbench_4k", "hrbench_8k"):
        (repo / name.replace("hrbench", "hr_bench")).with_suffix(".parquet").write_bytes(fixtures[name].read_bytes())
    splits = "".join(f"  - split: hrbench_{r}\n    path: hr_bench_{r}.parquet\n" for r in ("4k", "8k"))
    (repo / "README.md").write_text(
        f"---\nconfigs:\n- config_name: hrbench_version_split\n  data_files:\n{splits}---\n"
    )
    code = f"""
import json
from huggingface_hub import HfApi
from vzero_trl.eval.tasks import load_benchmark
HfApi().create_repo("DreamMr/HR-Bench", repo_type="dataset")
HfApi().upload_folder(folder_path={str(repo)!r}, repo_id="DreamMr/HR-Bench", repo_type="dataset")
def rows(items):
    return [[i.id, i.question, i.answer, i.group, list(i.image.size)] for i in items]
out = {{"full": rows(load_benchmark("hrbench_8k", revision="main")),  # the default dataset, config and split
       "streamed": rows(load_benchmark("hrbench_8k", "DreamMr/HR-Bench", revision="main", limit=3))}}
try:
    load_benchmark("hrbench_4k", limit=1)  # pinned to a commit this Hub does not have
except Exception as error:
    out["pinned"] = str(error)
print(json.dumps(out))
"""
    env = {**os.environ, **fake_hub.env(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    local = [[i.id, i.question, i.answer, i.group, list(i.image.size)] for i in load_benchmark(
        "hrbench_8k", str(fixtures["hrbench_8k"]))]  # fmt: skip
    assert out["full"] == local and out["streamed"] == local[:3]
    assert DATASETS["hrbench_4k"].revision in out["pinned"]


def test_bad_sources(fixtures, tmp_path):
    with pytest.raises(ValueError, match="Unknown benchmark 'vqa'"):
        load_benchmark("vqa")
    with pytest.raises(ValueError, match="`limit` must be a positive"):
        load_benchmark("vstar", str(fixtures["vstar"]), limit=0)
    with pytest.raises(FileNotFoundError, match="No benchmark file or folder"):
        load_benchmark("vstar", str(tmp_path / "missing.parquet"))
    (tmp_path / "vstar.tsv").write_text("index\tquestion\n")
    with pytest.raises(ValueError, match=r"expected a \.parquet or \.jsonl file, or a save_to_disk folder"):
        load_benchmark("vstar", str(tmp_path / "vstar.tsv"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="is not a folder written by `save_to_disk`"):
        load_benchmark("vstar", str(tmp_path / "folder"))
    with pytest.raises(ValueError, match="`revision` is for Hub datasets"):
        load_benchmark("vstar", str(fixtures["vstar"]), revision="main")

    table = pq.read_table(fixtures["vstar"])
    pq.write_table(table.drop_columns(["label", "category"]), tmp_path / "vstar.parquet")
    message = (
        r"lacks the column\(s\) \['label', 'category'\] that the vstar adapter reads. Expected the schema of "
        r"lmms-lab/vstar-bench \(split 'test'\): image, text, label, category, and optionally question_id"
    )
    for limit in (None, 1):
        with pytest.raises(ValueError, match=message):
            load_benchmark("vstar", str(tmp_path / "vstar.parquet"), limit=limit)
    pq.write_table(pq.read_table(fixtures["zoombench"]).drop_columns(["query"]), tmp_path / "zoombench.parquet")
    with pytest.raises(ValueError, match=r"\['query\|prompt'\].*: image, query or prompt, response or answer"):
        load_benchmark("zoombench", str(tmp_path / "zoombench.parquet"))
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="holds no vstar rows"):
        load_benchmark("vstar", str(tmp_path / "empty.parquet"), limit=5)

    rows = table.to_pylist()
    rows[1]["label"] = "C"  # a relative-position question has only (A) and (B)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "vstar.parquet")
    with pytest.raises(ValueError, match=r"vstar row 1 of .*: the gold answer 'C' is not one of .*\['A', 'B'\]"):
        load_benchmark("vstar", str(tmp_path / "vstar.parquet"))


def test_lazy_item_behaves_like_an_eval_item():
    image = picture((8, 6), (10, 20, 30))
    lazy = LazyEvalItem("vstar", "0", lambda: image.copy(), "Q?", "A", "mcq", {"A": "a", "B": "b"})
    eager = EvalItem("vstar", "0", image, "Q?", "A", "mcq", {"A": "a", "B": "b"})
    assert lazy.image.tobytes() == eager.image.tobytes()
    assert dataclasses.asdict(lazy)["question"] == "Q?"
    replaced = dataclasses.replace(lazy, image=Image.open(io.BytesIO(encode(image, "PNG"))))
    assert replaced.image.size == (8, 6) and replaced.answer == "A"
