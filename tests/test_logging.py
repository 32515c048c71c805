"""Logging to trackio and wandb (both offline) from the launcher, and the completions table with each rollout's gate.

Run in a subprocess: both libraries read their storage locations from the environment when they are imported."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vzero_trl.toy.synthetic import make_dataset
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


ROOT = Path(__file__).parent.parent


def test_trackio_and_wandb_offline_get_metrics_and_the_completions_table(tmp_path):
    make_dataset(8, seed=1).save_to_disk(tmp_path / "data")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "TRACKIO_DIR": str(tmp_path / "trackio"),
    }
    recipe = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    recipe.update(
        build_demo_assets=False,
        model_name_or_path=str(ensure_tiny_vlm(tmp_path / "student", **TINY_STUDENT)),
        teacher_model_name_or_path=str(ensure_tiny_vlm(tmp_path / "teacher", **TINY_TEACHER)),
        dataset_name=str(tmp_path / "data"),
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=2,
        save_strategy="no",
        report_to=["trackio", "wandb"],  # a list: from the command line `report_to` takes one value
        project="vzero-tests",
        run_name="logging-test",
        log_completions=True,
        num_completions_to_print=2,
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "configs/accelerate/cpu.yaml",
        "scripts/vzero.py",
        "--config",
        str(tmp_path / "recipe.yaml"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # No noise a user cannot act on: accelerate's launch defaults, TRL's deprecated-attribute FutureWarning, and
    # advice to install CUDA kernels on a CPU.
    output = result.stdout + result.stderr
    assert "were not passed to `accelerate launch`" not in output and "FutureWarning" not in output
    assert "for the optimized kernel" not in output

    # The completions table: one row per rollout of the last generation batch (1 prompt x G = 4), with its gate.
    table = pd.read_parquet(tmp_path / "run" / "completions" / "completions_00002.parquet")
    assert list(table.columns) == ["step", "prompt", "completion", "gate", "evidence_score"]
    assert len(table) == 4 and table["step"].eq(2).all() and table["prompt"].nunique() == 1
    assert table["gate"].between(0.0, 2.0).all() and table["evidence_score"].notna().all()
    # The gates are the standardised scores: their mean is 1 unless clipped, and they rank like the scores.
    ranked = table.sort_values("evidence_score")["gate"].tolist()
    assert ranked == sorted(ranked)
    assert "gate" in result.stdout  # the rich table printed in the log

    # wandb: an offline run holding the completions table.
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb")) and any("completions" in p.name for p in run.rglob("*.table.json"))

    # trackio: the local database holds the evidence metrics.
    (database,) = (tmp_path / "trackio").glob("vzero-tests*.db")
    rows = sqlite3.connect(database).execute("SELECT metrics FROM metrics").fetchall()
    logged = " ".join(bytes(metrics).decode() for (metrics,) in rows)  # JSON, stored as a blob
    assert "evidence/weight_mean" in logged and "distillation/reverse_kl" in logged


pytestmark = pytest.mark.filterwarnings("ignore")
