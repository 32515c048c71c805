"""The blind-teacher alarm: its statistic by hand, and on the trained letter-world pair, a blinded copy of its teacher,
and random crops, with gating on and under `evidence_alpha=0` (where it samples the negative view)."""

import logging

import pytest
import torch
from fixtures.teacher_server import StandInTeacher
from helpers import make_args
from transformers import AutoModelForImageTextToText

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.evidence_alarm import BLIND_FRACTION, EvidenceAlarm, diagnose, noise_tolerance, view_gap_sums
from vzero_trl.mini.world import make_dataset
from vzero_trl.processing import load_processor


# --- the statistic ----------------------------------------------------------------------------------------------------


def test_view_gap_sums_by_hand():
    pos = torch.tensor([[-1.0, -0.5, -2.0], [-3.0, -0.1, 9.0]])
    neg = torch.tensor([[-1.0, -0.25, -2.0 + 1e-6], [-1.0, -0.1, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # gaps over the 5 valid tokens: [0, -0.25, -1e-6, -2, 0]; tolerance 1e-5 x max(|pos|, |neg|, 1): [1e-5, 1e-5,
    # 2e-5, 3e-5, 1e-5] -> distinct: -0.25 and -2 (the 1e-6 gap is noise); sum |d| = 2.250001, sum d = -2.250001.
    sums = view_gap_sums(pos, neg, mask, tolerance=1e-5)
    assert sums.tolist() == pytest.approx([5, 2, 2.250001, -2.250001])


def test_noise_tolerance_follows_the_dtype():
    assert noise_tolerance(torch.float32) == 1e-5  # 8 x 1.19e-7 is below the floor
    assert noise_tolerance(torch.bfloat16) == pytest.approx(8 * 2**-7)
    assert noise_tolerance(torch.float16) == pytest.approx(8 * 2**-10)


def test_diagnose_tells_blind_indifferent_and_seeing_apart():
    # 1000 tokens: 10 distinct (1%) is blind; 300 distinct with mean gap 0.01 against mean |gap| 0.2 is indifferent.
    assert diagnose(torch.tensor([1000.0, 10.0, 1e-3, 0.0]))[0] == "blind"
    condition, stats = diagnose(torch.tensor([1000.0, 300.0, 200.0, 10.0]))
    assert condition == "indifferent" and stats == pytest.approx({"fraction": 0.3, "mean_abs": 0.2, "mean": 0.01})
    assert diagnose(torch.tensor([1000.0, 300.0, 200.0, 150.0]))[0] == "sees"
    assert diagnose(torch.tensor([1000.0, 11.0, 200.0, 150.0]))[0] == "sees"  # just above BLIND_FRACTION
    assert BLIND_FRACTION == 0.01


def test_the_alarm_decides_once_after_its_window_and_raises_in_error_mode():
    blind = torch.tensor([100.0, 0.0, 0.0, 0.0])
    alarm = EvidenceAlarm("error", steps=2, every=3, tolerance=1e-5, columns=("crop", "negative_crop"))
    assert alarm.wants_sample(3, {"negative_crop": None}) is False  # no crop in the row: the alarm turns itself off
    assert alarm.mode == "off" and not alarm.active
    alarm = EvidenceAlarm("error", steps=2, every=3, tolerance=1e-5, columns=("crop", "negative_crop"))
    assert alarm.update(blind) == {"evidence/distinct_token_frac": 0.0} and alarm.condition is None
    with pytest.raises(
        RuntimeError, match="Blind-teacher alarm.*vision weights.*processor.*template.*identical crops"
    ):
        alarm.update(blind)
    assert alarm.condition == "blind" and not alarm.active  # decided: no more checks, no more cost


@pytest.mark.parametrize(
    "field, value", [("evidence_alarm", "loud"), ("evidence_alarm_steps", 0), ("evidence_alarm_every", 0)]
)
def test_config_refuses_bad_alarm_settings(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        VZeroConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **{field: value})


# --- on the trained letter-world pair ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blind_teacher(letter_pair, tmp_path_factory):
    """The trained teacher with its vision merger's output zeroed: it still runs, on image tokens that carry nothing
    (what a checkpoint whose vision weights were not loaded looks like)."""
    teacher = AutoModelForImageTextToText.from_pretrained(letter_pair[0], dtype=torch.float32)
    with torch.no_grad():
        teacher.model.visual.merger.linear_fc2.weight.zero_()
        teacher.model.visual.merger.linear_fc2.bias.zero_()
    path = tmp_path_factory.mktemp("blind") / "teacher"
    teacher.save_pretrained(path)
    load_processor(letter_pair[0]).save_pretrained(path)
    return str(path)


def train(letter_pair, teacher, tmp_path, max_steps, **overrides):
    args = make_args(tmp_path, max_steps=max_steps, learning_rate=1e-5, **overrides)
    prompts = max_steps * args.per_device_train_batch_size // args.num_generations
    trainer = VZeroTrainer(
        model=letter_pair[1],
        teacher_model=teacher,
        args=args,
        train_dataset=make_dataset(prompts, seed=0, split="alarm"),
    )
    trainer.train()
    return trainer


def alarm_log(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "vzero_trl.evidence_alarm")


def test_a_blind_teacher_triggers_the_alarm_within_its_window(letter_pair, blind_teacher, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vzero_trl.evidence_alarm"):
        trainer = train(letter_pair, blind_teacher, tmp_path, max_steps=3, evidence_alarm_steps=2)
    assert trainer._evidence_alarm.condition == "blind" and trainer._evidence_alarm.batches == 2
    text = alarm_log(caplog)
    assert text.count("Blind-teacher alarm") == 1 and "vision weights were not loaded" in text  # warned once
    fractions = [
        log["evidence/distinct_token_frac"]
        for log in trainer.state.log_history
        if "evidence/distinct_token_frac" in log
    ]
    assert fractions == [0.0, 0.0]  # steps 1 and 2; decided, the alarm no longer looks at step 3


def test_a_blind_teacher_stops_training_in_error_mode(letter_pair, blind_teacher, tmp_path):
    with pytest.raises(RuntimeError, match="Blind-teacher alarm"):
        train(letter_pair, blind_teacher, tmp_path, max_steps=3, evidence_alarm_steps=2, evidence_alarm="error")


def test_the_trained_teacher_sees_and_stays_quiet(letter_pair, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vzero_trl.evidence_alarm"):
        trainer = train(letter_pair, letter_pair[0], tmp_path, max_steps=2, evidence_alarm_steps=2)
    assert trainer._evidence_alarm.condition == "sees", alarm_log(caplog)
    assert "Blind-teacher alarm" not in alarm_log(caplog) and "teacher sees the crops" in alarm_log(caplog)
    print("trained teacher:", diagnose(trainer._evidence_alarm.sums))


@pytest.mark.parametrize("blind", [True, False], ids=["blind", "trained"])
def test_a_bfloat16_teacher_is_judged_against_bfloat16_noise(letter_pair, blind_teacher, tmp_path, blind):
    """A teacher loaded in bfloat16 gets that dtype's (coarser) tolerance, and the trained teacher's view differences
    still stand out above it while the blinded copy stays blind."""
    teacher = blind_teacher if blind else letter_pair[0]
    kwargs = {"dtype": "bfloat16"}
    trainer = train(
        letter_pair, teacher, tmp_path, max_steps=2, evidence_alarm_steps=2, teacher_model_init_kwargs=kwargs
    )
    assert trainer.teacher_model.dtype == torch.bfloat16
    assert trainer._evidence_alarm.tolerance == noise_tolerance(torch.bfloat16)
    assert trainer._evidence_alarm.condition == ("blind" if blind else "sees"), diagnose(trainer._evidence_alarm.sums)


def test_a_served_teacher_is_judged_as_a_bfloat16_one_and_sees(letter_pair, tmp_path):
    """vLLM serves in bfloat16, so a served teacher gets that tolerance; the trained teacher behind the stand-in sees
    the crops. (A blind served teacher is refused before training: tests/test_served_teacher.py.)"""
    model = AutoModelForImageTextToText.from_pretrained(letter_pair[0], dtype=torch.float32)
    with StandInTeacher(model, load_processor(letter_pair[0])) as server:
        urls, steps = [server.url], 2
        trainer = train(
            letter_pair, None, tmp_path, max_steps=steps, evidence_alarm_steps=steps, teacher_server_urls=urls
        )
    assert trainer._evidence_alarm.tolerance == noise_tolerance(torch.bfloat16)
    assert trainer._evidence_alarm.condition == "sees", diagnose(trainer._evidence_alarm.sums)


def test_random_crops_are_not_a_blind_teacher(letter_pair, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vzero_trl.evidence_alarm"):
        trainer = train(
            letter_pair, letter_pair[0], tmp_path, max_steps=2, evidence_alarm_steps=2, crop_column="random_crop"
        )
    assert trainer._evidence_alarm.condition in ("sees", "indifferent"), alarm_log(caplog)
    assert "Blind-teacher alarm" not in alarm_log(caplog)
    print("random crops:", diagnose(trainer._evidence_alarm.sums))


# --- under evidence_alpha = 0 -----------------------------------------------------------------------------------------


def test_without_gating_the_alarm_samples_one_group_every_k_steps_and_catches_a_blind_teacher(
    letter_pair, blind_teacher, tmp_path, monkeypatch
):
    calls = []
    replay = VZeroTrainer._replay

    def counting(self, inputs, groups, completion_ids, mask, columns, keep_hidden=False):
        calls.append((self.state.global_step, len(inputs), list(columns)))
        return replay(self, inputs, groups, completion_ids, mask, columns, keep_hidden)

    monkeypatch.setattr(VZeroTrainer, "_replay", counting)
    overrides = dict(evidence_alpha=0.0, evidence_alarm_steps=2, evidence_alarm_every=2, per_device_train_batch_size=8)
    trainer = train(letter_pair, blind_teacher, tmp_path, max_steps=4, **overrides)
    # Two prompts per step: the positive view of all 8 rollouts every step; the negative view of the first prompt's 4
    # rollouts at steps 0 and 2 only, after which the alarm has decided: (2 - 1) x 2 + 1 = 3 steps.
    negatives = [(step, rows) for step, rows, columns in calls if columns == ["negative_crop"]]
    assert negatives == [(0, 4), (2, 4)]
    assert [rows for _, rows, columns in calls if columns == ["crop"]] == [8, 8, 8, 8]
    assert trainer._evidence_alarm.condition == "blind"


def test_without_gating_the_trained_teacher_sees(letter_pair, tmp_path):
    trainer = train(
        letter_pair, letter_pair[0], tmp_path, max_steps=2, evidence_alpha=0.0, evidence_alarm_steps=2,
        evidence_alarm_every=1,
    )  # fmt: skip
    assert trainer._evidence_alarm.condition == "sees"


def test_without_gating_or_negative_crops_the_alarm_turns_off_and_says_so(letter_pair, tmp_path, caplog):
    args = VZeroConfig(
        output_dir=str(tmp_path), evidence_alpha=0.0, num_generations=4, per_device_train_batch_size=4,
        use_cpu=True, bf16=False, report_to="none",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="vzero_trl.evidence_alarm"):
        trainer = VZeroTrainer(
            model=letter_pair[1],
            teacher_model=letter_pair[0],
            args=args,
            train_dataset=make_dataset(2, seed=0, split="alarm").remove_columns("negative_crop"),
        )
    assert trainer._evidence_alarm.mode == "off" and not trainer._evidence_alarm.active
    assert "alarm off: the training dataset has no column 'negative_crop'" in alarm_log(caplog)
