"""The evaluation runner and script: on local fixtures in each benchmark's real schema, with the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_fixtures import write_all_fixtures

from vzero_trl.answers import score_item
from vzero_trl.benchmarks import BENCHMARKS, load_benchmark
from vzero_trl.evaluate import (
    EvaluateConfig,
    PresencePenalty,
    TransformersGenerator,
    batch_seed,
    evaluate,
    read_predictions,
    validation_mix,
)
from vzero_trl.tiny import TINY_STUDENT, ensure_tiny_vlm


ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmarks")
    write_all_fixtures(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return ensure_tiny_vlm(tmp_path_factory.mktemp("tiny") / "student", **TINY_STUDENT)


def config(tmp_path, model, fixtures, **overrides):
    settings = dict(
        model=str(model),
        output_dir=str(tmp_path / "eval"),
        data_dir=str(fixtures),
        limit=4,
        batch_size=2,
        max_new_tokens=6,
        min_pixels=32 * 32,
        max_pixels=128 * 128,
        dtype="float32",
    )
    settings.update(overrides)
    return EvaluateConfig(**settings)


def test_presence_penalty_lowers_each_generated_token_once():
    scores = torch.zeros(2, 6)
    # prompt length 2: row 0 generated [3, 3, 5], row 1 generated [1]; prompt tokens (0, 4) are not penalised
    input_ids = torch.tensor([[0, 4, 3, 3, 5], [4, 0, 1, 1, 1]])
    out = PresencePenalty(1.5, prompt_length=2)(input_ids, scores)
    assert out[0].tolist() == [0, 0, 0, -1.5, 0, -1.5]
    assert out[1].tolist() == [0, -1.5, 0, 0, 0, 0]


def test_batch_seed_is_fixed_by_position():
    assert batch_seed(42, "vstar", 3) == batch_seed(42, "vstar", 3)
    assert (
        len(
            {
                batch_seed(42, "vstar", 3),
                batch_seed(42, "vstar", 4),
                batch_seed(43, "vstar", 3),
                batch_seed(42, "mmstar", 3),
            }
        )
        == 4
    )


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="Unknown benchmark"):
        EvaluateConfig(model="m", output_dir="o", benchmarks=["vqa"])
    with pytest.raises(ValueError, match="vstar=path_or_hub_id"):
        EvaluateConfig(model="m", output_dir="o", sources=["vstar:x"])
    with pytest.raises(ValueError, match="protocol"):
        EvaluateConfig(model="m", output_dir="o", protocol="beam")


def answering(correct: bool):
    """A generator that answers every question right (or wrong) in the ZwZ format."""

    def generate(items, seed):
        responses = []
        for item in items:
            if item.kind == "mcq":
                letter = item.answer if correct else next(k for k in item.options if k != item.answer)
                responses.append(f"I looked at the image.\n<answer>{letter}</answer>")
            else:
                responses.append(f"<answer>{item.answer if correct else 'something else entirely'}</answer>")
        return responses

    return generate


@pytest.mark.parametrize("correct,score", [(True, 100.0), (False, 0.0)])
def test_every_benchmark_scores_all_right_and_all_wrong(fixtures, tmp_path, correct, score):
    summary = evaluate(config(tmp_path, "unused", fixtures, limit=None), generator=answering(correct))
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    for name, scores in summary["benchmarks"].items():
        assert scores["score"] == score, name
        assert scores["items"] == len(load_benchmark(name, str(fixtures / f"{name}.parquet")))
    assert summary["table"]["avg"] == score and summary["table"]["perception_avg"] == score
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| Model | VStar | HR-4K | HR-8K | ZoomBench | MME-RW | MMStar | Perc. Avg | Avg |" in report
    assert "| Qwen3.5-4B* (paper) | 84.3 | 84.4 | 80.1 | 52.2 | 69.2 | 71.8 | 75.2 | 73.7 |" in report
    assert "| V-Zero-4B (Ours) (paper) | 89.0 | 87.8 | 82.6 | 57.8 | 69.8 | 74.4 | 79.3 | 76.9 |" in report


def test_open_ended_answers_go_to_the_judge_only_when_the_rules_do_not_decide(fixtures, tmp_path):
    calls = []

    def judge(question, reference, prediction):
        calls.append((reference, prediction))
        return True

    evaluate(
        config(tmp_path, "unused", fixtures, limit=None, benchmarks=["zoombench"]),
        generator=answering(False),
        judge=judge,
    )
    records = read_predictions(tmp_path / "eval" / "predictions.jsonl").values()
    open_ended = [r for r in records if r["kind"] == "open"]
    assert open_ended and len(calls) == len(open_ended)
    assert all(r["score_source"] == "judge" and r["correct"] for r in open_ended)
    assert all(r["score_source"] == "rule_choice" and not r["correct"] for r in records if r["kind"] == "mcq")


def test_script_runs_the_tiny_model_and_writes_the_report(fixtures, tiny_model, tmp_path):
    out = tmp_path / "eval"
    command = [
        sys.executable,
        "scripts/evaluate.py",
        "--model",
        str(tiny_model),
        "--output_dir",
        str(out),
        "--data_dir",
        str(fixtures),
        "--limit",
        "3",
        "--batch_size",
        "2",
        "--max_new_tokens",
        "6",
        "--min_pixels",
        "1024",
        "--max_pixels",
        "16384",
        "--dtype",
        "float32",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| Model | VStar |" in result.stdout  # the table is printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["limit"] == 3 and summary["protocol"] == "zwz"
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == sum(s["items"] for s in summary["benchmarks"].values()) == 3 * len(BENCHMARKS)
    # Every stored verdict is what the scoring rules give for the stored response.
    items = {
        (name, item.id): item
        for name in BENCHMARKS
        for item in load_benchmark(name, str(fixtures / f"{name}.parquet"), limit=3)
    }
    for record in records:
        rescored = score_item(items[(record["benchmark"], record["id"])], record["response"])
        assert rescored["correct"] == record["correct"] and rescored["extracted"] == record["extracted"]
    report = (out / "report.md").read_text()
    assert f"**{tiny_model.name}** (this run)" in report and "first 3 items per benchmark only" in report


def test_an_interrupted_sampled_run_resumes_to_the_same_report(fixtures, tiny_model, tmp_path):
    settings = dict(benchmarks=["vstar", "mmstar"], limit=4, batch_size=2)
    reference = evaluate(config(tmp_path / "whole", tiny_model, fixtures, **settings))

    generator = TransformersGenerator.from_config(config(tmp_path, tiny_model, fixtures))
    calls = {"n": 0}

    def crashing(items, seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a kill after two batches
        return generator(items, seed)

    interrupted = config(tmp_path / "resumed", tiny_model, fixtures, **settings)
    with pytest.raises(KeyboardInterrupt):
        evaluate(interrupted, generator=crashing)
    assert len(read_predictions(Path(interrupted.output_dir) / "predictions.jsonl")) == 4
    # A line cut short by the kill is ignored, and its batch redone.
    with open(Path(interrupted.output_dir) / "predictions.jsonl", "a") as file:
        file.write('{"benchmark": "mmstar", "id": ')
    resumed = evaluate(interrupted, generator=generator)
    assert {k: v for k, v in resumed.items() if k != "settings"} == {
        k: v for k, v in reference.items() if k != "settings"
    }
    whole = read_predictions(Path(tmp_path / "whole" / "eval" / "predictions.jsonl"))
    again = read_predictions(Path(interrupted.output_dir) / "predictions.jsonl")
    assert {k: r["response"] for k, r in whole.items()} == {k: r["response"] for k, r in again.items()}


def test_validation_mix_samples_each_benchmark_reproducibly(fixtures):
    sources = {name: str(fixtures / f"{name}.parquet") for name in BENCHMARKS}
    mix = validation_mix(("vstar", "hrbench_4k"), per_benchmark=3, seed=0, sources=sources)
    again = validation_mix(("vstar", "hrbench_4k"), per_benchmark=3, seed=0, sources=sources)
    other = validation_mix(("vstar", "hrbench_4k"), per_benchmark=3, seed=1, sources=sources)
    assert [i.id for i in mix] == [i.id for i in again] and [i.benchmark for i in mix] == ["vstar"] * 3 + [
        "hrbench_4k"
    ] * 3
    assert [i.id for i in mix] != [i.id for i in other]


def test_training_callback_logs_benchmark_scores(fixtures, tmp_path):
    from helpers import make_trainer

    from vzero_trl.evaluate import BenchmarkEvalCallback
    from vzero_trl.synthetic import make_dataset
    from vzero_trl.tiny import build_tiny_pair

    models = build_tiny_pair(tmp_path / "models")
    trainer = make_trainer(models, tmp_path, make_dataset(8), max_steps=2)
    items = [
        item
        for name in ("vstar", "mme_realworld")
        for item in load_benchmark(name, str(fixtures / f"{name}.parquet"), limit=3)
    ]
    trainer.add_callback(BenchmarkEvalCallback(trainer, items, eval_steps=2, batch_size=2, max_new_tokens=4))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "benchmark/vstar" in entry]
    assert len(logged) == 1 and logged[0]["step"] == 2
    assert 0.0 <= logged[0]["benchmark/mme_realworld"] <= 100.0
    assert logged[0]["benchmark/avg"] == pytest.approx(
        (logged[0]["benchmark/vstar"] + logged[0]["benchmark/mme_realworld"]) / 2
    )
    assert trainer.model.training  # the callback puts the model back in training mode
