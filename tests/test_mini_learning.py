"""The learning check: on the trained tiny pair, V-Zero improves the student and its gate finds the right rollouts.

This is the miniature reproduction's CI-sized guard (`vzero_trl.mini`). It fails when learning breaks: a teacher that
no longer reads the crop, a student that cannot see, a gate replaced by a constant (its within-group AUC is then 0.5
exactly) or a teacher given random crops (AUC near 0.5, and the student degrades). The thresholds come from the spread
measured over seeds (README, "The miniature reproduction"), not from one run.

The trained pair is built once per session (about two minutes on 2 cores) in a temporary folder, or reused from
`VZERO_MINI_PAIR` (a folder built by `make demo`, `outputs/demo/trained`, whose settings are checked before use).
"""

import os

import pytest

from vzero_trl.mini.pretrain import PairSpec, ensure_pair
from vzero_trl.mini.reproduce import WORLD_SETTINGS, Job, run_one


PAIR = PairSpec(world="letter", seed=0)
STEPS = 120


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    root = os.environ.get("VZERO_MINI_PAIR") or tmp_path_factory.mktemp("mini") / "pair"
    teacher, student, record = ensure_pair(root, PAIR, log=None)
    return str(teacher), str(student), record


def test_the_teacher_reads_the_crop_and_the_student_half_sees(trained_pair):
    _, _, record = trained_pair
    teacher, student = record["teacher"], record["student"]["student"]
    assert teacher["crop"]["accuracy"] >= 0.95
    assert teacher["negative_crop"]["accuracy"] <= 0.40 and teacher["random_crop"]["accuracy"] <= 0.40
    assert 0.55 <= student["accuracy"] <= 0.85 and student["format"] == 1.0


def test_vzero_improves_the_student_and_its_gate_ranks_correct_rollouts_first(trained_pair, tmp_path):
    teacher, student, record = trained_pair
    settings = WORLD_SETTINGS["letter"]
    job = Job("letter", "vzero", 0, settings, PAIR, teacher, student, str(tmp_path / "run"))
    run = run_one(job)
    before, after, gates = run["before"], run["after"], run["gates"]
    assert before["accuracy"] == record["student"]["student"]["accuracy"]  # the same student, the same held-out rows
    assert after["p_gold"] - before["p_gold"] >= 0.0, (before, after)
    assert gates["gate_auc"] >= 0.8, gates
    assert gates["gate_correct"] - gates["gate_wrong"] >= 0.5, gates
