"""The launcher in an existing `output_dir`: it resumes only what was asked, refuses changed settings (and applies the
accepted ones), does not train a finished run again or from anything but its last state, and never evaluates on the
training data."""

import json

import pytest
from helpers import ROOT
from transformers.testing_utils import CaptureLogger

import vzero_trl.checkpoints


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


# --- resume semantics: accepted changes, explicit checkpoints, finished runs ---------------------------------------


def test_an_accepted_learning_rate_applies_to_the_restored_optimizer_and_scheduler(launch, tmp_path):
    run = tmp_path / "run"
    launch(run)  # learning_rate 5e-4, constant schedule (the demo recipe)
    with CaptureLogger(vzero_trl.checkpoints.logger) as captured:
        trainer = launch(run, "--max_steps", "4", "--learning_rate", "1e-3", "--accept_changed_settings", "true")
    rates = {entry["step"]: entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry}
    assert rates == {1: 5e-4, 2: 5e-4, 3: 1e-3, 4: 1e-3}  # the restored optimizer used to keep 5e-4
    assert trainer.lr_scheduler.base_lrs == [1e-3] * len(trainer.optimizer.param_groups)
    assert "with learning_rate 0.001 instead of the 0.0005 it was saved with" in captured.out


def test_a_change_that_a_restored_optimizer_would_undo_is_refused(launch, tmp_path):
    run = tmp_path / "run"
    launch(run)
    accept = ("--max_steps", "3", "--accept_changed_settings", "true")
    with pytest.raises(
        ValueError, match=r"would not apply these changes:\n  adam_beta1: 0.9 -> 0.5 \(the restored optim"
    ):
        launch(run, *accept, "--adam_beta1", "0.5")
    with pytest.raises(ValueError, match=r"use_peft: False -> True \(the checkpoint's weights replace the model's\)"):
        launch(
            tmp_path / "other", *accept, "--resume_from_checkpoint", str(run / "checkpoint-2"), "--use_peft", "true"
        )


def test_an_explicit_checkpoint_is_checked_against_the_run_that_wrote_it(launch, tmp_path):
    launch(tmp_path / "a")
    checkpoint = str(tmp_path / "a" / "checkpoint-1")
    with pytest.raises(
        ValueError, match=r"was written by a run with other settings.*\n  learning_rate: 0.0005 -> 0.001"
    ):
        launch(tmp_path / "b", "--resume_from_checkpoint", checkpoint, "--learning_rate", "1e-3")
    assert not (tmp_path / "b").exists()
    (tmp_path / "a" / "checkpoint-2" / "vzero_checkpoint.json").unlink()  # not complete
    with pytest.raises(ValueError, match=r"cannot be resumed from: it has no vzero_checkpoint.json"):
        launch(tmp_path / "b", "--resume_from_checkpoint", str(tmp_path / "a" / "checkpoint-2"))
    trainer = launch(tmp_path / "b", "--resume_from_checkpoint", checkpoint)  # the same settings: resumed
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2]
    assert trainer.state.global_step == 2 and not (tmp_path / "b" / "checkpoint-1").exists()


def test_training_a_finished_run_further_without_its_checkpoint_is_refused(launch, tmp_path):
    run = tmp_path / "run"
    launch(run, "--save_strategy", "no")
    weights = (run / "model.safetensors").read_bytes()
    with pytest.raises(
        ValueError, match=r"finished at step 2, and it kept no complete checkpoint.*--model_name_or_path"
    ):
        launch(run, "--save_strategy", "no", "--max_steps", "3", "--accept_changed_settings", "true")
    assert (run / "model.safetensors").read_bytes() == weights  # it used to retrain from the base model over it


def test_a_finished_run_trained_no_further_is_refused(launch, tmp_path):
    run = tmp_path / "run"
    launch(run)
    with pytest.raises(ValueError, match=r"`max_steps` \(2\) trains it no further. Raise `--max_steps` above 2"):
        launch(run, "--learning_rate", "1e-3", "--accept_changed_settings", "true")


def test_rerunning_a_finished_run_shows_what_it_produced(launch, tmp_path, capsys):
    run = tmp_path / "run"
    launch(run)
    results = {  # as the demo's report stores it
        "before": {"accuracy": 0.25, "p_gold": 0.3},
        "after": {"accuracy": 0.5, "p_gold": 0.4},
        "gates": {"gate_correct": 1.5, "gate_wrong": 0.5, "gate_auc": 0.71},
        "teacher": {"crop": {"accuracy": 0.99}, "negative_crop": {"accuracy": 0.25}},
        "rollouts": 64,
        "eval_rows": 1000,
        "seed": 0,
    }
    (run / "demo_results.json").write_text(json.dumps(results))
    capsys.readouterr()
    assert launch(run) is None
    out = capsys.readouterr().out
    assert "holds a finished run (step 2) with these settings: nothing to train" in out
    assert "p(gold) 0.300 -> 0.400 (+0.100); greedy accuracy 25.0% -> 50.0%" in out
    assert "within-group AUC of gate vs correctness 0.71" in out and "1.50 on correct ones" in out
    assert "raise `--max_steps` and pass `--accept_changed_settings`" in out
