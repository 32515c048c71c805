"""Evaluation results on the Hub: the scores of a finished evaluation, where the Hub shows them.

`scripts/evaluate.py --push_to_hub --hub_model_id <you>/<model>` ends with one commit to that model repo holding

- `.eval_results/<benchmark>_<protocol>.yaml` per benchmark: one `huggingface_hub.EvalResultEntry` (the benchmark's
  Hub dataset, its commit, the benchmark as `task_id`, the score, the date, and notes naming the metric, the protocol
  and the `vzero_trl` version). The Hub shows these on the model page and on the benchmark's leaderboard;
- the model card with the matching `model-index` results (`huggingface_hub.EvalResult`, rendered by `ModelCardData`);
  results of other benchmarks or protocols already on the card are kept.

Before anything is evaluated, [`check_results_repo`] refuses a repository that does not exist or whose weights are
not those of the evaluated folder, so scores cannot land on another model's page.
"""

import hashlib
from importlib.metadata import version
from pathlib import Path

import yaml
from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    EvalResult,
    EvalResultEntry,
    HfApi,
    ModelCard,
    ModelCardData,
    eval_result_entries_to_yaml,
)
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from .answers import HEADERS
from .tasks import BENCHMARKS, DATASETS


# The name the Hub shows for each benchmark: its Table 1 header.
DISPLAY_NAMES = dict(zip(BENCHMARKS, HEADERS[: len(BENCHMARKS)], strict=True))


def check_results_repo(repo_id: str, model: str) -> None:
    """
    Refuse, before evaluating, to publish results to `repo_id` unless it is a model repository on the Hub and, when
    `model` is a local folder, its top-level `*.safetensors` files are byte for byte the folder's (compared by the
    sha256 the Hub stores for each).

    Raises:
        ValueError: Naming the repository and what does not match.
    """
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except RepositoryNotFoundError as error:
        raise ValueError(
            f"`hub_model_id` {repo_id!r} is not a model repository on the Hub. Push the model first (`scripts/vzero.py "
            "--push_to_hub --hub_model_id ...`), or correct the id."
        ) from error
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return  # a Hub model is its own repository (`EvaluateConfig` checks that `hub_model_id` is `model`)
    local = {}
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            local[file.name] = hashlib.file_digest(handle, "sha256").hexdigest()
    remote = {
        sibling.rfilename: sibling.lfs.sha256 if sibling.lfs else None
        for sibling in info.siblings
        if sibling.rfilename.endswith(".safetensors") and "/" not in sibling.rfilename
    }
    if not local or local != remote:
        raise ValueError(
            f"The weights of {folder} ({sorted(local) or 'no *.safetensors files'}) are not those of {repo_id} "
            f"({sorted(remote) or 'no *.safetensors files'}, or other contents): its model page would show scores of "
            "another model. Push this folder to that repository first, or evaluate the repository itself "
            f"(`--model {repo_id}`)."
        )


def protocol_notes(record: dict) -> str:
    """The decoding and image settings a run's `run.json` records, in one line."""
    if record["protocol.do_sample"]:
        decoding = (
            f"sampled with temperature {record['protocol.temperature']}, top-p {record['protocol.top_p']}, top-k "
            f"{record['protocol.top_k']}, presence penalty {record['protocol.presence_penalty']}, seed {record['seed']}"
        )
    else:
        decoding = "greedy"
    judge = f"; open-ended answers the rules reject judged by {record['judge_model']}" if record["judge_model"] else ""
    return (
        f"protocol `{record['protocol']}` (ZwZ prompt, {decoding}, at most {record['protocol.max_new_tokens']} new "
        f"tokens, images within {record['min_pixels']}-{record['max_pixels']} pixels, thinking "
        f"{'on' if record['enable_thinking'] else 'off'}{judge})"
    )


def benchmark_data(name: str, record: dict) -> tuple[str, str | None, str]:
    """
    `(Hub dataset id, commit or None, note)` of the data a benchmark was scored on, from its `run.json` entry: a Hub
    dataset at a commit, or a local copy (the public dataset's id, no commit, and a note with the copy's fingerprint).
    """
    data = record[f"data.{name}"]
    if " sha256:" in data:  # a local copy: "<path> sha256:<hex>"
        return DATASETS[name].dataset, None, f"on a local copy ({data.rsplit(' ', 1)[1]})"
    dataset, commit = data.rsplit("@", 1)
    return dataset, commit, ""


def eval_result_entries(summary: dict, record: dict) -> dict[str, EvalResultEntry]:
    """
    One `.eval_results/` entry per benchmark of a finished evaluation, keyed by its file name
    (`<benchmark>_<protocol>.yaml`).

    Args:
        summary (`dict`):
            What [`~vzero_trl.eval.evaluate.evaluate`] returns (also `summary.json`).
        record (`dict`):
            The run's `run.json` ([`~vzero_trl.eval.evaluate.run_record`]).

    Raises:
        ValueError: For a benchmark without a score (no item could be asked).
    """
    entries = {}
    for name, scores in summary["benchmarks"].items():
        if not scores["items"]:
            raise ValueError(f"Benchmark {name!r} has no score: none of its items could be asked (see report.md).")
        dataset, commit, data_note = benchmark_data(name, record)
        left_out = f", {scores['errors']} item(s) left out (could not be asked)" if scores["errors"] else ""
        notes = [
            f"accuracy in percent over {scores['items']} items{left_out}",
            protocol_notes(record),
            data_note,
            f"vzero_trl {version('vzero_trl')} (scripts/evaluate.py)",
        ]
        entries[f"{name}_{record['protocol']}.yaml"] = EvalResultEntry(
            dataset_id=dataset,
            task_id=name,
            value=round(scores["score"], 2),
            dataset_revision=commit,
            date=summary["date"],
            notes="; ".join(note for note in notes if note),
        )
    return entries


def model_index_results(summary: dict, record: dict) -> list[EvalResult]:
    """The card's `model-index` results matching [`eval_result_entries`]: one accuracy per benchmark, with the protocol
    as the metric's config."""
    results = []
    for name, scores in summary["benchmarks"].items():
        dataset, commit, _ = benchmark_data(name, record)
        spec = DATASETS[name]
        default = dataset == spec.dataset
        results.append(
            EvalResult(
                task_type="image-text-to-text",
                dataset_type=dataset,
                dataset_name=DISPLAY_NAMES[name],
                dataset_config=spec.config if default else None,
                dataset_split=spec.split if default else None,
                dataset_revision=commit,
                metric_type="accuracy",
                metric_name=f"Accuracy ({record['protocol']} protocol)",
                metric_config=record["protocol"],
                metric_value=round(scores["score"], 2),
            )
        )
    return results


def _result_key(result: EvalResult) -> tuple:
    return (result.dataset_type, result.dataset_config, result.dataset_split, result.metric_type, result.metric_config)


def push_eval_results(summary: dict, record: dict, repo_id: str) -> CommitInfo:
    """
    Push a finished evaluation's results to the model repository `repo_id` in one commit: the `.eval_results/` files
    and the model card with its `model-index` (a card is created when the repository has none).

    Returns:
        [`~huggingface_hub.CommitInfo`]: the commit.
    """
    entries = eval_result_entries(summary, record)
    try:
        card = ModelCard.load(repo_id)
    except EntryNotFoundError:
        name = repo_id.split("/")[-1]
        card = ModelCard.from_template(
            ModelCardData(model_name=name), template_str="---\n{{ card_data }}\n---\n\n# {{ model_name }}\n"
        )
    new = model_index_results(summary, record)
    kept = [result for result in card.data.eval_results or [] if _result_key(result) not in set(map(_result_key, new))]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or repo_id.split("/")[-1]  # model-index needs a name
    operations = [
        CommitOperationAdd(
            path_in_repo=f".eval_results/{file}",
            path_or_fileobj=yaml.safe_dump(eval_result_entries_to_yaml([entry]), sort_keys=False).encode(),
        )
        for file, entry in entries.items()
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    return HfApi().create_commit(
        repo_id,
        operations,
        commit_message=f"Evaluation results ({', '.join(summary['benchmarks'])}; protocol {record['protocol']})",
    )
