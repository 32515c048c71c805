"""Evaluation results on the Hub: the `.eval_results/` entries and the card's `model-index` built from a finished
evaluation, and their round trip through the loopback Hub (pushed by `scripts/evaluate.py --push_to_hub`, read back
by huggingface_hub in a fresh Python)."""

import json
import sys
from importlib.metadata import version

import pytest
from fixtures.benchmarks import write_fixture
from helpers import run_command
from huggingface_hub import ModelCard, ModelCardData, eval_result_entries_to_yaml

from vzero_trl.eval.evaluate import EvaluateConfig
from vzero_trl.eval.hub_results import eval_result_entries, model_index_results
from vzero_trl.toy.tiny import TINY_STUDENT, ensure_tiny_vlm


HR_BENCH_COMMIT = "83b9013d6293b85dc507e87199ca52517536939c"
SUMMARY = {
    "date": "2026-03-01T12:00:00+00:00",
    "benchmarks": {
        "vstar": {"items": 3, "errors": 1, "score": 200 / 3, "direct_attributes": 50.0},
        "hrbench_4k": {"items": 8, "errors": 0, "score": 37.5},
    },
}
RECORD = {
    "protocol": "greedy",
    "protocol.do_sample": False,
    "protocol.max_new_tokens": 8192,
    "min_pixels": 65536,
    "max_pixels": 16777216,
    "enable_thinking": False,
    "judge_model": None,
    "seed": 42,
    "data.vstar": "/data/vstar.parquet sha256:0123abcd",
    "data.hrbench_4k": f"DreamMr/HR-Bench@{HR_BENCH_COMMIT}",
}
PROTOCOL = "protocol `greedy` (ZwZ prompt, greedy, at most 8192 new tokens, images within 65536-16777216 pixels, thinking off)"


def test_one_entry_per_benchmark_and_the_matching_model_index():
    entries = eval_result_entries(SUMMARY, RECORD)
    package = f"vzero_trl {version('vzero_trl')} (scripts/evaluate.py)"
    assert list(entries) == ["vstar_greedy.yaml", "hrbench_4k_greedy.yaml"]
    assert eval_result_entries_to_yaml(list(entries.values())) == [
        {
            "dataset": {"id": "lmms-lab/vstar-bench", "task_id": "vstar"},  # a local copy: no commit, its fingerprint
            "value": 66.67,  # 2 of 3, in percent, two decimals
            "date": "2026-03-01T12:00:00+00:00",
            "notes": f"accuracy in percent over 3 items, 1 item(s) left out (could not be asked); {PROTOCOL}; on a "
            f"local copy (sha256:0123abcd); {package}",
        },
        {
            "dataset": {"id": "DreamMr/HR-Bench", "task_id": "hrbench_4k", "revision": HR_BENCH_COMMIT},
            "value": 37.5,
            "date": "2026-03-01T12:00:00+00:00",
            "notes": f"accuracy in percent over 8 items; {PROTOCOL}; {package}",
        },
    ]
    results = model_index_results(SUMMARY, RECORD)
    assert [(r.dataset_type, r.dataset_name, r.dataset_config, r.dataset_split, r.dataset_revision) for r in results] == [
        ("lmms-lab/vstar-bench", "VStar", None, "test", None),
        ("DreamMr/HR-Bench", "HR-4K", "hrbench_version_split", "hrbench_4k", HR_BENCH_COMMIT),
    ]  # fmt: skip
    assert [(r.metric_type, r.metric_config, r.metric_value) for r in results] == [
        ("accuracy", "greedy", 66.67),
        ("accuracy", "greedy", 37.5),
    ]
    # The card renders them as `model-index`, and reading the card gives them back.
    card = ModelCard.from_template(ModelCardData(model_name="m", eval_results=results), template_str="---\n{{ card_data }}\n---\n")  # fmt: skip
    assert "model-index:" in str(card) and ModelCard(str(card)).data.eval_results == results


def test_a_benchmark_without_a_score_is_not_published():
    summary = {**SUMMARY, "benchmarks": {"vstar": {"items": 0, "errors": 3, "score": float("nan")}}}
    with pytest.raises(ValueError, match="'vstar' has no score: none of its items could be asked"):
        eval_result_entries(summary, RECORD)


def test_push_settings_fail_early(tmp_path):
    settings = dict(model=str(tmp_path), output_dir=str(tmp_path / "eval"), push_to_hub=True)
    with pytest.raises(ValueError, match="`push_to_hub` needs `hub_model_id`.*got None"):
        EvaluateConfig(**settings)
    with pytest.raises(ValueError, match="`push_to_hub` needs `hub_model_id`.*got 'no slash'"):
        EvaluateConfig(**settings, hub_model_id="no slash")
    with pytest.raises(ValueError, match=r"`limit` \(50\) would publish the score of the first 50 items"):
        EvaluateConfig(**settings, hub_model_id="user/model", limit=50)
    with pytest.raises(ValueError, match="`hub_model_id` must be 'Qwen/Qwen3.5-4B', got 'user/model'"):
        EvaluateConfig(**{**settings, "model": "Qwen/Qwen3.5-4B"}, hub_model_id="user/model")


# The model's repository (its weights and a card with an earlier result of another benchmark), and a repository
# holding another model.
SETUP = """
import sys
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

api = HfApi()
for repo, folder in (("user/vzero-eval", sys.argv[1]), ("user/other-model", sys.argv[2])):
    api.create_repo(repo)
    api.upload_folder(folder_path=folder, repo_id=repo)
earlier = EvalResult(
    task_type="image-text-to-text", dataset_type="Lin-Chen/MMStar", dataset_name="MMStar", metric_type="accuracy",
    metric_value=12.5, metric_config="zwz",
)
data = ModelCardData(model_name="vzero-eval", tags=["v-zero"], eval_results=[earlier])
template = "---\\n{{ card_data }}\\n---\\n\\n# vzero-eval\\n\\nTrained with V-Zero.\\n"
ModelCard.from_template(data, template_str=template).push_to_hub("user/vzero-eval")
"""

# Read back with huggingface_hub's own parsers; push the same results again (nothing may be duplicated); ask
# `check_results_repo` about the other model's repository and a missing one.
READ_BACK = """
import dataclasses, json, sys
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download, parse_eval_result_entries
from vzero_trl.eval.hub_results import check_results_repo, push_eval_results

repo, (summary, record, model) = "user/vzero-eval", sys.argv[1:]
push_eval_results(json.load(open(summary)), json.load(open(record)), repo)
files = sorted(f for f in HfApi().list_repo_files(repo) if f.startswith(".eval_results/"))
entries = {
    f: [dataclasses.asdict(e) for e in parse_eval_result_entries(yaml.safe_load(open(hf_hub_download(repo, f))))]
    for f in files
}
card = ModelCard.load(repo)
refused = {}
for other in ("user/other-model", "user/missing"):
    try:
        check_results_repo(other, model)
    except ValueError as error:
        refused[other] = str(error)
print(json.dumps({
    "entries": entries, "results": [dataclasses.asdict(r) for r in card.data.eval_results],
    "text": card.text, "tags": card.data.tags, "refused": refused,
}))
"""


def test_scores_round_trip_through_the_hub(fake_hub, tmp_path):
    model = ensure_tiny_vlm(tmp_path / "model", **TINY_STUDENT)
    other = ensure_tiny_vlm(tmp_path / "other", **{**TINY_STUDENT, "seed": 1})
    for name in ("vstar", "hrbench_4k"):
        write_fixture(name, tmp_path / "data")
    run_command([sys.executable, "-c", SETUP, str(model), str(other)], fake_hub.env(tmp_path / "home"))

    out = tmp_path / "eval"
    command = [
        sys.executable, "scripts/evaluate.py",
        "--model", str(model), "--output_dir", str(out), "--data_dir", str(tmp_path / "data"),
        "--benchmarks", "vstar", "hrbench_4k",
        "--batch_size", "4", "--max_new_tokens", "6", "--min_pixels", "1024", "--max_pixels", "16384",
        "--dtype", "float32",
        "--push_to_hub", "--hub_model_id", "user/vzero-eval",
    ]  # fmt: skip
    result = run_command(command, fake_hub.env(tmp_path / "home"))
    summary = json.loads((out / "summary.json").read_text())
    assert f"Published the scores to user/vzero-eval: {summary['hub_commit']}" in result.stdout
    # One commit holds the entries and the card.
    pushed = fake_hub.files("user/vzero-eval", "model", revision=summary["hub_commit"].rsplit("/", 1)[1])
    assert {".eval_results/vstar_zwz.yaml", ".eval_results/hrbench_4k_zwz.yaml"} <= pushed.keys()
    assert b"model-index:" in pushed["README.md"] and "model.safetensors" in pushed

    back = json.loads(
        run_command(
            [sys.executable, "-c", READ_BACK, str(out / "summary.json"), str(out / "run.json"), str(model)],
            fake_hub.env(tmp_path / "home2"),  # nothing cached from the push
        ).stdout.splitlines()[-1]
    )
    scores = {name: round(s["score"], 2) for name, s in summary["benchmarks"].items()}
    assert sorted(back["entries"]) == [".eval_results/hrbench_4k_zwz.yaml", ".eval_results/vstar_zwz.yaml"]
    for name, value in scores.items():
        (entry,) = back["entries"][f".eval_results/{name}_zwz.yaml"]
        assert entry["task_id"] == name and entry["value"] == value and entry["date"] == summary["date"]
        assert entry["dataset_id"] == {"vstar": "lmms-lab/vstar-bench", "hrbench_4k": "DreamMr/HR-Bench"}[name]
        assert "protocol `zwz` (ZwZ prompt, sampled with temperature 0.7" in entry["notes"]
        assert f"vzero_trl {version('vzero_trl')}" in entry["notes"] and "on a local copy (sha256:" in entry["notes"]
    # The card keeps its text, tags and the earlier MMStar result, and has each new score once (pushed twice).
    assert back["text"].strip() == "# vzero-eval\n\nTrained with V-Zero." and back["tags"] == ["v-zero"]
    results = {(r["dataset_type"], r["dataset_split"]): r for r in back["results"]}
    assert len(back["results"]) == len(results) == 3
    assert results[("Lin-Chen/MMStar", None)]["metric_value"] == 12.5
    assert results[("lmms-lab/vstar-bench", "test")]["metric_value"] == scores["vstar"]
    assert results[("DreamMr/HR-Bench", "hrbench_4k")]["metric_value"] == scores["hrbench_4k"]
    assert all(r["metric_config"] == "zwz" and r["metric_type"] == "accuracy" for r in back["results"])
    # Another model's repository, or none, is refused before anything is evaluated.
    assert "are not those of user/other-model" in back["refused"]["user/other-model"]
    assert "'user/missing' is not a model repository" in back["refused"]["user/missing"]
