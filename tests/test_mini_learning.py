"""The learning check: on the trained tiny pair, V-Zero improves the student and its gate finds the right rollouts.

This is the miniature reproduction's CI-sized guard (`vzero_trl.mini`). It fails when learning breaks: a teacher that
no longer reads the crop, a student that cannot see, a gate replaced by a constant (its within-group AUC is then 0.5
exactly) or a teacher given random crops (AUC near 0.5, and the student degrades). The thresholds come from the spread
measured over seeds (README, "The miniature reproduction"), not from one run.

The trained pair is built once per session (about two minutes on 2 cores) in a temporary folder, or reused from
`VZERO_MINI_PAIR` (a folder built by `make demo`, `outputs/demo/trained`, whose settings are checked before use).
"""

import dataclasses
import os

import pytest

from vzero_trl.mini.pretrain import PairSpec, ensure_pair
from vzero_trl.mini.reproduce import WORLD_SETTINGS, Job, run_one


PAIR = PairSpec(world="letter", seed=0)
# 80 of the reproduction's 120 steps. Measured there over seeds 0-2 at step 80 (before: accuracy 70.2%, p(gold) 0.406):
# accuracy +6.0 points (sd 1.4), p(gold) +0.054 (sd 0.016), gate AUC 0.909 (sd 0.004). Each threshold sits at least
# 2.5 standard deviations below the mean; a constant gate gives an AUC of exactly 0.5, random crops about 0.5.
SETTINGS = dataclasses.replace(WORLD_SETTINGS["letter"], steps=80, eval_every=80)


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
    job = Job("letter", "vzero", 0, SETTINGS, PAIR, teacher, student, str(tmp_path / "run"))
    run = run_one(job)
    before, after, gates = run["before"], run["after"], run["gates"]
    assert before["accuracy"] == record["student"]["student"]["accuracy"]  # the same student, the same held-out rows
    assert after["accuracy"] - before["accuracy"] >= 0.02, (before, after)
    assert after["p_gold"] - before["p_gold"] >= 0.01, (before, after)
    assert gates["gate_auc"] >= 0.85, gates
    assert gates["gate_correct"] - gates["gate_wrong"] >= 0.5, gates
    assert 0.5 <= gates["mixed_group_frac"] <= 0.95, gates  # groups with both outcomes are what the gate ranks
