"""The learning check: on a trained tiny pair of the letter world, V-Zero moves the student the way the reproduction
measured over many cells, and its gate finds the right rollouts.

This is the miniature reproduction's CI-sized guard (`vzero_trl.mini`). Its thresholds come from the spread over cells
(trained pairs x run seeds) of the committed grid on the steady measure, p(gold), not from one run on one machine: the
trained pair and the run are random draws that differ by CPU. It fails when learning breaks: a teacher that no longer
reads the crop, a student that cannot see, a gate replaced by a constant (its within-group AUC is then 0.5 exactly) or
a teacher given random crops (AUC near 0.5, and p(gold) falls far below every measured cell).

The pair is the letter world's pair seed 0 that ships with the package (copied in seconds, the same weights on every
machine), or `VZERO_MINI_PAIR`: a letter-world pair folder built by the reproduction
(`outputs/mini/models/letter-seed<N>-...`), of any pair seed, to show that the check holds on pairs it was not tuned on;
its settings are checked before use.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from vzero_trl.mini.demo import REFERENCE
from vzero_trl.mini.pretrain import WORLD_PAIRS, ensure_pair
from vzero_trl.mini.reproduce import WORLD_SETTINGS, Job, run_one


def _pair_seed() -> int:
    folder = os.environ.get("VZERO_MINI_PAIR")
    settings = Path(folder or "") / "settings.json"
    return json.loads(settings.read_text())["settings"]["seed"] if folder and settings.is_file() else 0


PAIR = replace(WORLD_PAIRS["letter"], seed=_pair_seed())
SETTINGS = WORLD_SETTINGS["letter"]
# Thresholds from the spread of the letter world's V-Zero cells in the committed grid (`reference.json`, written by
# `reproduce.learning_check_thresholds`: each the cells' mean minus 3 sd), so a pair drawn on another CPU passes and a
# constant gate (AUC 0.5) or random crops fall far below. README, "The learning check".
CHECK = json.loads(REFERENCE.read_text())["learning_check"]


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    root = os.environ.get("VZERO_MINI_PAIR") or tmp_path_factory.mktemp("mini") / "pair"
    teacher, student, record = ensure_pair(root, PAIR, log=None)
    return str(teacher), str(student), record


def test_the_teacher_reads_the_crop_and_the_student_half_sees(trained_pair):
    _, _, record = trained_pair
    teacher, student = record["teacher"], record["student"]["student"]
    assert teacher["crop"]["accuracy"] >= 0.95
    # Near chance without the star; a random crop sometimes holds it (pairs drawn here: negative 0.23-0.37, random
    # 0.27-0.47).
    assert teacher["negative_crop"]["accuracy"] <= 0.40 and teacher["random_crop"]["accuracy"] <= 0.50
    # Above chance by more than one reading's sampling error (0.25 + 1.96 * sqrt(0.25 * 0.75 / 1000) = 0.277; pairs
    # drawn here ranged from 0.30 to 0.69) and far from perfect.
    assert 0.28 <= student["accuracy"] <= 0.90 and student["format"] >= 0.99


def test_vzero_moves_the_student_as_measured_over_cells_and_its_gate_ranks_correct_rollouts_first(
    trained_pair, tmp_path
):
    teacher, student, record = trained_pair
    before = record["student"]["student"]
    job = Job("letter", "vzero", PAIR, 0, SETTINGS, teacher, student, before, str(tmp_path / "run"))
    run = run_one(job)
    after, gates = run["after"], run["gates"]
    assert after["p_gold"] - before["p_gold"] >= CHECK["min_p_gold_gain"], (before, after)
    assert after["format"] >= 0.95, after
    assert gates["gate_auc"] >= CHECK["min_gate_auc"], gates
    assert gates["gate_correct"] - gates["gate_wrong"] >= CHECK["min_gate_gap"], gates
    assert 0.4 <= gates["mixed_group_frac"] <= 0.95, gates  # groups with both outcomes are what the gate ranks
