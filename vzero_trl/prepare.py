"""The data-preparation pipeline: a source split -> shards of V-Zero rows -> one dataset, resumable and parallel.

    output_dir/
      shards/00000/{data/, rejects.jsonl}   one finished shard (written to `00000.tmp/`, then renamed)
      dataset/                              the assembled dataset (`datasets.load_from_disk`)
      rejects.jsonl                         every rejected row: index, id, reason, message
      summary.json                          counts of kept and rejected rows by reason, and the settings
      README.md                             the dataset card

Rows are split into fixed shards of `shard_size` source rows. A shard is finished once its folder is renamed into
place, so a run that is killed at any moment leaves only whole shards behind; rerunning with the same settings skips
them and converts the rest. Every random choice derives from the run seed and the row id, so the assembled dataset is
the same whether the run was interrupted or not, and whatever `num_proc` is.
"""

import dataclasses
import json
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from .card import build_dataset_card
from .data import PrepareConfig, RejectedRow, convert_row, row_id


LOCAL_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def output_features(random_crop: bool) -> datasets.Features:
    """The V-Zero dataset schema written by the pipeline."""
    features = {
        "id": datasets.Value("string"),
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "image": datasets.Image(),
        "bbox": datasets.List(datasets.Value("int32")),
        "crop": datasets.Image(),
        "negative_crop": datasets.Image(),
        "answer": datasets.Value("string"),
    }
    if random_crop:
        features["random_crop"] = datasets.Image()
    return datasets.Features(features)


def open_dataset(
    name: str, config_name: str | None = None, split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """
    One split of a dataset named by a Hub id, a local parquet/json/jsonl/csv file (or glob), or a folder written by
    `save_to_disk` (a `DatasetDict` folder gives `split`; a single-dataset folder is the whole dataset).
    """
    path = Path(name)
    if path.is_dir():
        dataset = datasets.load_from_disk(str(path))
        return dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    if path.suffix in LOCAL_BUILDERS:
        return datasets.load_dataset(LOCAL_BUILDERS[path.suffix], data_files=name, split="train", streaming=streaming)
    return datasets.load_dataset(name, config_name, split=split, streaming=streaming)


def load_source(config: PrepareConfig) -> datasets.Dataset:
    """
    The source split, with image columns left undecoded so that a bad image reaches the converter (and the rejects
    file) instead of failing inside `datasets`.
    """
    source = open_dataset(config.dataset, config.dataset_config, config.split)
    for name, feature in source.features.items():
        if isinstance(feature, datasets.Image):
            source = source.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List | datasets.Sequence) and isinstance(feature.feature, datasets.Image):
            source = source.cast_column(name, datasets.List(datasets.Image(decode=False)))
    if config.limit is not None:
        source = source.select(range(min(config.limit, len(source))))
    return source


def convert_shard(source: datasets.Dataset, rows: range, config: PrepareConfig) -> tuple[list[dict], list[dict]]:
    """Convert a range of source rows; returns the V-Zero rows and one record per rejected row."""
    kept, rejects = [], []
    for index in rows:
        row = source[index]
        try:
            kept.append(convert_row(row, index, config))
        except RejectedRow as error:
            rejects.append(
                {"index": index, "id": row_id(row, index, config), "reason": error.reason, "message": str(error)}
            )
        except Exception as error:  # a row must never stop the run; a systematic failure shows in the counts
            message = f"{type(error).__name__}: {error}"
            rejects.append(
                {"index": index, "id": row_id(row, index, config), "reason": "unexpected_error", "message": message}
            )
    return kept, rejects


def prepare(config: PrepareConfig) -> dict[str, Any]:
    """
    Run (or resume) the pipeline and assemble the dataset; returns the summary that is also written to
    `summary.json`.
    """
    output_dir = Path(config.output_dir)
    shards_dir = output_dir / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    for stale in shards_dir.glob("*.tmp"):  # a shard that a killed run was writing
        shutil.rmtree(stale)
    _check_settings_unchanged(output_dir, config)

    source = load_source(config)
    ranges = [
        range(start, min(start + config.shard_size, len(source))) for start in range(0, len(source), config.shard_size)
    ]
    pending = [k for k in range(len(ranges)) if not (shards_dir / f"{k:05d}").is_dir()]
    with tqdm(total=sum(len(ranges[k]) for k in pending), desc="Preparing rows", unit="row") as progress:
        if config.num_proc == 1:
            for k in pending:
                _write_shard(shards_dir / f"{k:05d}", *convert_shard(source, ranges[k], config), config)
                progress.update(len(ranges[k]))
        else:
            with ProcessPoolExecutor(max_workers=config.num_proc) as pool:
                futures = {
                    pool.submit(_convert_and_write, source, ranges[k], config, shards_dir / f"{k:05d}"): k
                    for k in pending
                }
                for future in as_completed(futures):
                    future.result()
                    progress.update(len(ranges[futures[future]]))
    return _assemble(output_dir, len(ranges), len(source), config)


def _convert_and_write(source: datasets.Dataset, rows: range, config: PrepareConfig, directory: Path) -> None:
    _write_shard(directory, *convert_shard(source, rows, config), config)


def _write_shard(directory: Path, kept: list[dict], rejects: list[dict], config: PrepareConfig) -> None:
    # Written beside its final place and renamed in one step, so a shard folder is either complete or absent.
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if kept:  # a shard whose rows were all rejected has no data folder (`datasets` cannot reload an empty one)
        features = output_features(config.random_crop)
        datasets.Dataset.from_list(kept, features=features).save_to_disk(str(staging / "data"))
    with open(staging / "rejects.jsonl", "w") as file:
        file.writelines(json.dumps(record) + "\n" for record in rejects)
    staging.rename(directory)


def _assemble(output_dir: Path, num_shards: int, num_rows: int, config: PrepareConfig) -> dict[str, Any]:
    shards = [output_dir / "shards" / f"{k:05d}" for k in range(num_shards)]
    parts = [datasets.load_from_disk(str(shard / "data")) for shard in shards if (shard / "data").is_dir()]
    shutil.rmtree(output_dir / "dataset", ignore_errors=True)
    if parts:  # with every row rejected there is no dataset to write (`datasets` cannot reload an empty one)
        staging = output_dir / "dataset.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        datasets.concatenate_datasets(parts).save_to_disk(str(staging))
        staging.rename(output_dir / "dataset")

    rejects = [line for shard in shards for line in (shard / "rejects.jsonl").read_text().splitlines()]
    (output_dir / "rejects.jsonl").write_text("".join(line + "\n" for line in rejects))
    reasons = Counter(json.loads(line)["reason"] for line in rejects)
    summary = {
        "source": config.dataset,
        "split": config.split,
        "source_rows": num_rows,
        "kept": sum(len(part) for part in parts),
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "settings": dataclasses.asdict(config),
        "vzero_trl_version": version("vzero_trl"),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    build_dataset_card(summary, config.hub_dataset_id or output_dir.name).save(output_dir / "README.md")
    return summary


# Settings that change the rows: a resumed run must use the same ones, or its shards would mix two datasets.
_ROW_SETTINGS = [
    f.name
    for f in dataclasses.fields(PrepareConfig)
    if f.name not in ("output_dir", "num_proc", "push_to_hub", "hub_dataset_id", "hub_private", "license")
]


def _check_settings_unchanged(output_dir: Path, config: PrepareConfig) -> None:
    settings = {name: getattr(config, name) for name in _ROW_SETTINGS}
    path = output_dir / "settings.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = {
            name: (previous.get(name), value) for name, value in settings.items() if previous.get(name) != value
        }
        if changed:
            raise ValueError(
                f"{output_dir} holds shards made with other settings ({changed}, as (before, now)); resuming would mix "
                "two datasets. Use a new `output_dir`, or delete this one to start over."
            )
    else:
        path.write_text(json.dumps(settings, indent=2) + "\n")


def publish(config: PrepareConfig, summary: dict[str, Any]) -> None:
    """
    Push the assembled dataset to `config.hub_dataset_id`, then its card (keeping the metadata `push_to_hub` wrote),
    `rejects.jsonl` and `summary.json`.
    """
    from huggingface_hub import DatasetCard, HfApi

    output_dir, repo_id = Path(config.output_dir), config.hub_dataset_id
    if summary["kept"] == 0:
        raise ValueError(f"Nothing to push to {repo_id}: every row was rejected, see {output_dir / 'rejects.jsonl'}.")
    datasets.load_from_disk(str(output_dir / "dataset")).push_to_hub(repo_id, private=config.hub_private)
    card = build_dataset_card(summary, repo_id, existing=DatasetCard.load(repo_id, repo_type="dataset"))
    card.save(output_dir / "README.md")
    api = HfApi()
    for name in ("README.md", "rejects.jsonl", "summary.json"):
        api.upload_file(
            path_or_fileobj=output_dir / name,
            path_in_repo=name,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"Add {name} (vzero_trl data preparation)",
        )
