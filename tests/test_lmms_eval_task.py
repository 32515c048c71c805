"""The optional lmms-eval ZoomBench task: its YAML is well formed and its hooks score like `scripts/evaluate.py`."""

import importlib.util
from pathlib import Path

import datasets
import pytest
import yaml
from fixtures.benchmarks import write_fixture

from vzero_trl.eval.answers import aggregate, score_item
from vzero_trl.eval.tasks import load_benchmark


TASK = Path(__file__).parent.parent / "scripts" / "lmms_eval" / "zoombench"


def task_yaml() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    return yaml.load((TASK / "zoombench.yaml").read_text(), Loader=Loader)


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("zoombench_utils", TASK / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_yaml_names_existing_hooks_and_the_pinned_dataset(hooks):
    config = task_yaml()
    assert (config["task"], config["dataset_path"], config["test_split"]) == (
        "zoombench",
        "inclusionAI/ZoomBench",
        "test",
    )
    assert config["dataset_kwargs"]["revision"] == "b788097e57d30510c6877824833234a73bf80d25"
    functions = [config[k][1] for k in ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results")]
    functions.append(config["metric_list"][0]["aggregation"][1])
    for function in functions:
        module, name = function.split(".")
        assert module == "utils" and callable(getattr(hooks, name)), function
    assert config["generation_kwargs"]["temperature"] == 0.7 and config["generation_kwargs"]["top_k"] == 20


def test_hooks_lay_out_and_score_like_the_evaluation_script(hooks, tmp_path):
    path = write_fixture("zoombench", tmp_path)
    docs = list(datasets.Dataset.from_parquet(str(path)))
    items = load_benchmark("zoombench", str(path))
    assert len(docs) == len(items) and {item.kind for item in items} == {"mcq", "open"}
    results = []
    for doc, item in zip(docs, items, strict=True):
        assert hooks.doc_to_text(doc) == item.question and hooks.doc_to_target(doc) == item.answer
        (image,) = hooks.doc_to_visual(doc)
        assert image.mode == "RGB" and image.size == item.image.size
        response = f"<answer>{item.answer}</answer>" if item.id != items[0].id else "<answer>no idea</answer>"
        result = hooks.process_results(doc, [response])["zoombench_acc"]
        assert result["correct"] == score_item(item, response)["correct"]
        results.append(result)
    assert hooks.aggregate_results(results) == aggregate("zoombench", results)["score"]
    assert hooks.aggregate_results(results) == pytest.approx(100 * (len(items) - 1) / len(items))
