"""The launcher in an existing `output_dir`: it resumes only what was asked, refuses changed settings, does not train a
finished run again, and never evaluates on the training data."""

import json

import pytest
from helpers import ROOT


def test_a_rerun_resumes_only_with_the_settings_the_run_was_started_with(launch, tmp_path, capsys):
    run = tmp_path / "run"
    trainer = launch(run)
    assert trainer.state.global_step == 2
    weights = (run / "model.safetensors").read_bytes()
    assert json.loads((run / "vzero_run.json").read_text())["finished_step"] == 2

    # Changed settings are refused, each named with both values, and nothing is trained or written.
    with pytest.raises(ValueError, match="other settings") as refused:
        launch(run, "--learning_rate", "1e-3", "--num_generations", "2")
    message = str(refused.value)
    assert "learning_rate: 0.0005 -> 0.001" in message and "num_generations: 4 -> 2" in message
    assert "--output_dir" in message and "--overwrite_output_dir" in message and "--accept_changed_settings" in message
    assert (run / "model.safetensors").read_bytes() == weights

    # The same command, with only logging, saving and reporting changed: finished, nothing trained, nothing saved.
    capsys.readouterr()
    assert launch(run, "--logging_steps", "5", "--save_steps", "7", "--run_name", "x") is None
    assert "holds a finished run" in capsys.readouterr().out
    assert not (run / "checkpoint-3").exists() and (run / "model.safetensors").read_bytes() == weights

    # Accepting a change resumes from the last checkpoint: one more step, not a new run.
    trainer = launch(run, "--max_steps", "3", "--accept_changed_settings", "true")
    steps = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 3 and steps == [1, 2, 3]
    assert json.loads((run / "vzero_run.json").read_text())["settings"]["max_steps"] == 3

    # --overwrite_output_dir trains from scratch with the new settings and drops the old checkpoints.
    trainer = launch(run, "--learning_rate", "1e-3", "--overwrite_output_dir", "true")
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((run / "vzero_run.json").read_text())["settings"]["learning_rate"] == 1e-3


def test_checkpoints_without_a_record_are_not_resumed_blindly(launch, tmp_path):
    run = tmp_path / "run"
    launch(run, "--max_steps", "1")
    (run / "vzero_run.json").unlink()  # as left by a version of the launcher that kept no record
    with pytest.raises(ValueError, match="without a record of the settings"):
        launch(run)


def test_a_test_split_must_exist(launch, script, launch_data, tmp_path):
    evaluation = ["--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "4"]
    # One saved Dataset has no test split: it used to be returned whole, so evaluation ran on the training data.
    with pytest.raises(ValueError, match=r"without splits, so `dataset_test_split` \('test'\).*`eval_holdout"):
        launch(tmp_path / "a", *evaluation)
    with pytest.raises(ValueError, match=r"has the splits \['train', 'test'\], not \['validation'\]"):
        launch(
            tmp_path / "b", *evaluation,
            "--dataset_name", str(launch_data / "split"), "--dataset_test_split", "validation",
        )  # fmt: skip
    assert not (tmp_path / "a").exists()  # refused before anything is written

    script_args, training_args, _ = script.make_parser().parse_args_and_config(
        ["--config", str(ROOT / "configs" / "demo.yaml"), "--dataset_name", str(launch_data / "unsplit"),
         "--output_dir", str(tmp_path / "c"), *evaluation, "--eval_holdout", "2"]
    )  # fmt: skip
    train, held_out = script.splits(script_args, training_args)
    assert (len(train), len(held_out)) == (6, 2)
    assert not set(train["id"]) & set(held_out["id"])  # the held-out rows are not trained on
    script_args.dataset_name = str(launch_data / "split")
    script_args.eval_holdout = None
    train, test = script.splits(script_args, training_args)
    assert (len(train), len(test)) == (8, 4)


@pytest.mark.parametrize(
    "holdout,message",
    [
        ("8", r"`eval_holdout` \(8.0\) holds out 8 of the 8 training rows.*no row to train on.*between 1 and 7"),
        ("0.999", r"holds out 8 of the 8 training rows"),  # a fraction rounds up, as `datasets` rounds it
        ("nan", r"`eval_holdout` must be > 0, got nan"),  # it used to die inside `datasets`
    ],
)
def test_a_holdout_that_leaves_no_row_is_refused_naming_the_option(script, launch_data, tmp_path, holdout, message):
    evaluation = ["--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "4"]
    with pytest.raises(ValueError, match=message):
        script_args, training_args, _ = script.make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs" / "demo.yaml"), "--dataset_name", str(launch_data / "unsplit"),
             "--output_dir", str(tmp_path), *evaluation, "--eval_holdout", holdout]
        )  # fmt: skip
        script.splits(script_args, training_args)
