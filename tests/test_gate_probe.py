"""The labelled gate probe: grading, the refusal of training rows, and a probe run on the trained letter-world pair
that logs `probe/*`, trains nothing and leaves training exactly as it was."""

import pytest
import torch
from helpers import make_args

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.gate_probe import grade, load_probe_rows, run_probe
from vzero_trl.gate_stats import gate_diagnostics
from vzero_trl.mini.world import make_dataset
from vzero_trl.toy.synthetic import make_dataset as toy_dataset


def test_grade_reads_letters_and_short_answers():
    assert grade("The answer is C.", "C") and not grade("The answer is C.", "B")
    assert grade("<answer>(b)</answer>", "B") and not grade("I cannot tell.", "A")
    assert grade("<answer>red car</answer>", "red car") and not grade("<answer>not the red car</answer>", "red car")


def test_probe_rows_must_be_labelled_and_held_out(tmp_path):
    train = make_dataset(4, seed=0, split="train")
    make_dataset(3, seed=0, split="probe").save_to_disk(tmp_path / "probe")
    assert len(load_probe_rows(str(tmp_path / "probe"), train, ["crop", "negative_crop"])) == 3
    make_dataset(6, seed=0, split="train").save_to_disk(tmp_path / "overlap")  # rows 0-3 are training rows
    with pytest.raises(ValueError, match="holds 4 training row.*id:mini-0-train-000000"):
        load_probe_rows(str(tmp_path / "overlap"), train, ["crop", "negative_crop"])
    # Without ids, rows are compared by prompt and image.
    make_dataset(2, seed=0, split="train").remove_columns("id").save_to_disk(tmp_path / "no_ids")
    with pytest.raises(ValueError, match="holds 2 training row.*sha256:"):
        load_probe_rows(str(tmp_path / "no_ids"), train.remove_columns("id"), ["crop", "negative_crop"])
    make_dataset(2, seed=0, split="probe").remove_columns("answer").save_to_disk(tmp_path / "unlabelled")
    with pytest.raises(ValueError, match="no `answer` column"):
        load_probe_rows(str(tmp_path / "unlabelled"), train, ["crop", "negative_crop"])
    with pytest.raises(ValueError, match="map-style `train_dataset`"):
        load_probe_rows(str(tmp_path / "probe"), train.to_iterable_dataset(), ["crop", "negative_crop"])


def test_config_refuses_a_probe_without_a_gate(tmp_path):
    with pytest.raises(ValueError, match="gate_probe_dataset.*evidence_alpha"):
        VZeroConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, evidence_alpha=0.0, gate_probe_dataset="x")
    with pytest.raises(ValueError, match="gate_probe_steps"):
        VZeroConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, gate_probe_steps=0)


def make_trainer(letter_pair, tmp_path, **overrides):
    args = make_args(tmp_path, per_device_train_batch_size=8, learning_rate=1e-4, **overrides)
    return VZeroTrainer(
        model=letter_pair[1],
        teacher_model=letter_pair[0],
        args=args,
        train_dataset=make_dataset(4, split="probe-train"),
    )


def test_the_probe_measures_the_gate_and_trains_nothing(letter_pair, tmp_path):
    make_dataset(5, seed=0, split="eval").save_to_disk(tmp_path / "probe")
    trainer = make_trainer(letter_pair, tmp_path, gate_probe_dataset=str(tmp_path / "probe"), gate_probe_steps=1)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer._metrics["train"]["loss"].append(1.0)

    metrics = run_probe(trainer, trainer.callback_handler.callbacks[-1].rows)
    assert all(torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
    assert dict(trainer._metrics["train"]) == {"loss": [1.0]}  # its generation metrics are put back
    assert set(metrics) == {
        "probe/gate_auc", "probe/gate_correct", "probe/gate_wrong", "probe/rollout_accuracy", "probe/mixed_groups"
    }  # fmt: skip
    # 5 rows x G = 4 is 20 rollouts: three batches of 8, the last filled with repeated groups that are not counted.
    assert 0 <= metrics["probe/mixed_groups"] <= 5 and 0.0 <= metrics["probe/rollout_accuracy"] <= 1.0
    assert 0.0 <= metrics["probe/gate_wrong"] <= 2.0


def test_training_with_the_probe_equals_training_without_and_logs_probe_metrics(letter_pair, tmp_path):
    make_dataset(2, seed=0, split="eval").save_to_disk(tmp_path / "probe")
    plain = make_trainer(letter_pair, tmp_path / "plain")
    plain.train()
    probed = make_trainer(
        letter_pair, tmp_path / "probed", gate_probe_dataset=str(tmp_path / "probe"), gate_probe_steps=1
    )
    probed.train()
    for (name, a), b in zip(plain.model.named_parameters(), probed.model.parameters(), strict=True):
        assert torch.equal(a, b), name  # the probe leaves the random state, and so the rollouts, as they were
    logged = [log for log in probed.state.log_history if "probe/gate_auc" in log]
    assert len(logged) == 2 and all(0 <= log["probe/mixed_groups"] <= 2 for log in logged)
    assert not any("probe/gate_auc" in log for log in plain.state.log_history)
    shared = [k for k in plain.state.log_history[0] if not k.startswith("probe/") and k not in ("step_time",)]
    assert {k: plain.state.log_history[0][k] for k in shared} == {k: probed.state.log_history[0][k] for k in shared}


def test_the_probe_and_the_miniature_compute_one_diagnostic():
    # gate_stats is the miniature's code: mini.measure re-exports the same functions.
    from vzero_trl.mini import measure

    assert measure.gate_diagnostics is gate_diagnostics


def test_the_launcher_runs_the_probe_from_the_command_line(launch, tmp_path):
    """The demo recipe through `scripts/vzero.py` with a held-out labelled set: the probe's metrics join the logs."""
    toy_dataset(4, seed=2).save_to_disk(tmp_path / "probe")  # other ids than the launcher's training rows (seed 1)
    trainer = launch(tmp_path / "run", "--gate_probe_dataset", str(tmp_path / "probe"), "--gate_probe_steps", "1")
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert {
            "probe/rollout_accuracy",
            "probe/mixed_groups",
            "probe/gate_correct",
            "probe/gate_wrong",
        } <= entry.keys()
        assert 0.0 <= entry["probe/rollout_accuracy"] <= 1.0
