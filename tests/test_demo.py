"""The README's main job: `accelerate launch scripts/vzero.py --config configs/demo.yaml`, killed and resumed."""

import json
import os
import signal
import subprocess
import time

from helpers import ROOT, launch_command, run_command


def demo_command(tmp_path, max_steps):
    return launch_command(
        "--config", "configs/demo.yaml",
        "--model_name_or_path", str(tmp_path / "models" / "student"),
        "--teacher_model_name_or_path", str(tmp_path / "models" / "teacher"),
        "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "run"),
        "--demo_models", "random",
        "--demo_num_examples", "16",
        "--per_device_train_batch_size", "8",
        "--logging_steps", "1",
        "--max_steps", str(max_steps),
        "--save_steps", "2",
    )  # fmt: skip


def test_demo_builds_its_assets_trains_and_resumes_after_a_kill(tmp_path):
    run = tmp_path / "run"
    # First run: killed (the whole process group, as a crash or a preempted job would be) once checkpoint-2 is saved.
    process = subprocess.Popen(
        demo_command(tmp_path, 8),
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run / "checkpoint-2" / "vzero_checkpoint.json").is_file():  # written last
        assert process.poll() is None, "the demo stopped before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoint-8").exists(), "the run must be cut short for this test to mean anything"
    assert (tmp_path / "models" / "student" / "model.safetensors").is_file() and (tmp_path / "data").is_dir()

    # Second run, same command: resumes from the last complete checkpoint and finishes with the same 8 steps.
    result = run_command(demo_command(tmp_path, 8))
    assert "Resuming from" in result.stdout + result.stderr
    state = json.loads((run / "checkpoint-8" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 8 and steps == list(range(1, 9))
    assert all("evidence/weight_mean" in entry for entry in state["log_history"] if "loss" in entry)

    assert (run / "model.safetensors").is_file() and (run / "processor_config.json").is_file()
    card = (run / "README.md").read_text()
    assert "**V-Zero**" in card and f"`{tmp_path / 'data'}`" in card  # the method and the data
    assert "| `num_generations` | 4 |" in card and "| `max_steps` | 8 |" in card  # the hyper-parameters
    assert "Values logged at step 8" in card  # the training summary
