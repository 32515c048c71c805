"""The toy world and the measurements of the miniature reproduction (fast: no training)."""

import json
import math
import shutil

import datasets
import numpy as np
import pytest

from vzero_trl.mini import world
from vzero_trl.mini.demo import build_demo_data, build_demo_pair
from vzero_trl.mini.measure import gate_diagnostics, within_group_auc
from vzero_trl.mini.pretrain import SHIPPED_PAIRS, SHIPPED_RECORD, WORLD_PAIRS, PairSpec, ensure_pair, pair_dir
from vzero_trl.mini.stats import interval
from vzero_trl.mini.world import (
    CELL,
    FEATURES,
    GRID,
    LETTERS,
    OPTIONS,
    QUESTION,
    make_dataset,
    make_example,
    parse_answer,
    reference_answer,
)
from vzero_trl.toy.synthetic import COLORS
from vzero_trl.views import check_dataset_columns, check_row


def test_rows_are_deterministic_and_splits_do_not_share_images():
    a, b = make_example(3, seed=1), make_example(3, seed=1)
    for column in ("image", "crop", "negative_crop", "random_crop"):
        assert a[column].tobytes() == b[column].tobytes()
    assert a["bbox"] == b["bbox"] and a["answer"] == b["answer"]
    assert make_example(3, seed=1, split="eval")["image"].tobytes() != a["image"].tobytes()
    assert make_example(3, seed=2)["image"].tobytes() != a["image"].tobytes()


@pytest.mark.parametrize("index", range(12))
def test_the_star_sits_in_one_cell_and_the_crop_shows_its_colour(index):
    row = make_example(index)
    image = np.asarray(row["image"])
    assert row["image"].size == (GRID * CELL, GRID * CELL)
    x0, y0, x1, y1 = row["bbox"]
    assert x0 // CELL == (x1 - 1) // CELL and y0 // CELL == (y1 - 1) // CELL  # one cell: one merged vision token
    color = OPTIONS[LETTERS.index(row["answer"])]
    assert (image[y0:y1, x0:x1] == COLORS[color]).all(-1).any()
    assert (np.asarray(row["crop"]) == COLORS[color]).all(-1).sum() >= 0.5 * (
        image[y0:y1, x0:x1] == COLORS[color]
    ).all(-1).sum()
    assert min(row["crop"].size) >= CELL
    assert row["crop"].size == row["negative_crop"].size == row["random_crop"].size
    assert row["prompt"] == [{"role": "user", "content": QUESTION}]


def test_the_negative_crop_is_taken_away_from_the_star(monkeypatch):
    # With the star alone on the canvas, every non-background pixel is the star's: the negative crop shows none of it
    # (bicubic downsampling may bleed a faint edge), the positive crop shows it whole.
    monkeypatch.setattr(world, "NUM_SHAPES", (1, 1))
    for index in range(40):
        row = world.make_example(index)
        background = np.array([world.BACKGROUND] * 3)
        star = (np.abs(np.asarray(row["image"]).astype(int) - background).sum(-1) > 0).sum()
        positive = (np.abs(np.asarray(row["crop"]).astype(int) - background).sum(-1) > 0).sum()
        negative = (np.abs(np.asarray(row["negative_crop"]).astype(int) - background).sum(-1) > 30).sum()
        assert positive == star
        assert negative <= 0.05 * star, index


def test_dataset_has_the_trainers_schema():
    dataset = make_dataset(4)
    assert dataset.features == FEATURES
    check_dataset_columns(dataset, ["crop", "negative_crop"], "train_dataset")
    check_dataset_columns(dataset, ["random_crop", "negative_crop"], "train_dataset")
    check_row(dataset[0], ["crop", "negative_crop", "random_crop"], 0)


def test_reference_answers_parse_back_to_their_letter():
    for letter in LETTERS:
        for name in world.WORLDS:
            assert parse_answer(reference_answer(letter, name)) == letter
    assert reference_answer("B", "drift") == "The star is green, so the answer is B."
    assert reference_answer("B", "prior") == reference_answer("B", "letter") == "The answer is B."
    assert parse_answer("The answer is") is None
    assert parse_answer("The answer is E.") is None
    assert parse_answer("The answer is A. Or B") is None
    with pytest.raises(ValueError, match="world"):
        reference_answer("A", "essay")


def test_within_group_auc_by_hand():
    gates = [1.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2]
    correct = [True, False, False, True, False, True, True, False]
    groups = [0, 0, 0, 1, 1, 2, 2, 3]
    # group 0: 1.5 beats 0.5 and 1.0 (2 wins); group 1: a tie (half a win); groups 2 and 3 have no pairs.
    assert within_group_auc(gates, correct, groups) == pytest.approx(2.5 / 3)
    # A constant gate cannot rank: exactly one half. A gate that ranks wrong rollouts first: zero.
    assert within_group_auc([1.0] * 8, correct, groups) == 0.5
    assert within_group_auc([0.0, 1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.0], correct, groups) == 0.0
    assert math.isnan(within_group_auc([1.0, 1.0], [True, True], [0, 0]))


def test_gate_diagnostics_by_hand():
    d = gate_diagnostics([1.5, 0.5, 1.0, 1.0], [True, False, True, False], [0, 0, 1, 2])
    assert d["gate_correct"] == pytest.approx(1.25) and d["gate_wrong"] == pytest.approx(0.75)
    assert d["mixed_group_frac"] == pytest.approx(1 / 3)
    assert d["rollout_accuracy"] == 0.5
    assert d["gate_auc"] == 1.0


def test_interval_is_a_student_t_interval():
    stat = interval([0.7, 0.8, 0.9])
    assert stat["mean"] == pytest.approx(0.8) and stat["n"] == 3
    assert stat["ci95"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(interval([0.5])["ci95"]) and interval([0.5])["mean"] == 0.5


def test_demo_prompts_are_built_atomically_and_never_taken_from_another_build(tmp_path):
    data = tmp_path / "prompts"
    # What a killed build leaves behind: the temporary folder. The next build starts over instead of failing.
    (tmp_path / ".prompts.partial").mkdir()
    (tmp_path / ".prompts.partial" / "half-written.arrow").write_bytes(b"\0")
    build_demo_data(data, 8)
    assert len(datasets.load_from_disk(str(data))) == 8
    assert not (tmp_path / ".prompts.partial").exists()
    build_demo_data(data, 8)  # reused as is
    with pytest.raises(ValueError, match="num_examples': 8.*Delete the folder"):
        build_demo_data(data, 16)
    older = tmp_path / "older"  # a folder from the random-weight demo of earlier versions, without the record
    older.mkdir()
    with pytest.raises(ValueError, match="data not built by this demo"):
        build_demo_data(older, 8)


def test_a_pair_folder_built_with_other_settings_is_refused_before_training(tmp_path):
    other = PairSpec(seed=1)
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / "settings.json").write_text(json.dumps({"settings": {}, "fingerprint": other.fingerprint()}))
    with pytest.raises(ValueError, match="other settings.*Delete the folder"):
        ensure_pair(tmp_path / "pair", PairSpec(seed=0), log=None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "student").mkdir()
    with pytest.raises(ValueError, match="no trained pair"):
        ensure_pair(tmp_path / "old", PairSpec(seed=0), log=None)
    with pytest.raises(ValueError, match="<folder>/student and <folder>/teacher"):
        build_demo_pair(tmp_path / "a" / "student", tmp_path / "b" / "teacher")
    assert pair_dir(tmp_path, PairSpec(seed=0)) != pair_dir(tmp_path, other)


def test_the_shipped_demo_pair_is_copied_with_its_hash_checked_and_a_damaged_one_is_refused(tmp_path):
    pair = WORLD_PAIRS["letter"]
    shipped = pair_dir(SHIPPED_PAIRS, pair)
    assert (shipped / SHIPPED_RECORD).is_file(), "the letter world's pair seed 0 ships with the package"
    messages = []
    teacher, student, record = ensure_pair(tmp_path / "pair", pair, log=messages.append)
    assert record == json.loads((shipped / "build.json").read_text())
    assert record["teacher"]["crop"]["accuracy"] >= 0.95  # the shipped teacher reads the crop
    assert (student / "model.safetensors").read_bytes() == (shipped / "student" / "model.safetensors").read_bytes()
    assert not (tmp_path / "pair" / SHIPPED_RECORD).exists() and "hash checked" in messages[0]
    assert not list(tmp_path.glob(".*")), "no temporary folder is left behind"

    damaged = tmp_path / "damaged"
    shutil.copytree(SHIPPED_PAIRS, damaged)
    weights = pair_dir(damaged, pair) / "teacher" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its recorded hash.*Reinstall"):
        ensure_pair(tmp_path / "other", pair, log=None, shipped=damaged)
    assert not (tmp_path / "other").exists()
