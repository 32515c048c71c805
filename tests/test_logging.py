"""Logging to trackio and wandb (both offline) from the launcher, and the completions table with each rollout's gate.

Run in a subprocess: both libraries read their storage locations from the environment when they are imported."""

import io
import json
import sqlite3

import pandas as pd
import pytest
import yaml
from datasets import load_from_disk
from helpers import ROOT, launch_command, run_command
from PIL import Image

from vzero_trl.toy.synthetic import make_dataset
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


def test_trackio_and_wandb_offline_get_metrics_and_the_completions_table(tmp_path):
    make_dataset(8, seed=1).save_to_disk(tmp_path / "data")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),  # where the tables' artifacts are staged for a later sync
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
        logging_steps=1,  # each step's metrics logged alone, to compare with that step's completions table
        save_strategy="no",
        report_to=["trackio", "wandb"],  # a list: from the command line `report_to` takes one value
        project="vzero-tests",
        run_name="logging-test",
        log_completions=True,
        num_completions_to_print=2,
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = launch_command(
        "--config", str(tmp_path / "recipe.yaml"), accelerate=("--config_file", "configs/accelerate/cpu.yaml")
    )  # fmt: skip
    result = run_command(command, env)
    # No noise a user cannot act on: accelerate's launch defaults, TRL's deprecated-attribute FutureWarning, and
    # advice to install CUDA kernels on a CPU.
    output = result.stdout + result.stderr
    assert "were not passed to `accelerate launch`" not in output and "FutureWarning" not in output
    assert "for the optimized kernel" not in output

    # The completions table: one row per rollout of the last generation batch (1 prompt x G = 4), with its gate.
    table = pd.read_parquet(tmp_path / "run" / "completions" / "completions_00002.parquet")
    assert list(table.columns) == [
        "step", "prompt", "completion", "group", "gate", "evidence_score", "crop", "negative_crop"
    ]  # fmt: skip
    assert len(table) == 4 and table["step"].eq(2).all() and table["prompt"].nunique() == 1
    assert table["group"].eq(0).all()  # the batch's only prompt
    # The crops the teacher was shown, readable with pandas and PIL alone (PNG bytes): the row's own crops, thumbnailed.
    source = load_from_disk(str(tmp_path / "data"))
    shown = {column: Image.open(io.BytesIO(table[column][0])) for column in ("crop", "negative_crop")}
    matches = [row for row in source if row["crop"].size == shown["crop"].size]
    assert any(
        all(list(row[c].convert("RGB").getdata()) == list(shown[c].getdata()) for c in shown) for row in matches
    )  # crops below the thumbnail size are stored exactly
    assert table["crop"].nunique() == 1 and table["negative_crop"].nunique() == 1  # one prompt, one pair of crops
    assert table["gate"].between(0.0, 2.0).all() and table["evidence_score"].notna().all()
    # The gates are the standardised scores: their mean is 1 unless clipped, and they rank like the scores.
    ranked = table.sort_values("evidence_score")["gate"].tolist()
    assert ranked == sorted(ranked)
    assert "gate" in result.stdout  # the rich table printed in the log

    # wandb: an offline run holding the completions table.
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb")) and any("completions" in p.name for p in run.rglob("*.table.json"))
    (completions,) = [p for p in run.rglob("*.table.json") if p.name.startswith("completions_")][-1:]
    assert json.loads(completions.read_text())["columns"][-2:] == ["crop", "negative_crop"]
    # The run's file holds placeholders; the table itself goes to wandb as an artifact, staged offline, whose crop
    # cells are image files (PNG, staged beside it) that wandb shows as pictures.
    staged = [p for p in (tmp_path / "wandb-data" / "artifacts" / "staging").iterdir() if p.is_file()]
    tables = [json.loads(p.read_bytes()) for p in staged if p.read_bytes().startswith(b'{"_type": "table"')]
    tables = [t for t in tables if t["columns"][-2:] == ["crop", "negative_crop"]]
    assert tables and all(len(t["data"]) == 4 for t in tables)
    cells = [cell for t in tables for row in t["data"] for cell in row[-2:]]
    assert all(cell["_type"] == "image-file" and cell["format"] == "png" for cell in cells)
    assert sum(p.read_bytes().startswith(b"\x89PNG") for p in staged) >= 2  # a crop and a negative crop

    # trackio: the local database holds each step's metrics, and step 2's gate metrics are those of the rollouts in
    # step 2's completions table (the same batch, one process).
    (database,) = (tmp_path / "trackio").glob("vzero-tests*.db")
    logged = {}
    for (metrics,) in sqlite3.connect(database).execute("SELECT metrics FROM metrics ORDER BY id"):
        metrics = {key.removeprefix("train/"): value for key, value in json.loads(metrics).items()}  # a JSON blob
        if "loss" in metrics:
            logged[metrics["global_step"]] = metrics
    assert sorted(logged) == [1, 2]
    assert {"evidence/weight_mean", "evidence/score_std", "distillation/reverse_kl"} <= logged[1].keys()
    gates, scores = table["gate"], table["evidence_score"]
    assert logged[2]["evidence/weight_min"] == pytest.approx(gates.min(), rel=1e-5)
    assert logged[2]["evidence/weight_max"] == pytest.approx(gates.max(), rel=1e-5)
    assert logged[2]["evidence/weight_mean"] == pytest.approx(gates.mean(), rel=1e-5)
    assert logged[2]["evidence/score_mean"] == pytest.approx(scores.mean(), rel=1e-5, abs=1e-7)
    assert logged[2]["evidence/score_std"] == pytest.approx(scores.std(ddof=0), rel=1e-5, abs=1e-7)
    assert gates.max() > gates.min()  # the comparison means something only if the gates differ
    # trackio: the table's crop cells are images saved with the run's media.
    assert len(list((tmp_path / "trackio").rglob("*.png"))) >= 2


pytestmark = pytest.mark.filterwarnings("ignore")
