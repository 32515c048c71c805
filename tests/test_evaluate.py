"""The evaluation runner and script: on local fixtures in each benchmark's real schema, with the tiny model."""

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.benchmarks import encode, picture, write_all_fixtures
from safetensors.torch import load_file, save_file

import vzero_trl.eval.evaluate as evaluate_module
from vzero_trl.eval.answers import score_item
from vzero_trl.eval.evaluate import (
    EvaluateConfig,
    PresencePenalty,
    TransformersGenerator,
    batch_seed,
    evaluate,
    read_predictions,
    validation_mix,
)
from vzero_trl.eval.tasks import BENCHMARKS, LazyEvalItem, load_benchmark
from vzero_trl.images import BadImage
from vzero_trl.toy.tiny import TINY_STUDENT, ensure_tiny_vlm


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
def test_every_benchmark_scores_all_right_and_all_wrong(fixtures, tiny_model, tmp_path, correct, score):
    summary = evaluate(config(tmp_path, tiny_model, fixtures, limit=None), generator=answering(correct))
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    for name, scores in summary["benchmarks"].items():
        assert scores["score"] == score, name
        assert scores["items"] == len(load_benchmark(name, str(fixtures / f"{name}.parquet")))
    assert summary["table"]["avg"] == score and summary["table"]["perception_avg"] == score
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| Model | VStar | HR-4K | HR-8K | ZoomBench | MME-RW | MMStar | Perc. Avg | Avg |" in report
    assert "| Qwen3.5-4B* (paper) | 84.3 | 84.4 | 80.1 | 52.2 | 69.2 | 71.8 | 75.2 | 73.7 |" in report
    assert "| V-Zero-4B (Ours) (paper) | 89.0 | 87.8 | 82.6 | 57.8 | 69.8 | 74.4 | 79.3 | 76.9 |" in report


def test_open_ended_answers_go_to_the_judge_only_when_the_rules_do_not_decide(fixtures, tiny_model, tmp_path):
    calls = []

    def judge(question, reference, prediction):
        calls.append((reference, prediction))
        return True

    evaluate(
        config(tmp_path, tiny_model, fixtures, limit=None, benchmarks=["zoombench"]),
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
    assert {k: v for k, v in resumed.items() if k not in ("settings", "date")} == {
        k: v for k, v in reference.items() if k not in ("settings", "date")
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

    from vzero_trl.eval.evaluate import BenchmarkEvalCallback
    from vzero_trl.toy.synthetic import make_dataset
    from vzero_trl.toy.tiny import build_tiny_pair

    models = build_tiny_pair(tmp_path / "models")
    trainer = make_trainer(models, tmp_path, make_dataset(8), max_steps=2)
    items = [
        item
        for name in ("vstar", "mme_realworld")
        for item in load_benchmark(name, str(fixtures / f"{name}.parquet"), limit=3)
    ]

    def corrupt():
        raise BadImage("unreadable_image", "image bytes: cannot decode (OSError: truncated)")

    items.insert(1, LazyEvalItem("vstar", "broken", corrupt, "Q?", "A", "mcq", {"A": "a", "B": "b"}))
    trainer.add_callback(BenchmarkEvalCallback(trainer, items, eval_steps=2, batch_size=2, max_new_tokens=4))
    with pytest.warns(UserWarning, match="Benchmark evaluation skips vstar item broken: image bytes: cannot decode"):
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "benchmark/vstar" in entry]
    assert len(logged) == 1 and logged[0]["step"] == 2
    assert 0.0 <= logged[0]["benchmark/mme_realworld"] <= 100.0
    assert logged[0]["benchmark/avg"] == pytest.approx(
        (logged[0]["benchmark/vstar"] + logged[0]["benchmark/mme_realworld"]) / 2
    )
    assert trainer.model.training  # the callback puts the model back in training mode


def counting(generate):
    """`generate`, counting the questions it is asked in `.asked`."""

    def wrapped(items, seed):
        wrapped.asked += len(items)
        return generate(items, seed)

    wrapped.asked = 0
    return wrapped


def test_a_rerun_with_other_settings_is_refused_naming_them(fixtures, tiny_model, tmp_path):
    first = config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], limit=2)
    evaluate(first, generator=answering(True))
    predictions = (tmp_path / "eval" / "predictions.jsonl").read_text()

    for overrides, named in (
        ({"protocol": "greedy"}, "protocol: 'zwz' -> 'greedy'"),
        ({"max_new_tokens": 7}, "protocol.max_new_tokens: 6 -> 7"),
        ({"max_pixels": 64 * 64}, "max_pixels: 16384 -> 4096"),
        ({"enable_thinking": True}, "enable_thinking: False -> True"),
        ({"batch_size": 1}, "batch_size: 2 -> 1"),
    ):
        with pytest.raises(ValueError, match="other settings") as refused:
            evaluate(
                config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], **overrides), generator=answering(False)
            )
        assert (
            named in str(refused.value)
            and "--output_dir" in str(refused.value)
            and "--overwrite" in str(refused.value)
        )
    assert (tmp_path / "eval" / "predictions.jsonl").read_text() == predictions  # nothing generated, nothing written

    # Other benchmark data under the same name: its fingerprint differs.
    other_data = tmp_path / "other_data"
    shutil.copytree(fixtures, other_data)
    (other_data / "vstar.parquet").write_bytes((fixtures / "mmstar.parquet").read_bytes())
    with pytest.raises(ValueError, match=r"data\.vstar: "):
        evaluate(config(tmp_path, tiny_model, other_data, benchmarks=["vstar"]), generator=answering(False))

    # The same settings resume: only the new items are asked, and another benchmark can be added.
    generate = counting(answering(True))
    summary = evaluate(config(tmp_path, tiny_model, fixtures, benchmarks=["vstar", "mmstar"], limit=3), generate)
    assert generate.asked == 1 + 3 and summary["benchmarks"]["vstar"]["items"] == 3

    # --overwrite starts over with the new settings.
    generate = counting(answering(False))
    summary = evaluate(
        config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], protocol="greedy", overwrite=True), generate
    )
    assert generate.asked == 4 and summary["benchmarks"]["vstar"]["score"] == 0.0


def test_another_model_or_changed_weights_are_refused(fixtures, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    evaluate(config(tmp_path, model, fixtures, benchmarks=["vstar"]), generator=answering(True))

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    with pytest.raises(ValueError, match=f"model: '{model}' -> '{other}'"):
        evaluate(config(tmp_path, other, fixtures, benchmarks=["vstar"]), generator=answering(True))

    # The same folder, retrained in place: its weights fingerprint differs.
    weights = load_file(model / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model_fingerprint: 'sha256:"):
        evaluate(config(tmp_path, model, fixtures, benchmarks=["vstar"]), generator=answering(True))


def test_a_missing_model_is_an_error_before_anything_is_written(fixtures, tmp_path):
    for missing in (str(tmp_path / "no-such-model"), "./no-such-model"):
        with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub id"):
            evaluate(config(tmp_path, missing, fixtures), generator=answering(True))
    # An owner/name that is neither a folder nor on the Hub (the tests run offline, with nothing in the cache).
    with pytest.raises(ValueError, match="cannot be resolved"):
        evaluate(config(tmp_path, "nobody-vzero-tests/no-such-model", fixtures), generator=answering(True))
    assert not (tmp_path / "eval").exists()


def test_predictions_without_a_record_of_their_settings_are_not_reused(fixtures, tiny_model, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "predictions.jsonl").write_text(json.dumps({"benchmark": "vstar", "id": "0", "correct": True}) + "\n")
    with pytest.raises(ValueError, match="no record of the model and settings"):
        evaluate(config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"]), generator=answering(False))


def test_rows_that_cannot_be_asked_are_recorded_as_errors_and_the_run_goes_on(tiny_model, tmp_path):
    # A local V* copy in its public schema (jsonl, base64 images): a corrupt image, and a row without its `label`.
    rows = []
    for i in range(4):
        image = base64.b64encode(encode(picture((64 + 8 * i, 48), (200, 150, 40)))).decode()
        text = "What is the colour of the cup?\n(A) red\n(B) blue\nAnswer with the option's letter."
        rows.append({"question_id": i, "image": image, "text": text, "label": "A", "category": "direct_attributes"})
    rows[1]["image"] = base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg").decode()
    del rows[2]["label"]
    source = tmp_path / "vstar.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))

    generate = counting(answering(True))
    run = config(tmp_path, tiny_model, tmp_path, benchmarks=["vstar"], sources=[f"vstar={source}"], limit=None)
    summary = evaluate(run, generator=generate)
    assert generate.asked == 2
    vstar = summary["benchmarks"]["vstar"]
    assert (vstar["items"], vstar["errors"], vstar["score"]) == (2, 2, 100.0)
    errors = {
        r["id"]: r["error"] for r in read_predictions(tmp_path / "eval" / "predictions.jsonl").values() if "error" in r
    }
    assert set(errors) == {"1", "2"}
    assert errors["1"].startswith("vstar item 1:") and "cannot decode" in errors["1"]
    assert errors["2"].startswith(f"vstar row 2 of {source}:") and "(missing or empty: label)" in errors["2"]
    assert "2 item(s) could not be asked" in (tmp_path / "eval" / "report.md").read_text()
    # A rerun does not ask them again.
    assert evaluate(run, generator=counting(answering(True)))["benchmarks"]["vstar"]["errors"] == 2


# --- one record per item ----------------------------------------------------------------------------------------------


def records_per_item(path):
    keys = [(record["benchmark"], record["id"]) for record in map(json.loads, path.read_text().splitlines())]
    return keys, set(keys)


KILL_SETTINGS = dict(benchmarks=["vstar", "mmstar"], limit=3, batch_size=2)  # 6 items in 4 batches: 2, 1, 2, 1


@pytest.mark.parametrize("written", range(7))  # a kill after any number of records, mid-way through the next line
def test_a_kill_at_any_point_then_a_rerun_leaves_one_record_per_item(
    fixtures, tiny_model, tmp_path, monkeypatch, written
):
    reference = evaluate(config(tmp_path / "whole", tiny_model, fixtures, **KILL_SETTINGS), generator=answering(True))
    append = evaluate_module._append
    budget = {"left": written}

    def killed_while_writing(path, done, records):
        kept, budget["left"] = records[: budget["left"]], budget["left"] - len(records)
        append(path, done, kept)
        if budget["left"] < 0:
            with open(path, "a") as file:
                file.write(json.dumps(records[len(kept)])[:25])  # the start of the next line
            raise KeyboardInterrupt

    run = config(tmp_path, tiny_model, fixtures, **KILL_SETTINGS)
    monkeypatch.setattr(evaluate_module, "_append", killed_while_writing)
    if written < 6:
        with pytest.raises(KeyboardInterrupt):
            evaluate(run, generator=answering(True))
    monkeypatch.setattr(evaluate_module, "_append", append)
    resumed = evaluate(run, generator=answering(True))
    keys, unique = records_per_item(tmp_path / "eval" / "predictions.jsonl")
    assert len(keys) == len(unique) == 6  # the records of a cut batch used to be appended a second time
    assert {k: v for k, v in resumed.items() if k != "settings"} == {
        k: v for k, v in reference.items() if k != "settings"
    }


def test_a_larger_limit_adds_only_the_new_items(fixtures, tiny_model, tmp_path):
    generate = counting(answering(True))
    evaluate(config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], limit=3, batch_size=2), generator=generate)
    summary = evaluate(
        config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], limit=4, batch_size=2), generator=generate
    )
    keys, unique = records_per_item(tmp_path / "eval" / "predictions.jsonl")
    assert len(keys) == len(unique) == 4 and summary["benchmarks"]["vstar"]["items"] == 4


def test_predictions_holding_an_item_twice_are_rewritten_with_one_record_each(fixtures, tiny_model, tmp_path):
    run = config(tmp_path, tiny_model, fixtures, benchmarks=["vstar"], limit=2)
    first = evaluate(run, generator=answering(True))
    path = tmp_path / "eval" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    wrong = json.loads(lines[0]) | {"correct": False, "response": "later"}
    path.write_text("\n".join([*lines, json.dumps(wrong)]) + "\n")  # as an older version appended on resume
    assert evaluate(run, generator=answering(False))["benchmarks"] == first["benchmarks"]
    assert path.read_text().splitlines() == lines  # the first record of each item, once


def test_duplicated_item_ids_are_refused_at_load(tmp_path):
    # Two rows under one id used to be scored from one record: 100.0 where the answers deserve 75.0.
    rows = []
    for i in (0, 1, 1, 2, 3, 3):
        image = base64.b64encode(encode(picture((64, 48), (200, 150, 40)))).decode()
        text = "What is the colour of the cup?\n(A) red\n(B) blue\nAnswer with the option's letter."
        rows.append({"question_id": i, "image": image, "text": text, "label": "A", "category": "direct_attributes"})
    source = tmp_path / "vstar.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=r"holds 2 vstar id\(s\) on more than one row \('1', '3'\).*`question_id`"):
        load_benchmark("vstar", str(source))
    assert len(load_benchmark("vstar", str(source), limit=2)) == 2  # the rows read are unique
