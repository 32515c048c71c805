"""Checkpoints are complete or skipped: saves killed at each point; and a resumed rate put on the restored optimizer."""

import json

import pytest
import torch
from helpers import make_args
from transformers.testing_utils import CaptureLogger

import vzero_trl.checkpoints
from vzero_trl import VZeroTrainer
from vzero_trl.checkpoints import MARKER, atomic_save, last_complete_checkpoint, write_marker
from vzero_trl.teachers import EMA_FILE
from vzero_trl.toy.synthetic import make_dataset


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, and no `except Exception` catches it."""


def kill_at(step):
    """A `write_marker` that 'kills' the run right before it marks the checkpoint of `step` complete."""

    def marker(folder, global_step):
        if global_step == step:
            raise Killed
        write_marker(folder, global_step)

    return marker


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


# --- completeness -----------------------------------------------------------------------------------------------------


def test_a_checkpoint_is_complete_only_with_its_marker_and_every_listed_file(tmp_path):
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None
    for step in (2, 4, 10, 12, 14, 16):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "trainer_state.json").write_text("{}")  # what the old check trusted
        if step != 16:
            write_marker(str(folder), step)
    (tmp_path / "checkpoint-14" / "model.safetensors").unlink()
    (tmp_path / "checkpoint-12" / "model.safetensors").write_bytes(b"cut")
    (tmp_path / "checkpoint-notes").mkdir()
    with CaptureLogger(vzero_trl.checkpoints.logger) as captured:
        assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")  # numeric order: not "4"
    assert f"Not resuming from {tmp_path / 'checkpoint-16'}: it has no {MARKER}" in captured.out
    assert "checkpoint-14: files listed in its vzero_checkpoint.json are missing: model.safetensors" in captured.out
    assert "checkpoint-12: files differ in size" in captured.out


def test_a_kill_while_saving_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_save({"a": torch.ones(2)}, str(path))
    save = torch.save

    def cut(obj, target):
        save(obj, target)
        with open(target, "r+b") as f:
            f.truncate(10)  # the bytes written before the kill
        raise Killed

    monkeypatch.setattr(torch, "save", cut)
    with pytest.raises(Killed):
        atomic_save({"a": torch.zeros(2)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


def ema_trainer(tiny_models, tmp_path, dataset, **overrides):
    settings = dict(max_steps=2, save_strategy="steps", save_steps=1, teacher_ema_rate=0.5, teacher_source="ema")
    return VZeroTrainer(
        model=str(tiny_models[0]), args=make_args(tmp_path, **settings | overrides), train_dataset=dataset
    )


def test_a_run_killed_before_its_checkpoint_is_marked_resumes_from_the_previous_one(
    tiny_models, tmp_path, dataset, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setattr(vzero_trl.checkpoints, "write_marker", kill_at(2))
    with pytest.raises(Killed):
        ema_trainer(tiny_models, tmp_path, dataset, save_total_limit=1).train()
    # Every file of checkpoint-2 is written, the EMA teacher and trainer_state.json included, but not the marker; and
    # checkpoint-1 was not rotated out by save_total_limit=1 before checkpoint-2 was complete.
    assert (out / "checkpoint-2" / EMA_FILE).is_file() and (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-2" / MARKER).exists()
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")
    listed = json.loads((out / "checkpoint-1" / MARKER).read_text())["files"]
    assert {EMA_FILE, "trainer_state.json", "model.safetensors", "optimizer.pt"} <= set(listed)

    monkeypatch.setattr(vzero_trl.checkpoints, "write_marker", write_marker)
    trainer = ema_trainer(tiny_models, tmp_path, dataset, save_total_limit=1)
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(str(out)))
    assert trainer.state.global_step == 2
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert not (out / "checkpoint-1").exists()  # rotated once checkpoint-2 is complete


def test_a_kill_while_the_ema_teacher_is_written_leaves_no_complete_checkpoint(
    tiny_models, tmp_path, dataset, monkeypatch
):
    save = torch.save

    def cut(obj, target):
        if str(target).endswith(f"{EMA_FILE}.partial") and "checkpoint-2" in str(target):
            save(obj, target)
            raise Killed
        save(obj, target)

    monkeypatch.setattr(torch, "save", cut)
    with pytest.raises(Killed):
        ema_trainer(tiny_models, tmp_path, dataset).train()
    out = tmp_path / "out"
    assert not (out / "checkpoint-2" / EMA_FILE).exists()  # never a half-written file under the real name
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")


def test_the_launcher_skips_a_half_written_checkpoint_and_finishes(launch, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(vzero_trl.checkpoints, "write_marker", kill_at(2))
    with pytest.raises(Killed):
        launch(run)
    monkeypatch.setattr(vzero_trl.checkpoints, "write_marker", write_marker)
    capsys.readouterr()
    with CaptureLogger(vzero_trl.checkpoints.logger) as captured:
        trainer = launch(run)
    assert f"Not resuming from {run / 'checkpoint-2'}: it has no {MARKER}" in captured.out
    assert f"Resuming from {run / 'checkpoint-1'}" in capsys.readouterr().out
    assert trainer.state.global_step == 2 and (run / "checkpoint-2" / MARKER).is_file()
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2]


def test_set_learning_rate_keeps_the_position_in_the_schedule():
    weights = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weights], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.06)  # 0.1 * (1 - 4/10)
    assert vzero_trl.checkpoints.set_learning_rate(optimizer, scheduler, 0.5) == 0.1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3)  # 0.5 * (1 - 4/10)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # 0.5 * (1 - 5/10)
