"""The launcher in an existing `output_dir`: it resumes only what was asked, refuses changed settings, does not train a
finished run again, and never evaluates on the training data."""

import json

import datasets
import pytest
from test_recipes import ROOT, load_script

from vzero_trl.toy.synthetic import make_dataset


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(autouse=True)
def wandb_project(monkeypatch):
    # `main` points wandb at the run's project through WANDB_PROJECT; keep that out of the other tests' environment.
    monkeypatch.setenv("WANDB_PROJECT", "vzero-tests")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    make_dataset(8, seed=1).save_to_disk(folder / "unsplit")
    datasets.DatasetDict(train=make_dataset(8, seed=1), test=make_dataset(4, seed=2)).save_to_disk(folder / "split")
    return folder


def launch(script, tiny_models, data, output_dir, *flags):
    student, teacher = tiny_models
    args = [
        "--config", str(ROOT / "configs" / "demo.yaml"),
        "--build_demo_assets", "false",
        "--model_name_or_path", str(student),
        "--teacher_model_name_or_path", str(teacher),
        "--dataset_name", str(data / "unsplit"),
        "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "4",
        "--max_steps", "2",
        "--save_steps", "1",
        "--max_completion_length", "8",
        *flags,
    ]  # fmt: skip
    return script.main(*script.make_parser().parse_args_and_config(args))


def test_a_rerun_resumes_only_with_the_settings_the_run_was_started_with(script, tiny_models, data, tmp_path, capsys):
    run = tmp_path / "run"
    trainer = launch(script, tiny_models, data, run)
    assert trainer.state.global_step == 2
    weights = (run / "model.safetensors").read_bytes()
    assert json.loads((run / "vzero_run.json").read_text())["finished_step"] == 2

    # Changed settings are refused, each named with both values, and nothing is trained or written.
    with pytest.raises(ValueError, match="other settings") as refused:
        launch(script, tiny_models, data, run, "--learning_rate", "1e-3", "--num_generations", "2")
    message = str(refused.value)
    assert "learning_rate: 0.0005 -> 0.001" in message and "num_generations: 4 -> 2" in message
    assert "--output_dir" in message and "--overwrite_output_dir" in message and "--accept_changed_settings" in message
    assert (run / "model.safetensors").read_bytes() == weights

    # The same command, with only logging, saving and reporting changed: finished, nothing trained, nothing saved.
    capsys.readouterr()
    assert (
        launch(script, tiny_models, data, run, "--logging_steps", "5", "--save_steps", "7", "--run_name", "x") is None
    )
    assert "holds a finished run" in capsys.readouterr().out
    assert not (run / "checkpoint-3").exists() and (run / "model.safetensors").read_bytes() == weights

    # Accepting a change resumes from the last checkpoint: one more step, not a new run.
    trainer = launch(script, tiny_models, data, run, "--max_steps", "3", "--accept_changed_settings", "true")
    steps = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 3 and steps == [1, 2, 3]
    assert json.loads((run / "vzero_run.json").read_text())["settings"]["max_steps"] == 3

    # --overwrite_output_dir trains from scratch with the new settings and drops the old checkpoints.
    trainer = launch(script, tiny_models, data, run, "--learning_rate", "1e-3", "--overwrite_output_dir", "true")
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((run / "vzero_run.json").read_text())["settings"]["learning_rate"] == 1e-3


def test_checkpoints_without_a_record_are_not_resumed_blindly(script, tiny_models, data, tmp_path):
    run = tmp_path / "run"
    launch(script, tiny_models, data, run, "--max_steps", "1")
    (run / "vzero_run.json").unlink()  # as left by a version of the launcher that kept no record
    with pytest.raises(ValueError, match="without a record of the settings"):
        launch(script, tiny_models, data, run)


def test_a_test_split_must_exist(script, tiny_models, data, tmp_path):
    evaluation = ["--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "4"]
    # One saved Dataset has no test split: it used to be returned whole, so evaluation ran on the training data.
    with pytest.raises(ValueError, match=r"without splits, so `dataset_test_split` \('test'\).*`eval_holdout"):
        launch(script, tiny_models, data, tmp_path / "a", *evaluation)
    with pytest.raises(ValueError, match=r"has the splits \['train', 'test'\], not \['validation'\]"):
        launch(
            script, tiny_models, data, tmp_path / "b", *evaluation,
            "--dataset_name", str(data / "split"), "--dataset_test_split", "validation",
        )  # fmt: skip
    assert not (tmp_path / "a").exists()  # refused before anything is written

    script_args, training_args, _ = script.make_parser().parse_args_and_config(
        ["--config", str(ROOT / "configs" / "demo.yaml"), "--dataset_name", str(data / "unsplit"),
         "--output_dir", str(tmp_path / "c"), *evaluation, "--eval_holdout", "2"]
    )  # fmt: skip
    train, held_out = script.splits(script_args, training_args)
    assert (len(train), len(held_out)) == (6, 2)
    assert not set(train["id"]) & set(held_out["id"])  # the held-out rows are not trained on
    script_args.dataset_name = str(data / "split")
    script_args.eval_holdout = None
    train, test = script.splits(script_args, training_args)
    assert (len(train), len(test)) == (8, 4)
