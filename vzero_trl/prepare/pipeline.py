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
import glob
import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from ..card import build_dataset_card, public_settings
from ..schema import dataset_features
from .convert import PrepareConfig, RejectedRow, convert_row, row_id


LOCAL_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def local_splits(name: str) -> list[str] | None:
    """
    The splits of a local dataset: those of a folder saved from a `DatasetDict`, or `[]` for a source without splits (a
    parquet/json/jsonl/csv file or glob, or a folder saved from one `Dataset`), which [`open_dataset`] reads as its
    `"train"` split. `None` for a Hub id, whose split names `datasets` checks itself.
    """
    path = Path(name)
    if path.is_dir():
        listing = path / "dataset_dict.json"
        return json.loads(listing.read_text())["splits"] if listing.is_file() else []
    return [] if path.suffix in LOCAL_BUILDERS else None


def open_dataset(
    name: str, config_name: str | None = None, split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """
    One split of a dataset named by a Hub id, a local parquet/json/jsonl/csv file (or glob), or a folder written by
    `save_to_disk`. A source without splits (see [`local_splits`]) is the `"train"` split: asking it for another split
    is an error, not the whole dataset under another name (an evaluation split that is the training data).
    """
    splits = local_splits(name)
    if splits == [] and split != "train":
        raise ValueError(
            f"{name} is one dataset without splits, read as the 'train' split; it has no {split!r} split. Save a "
            f"DatasetDict with a {split!r} split, or hold out rows of the training data."
        )
    if splits and split not in splits:
        raise ValueError(f"{name} has the splits {splits}, not {split!r}.")
    path = Path(name)
    if path.is_dir():
        dataset = datasets.load_from_disk(str(path))
        return dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    if path.suffix in LOCAL_BUILDERS:
        return datasets.load_dataset(LOCAL_BUILDERS[path.suffix], data_files=name, split="train", streaming=streaming)
    return datasets.load_dataset(name, config_name, split=split, streaming=streaming)


def load_source(config: PrepareConfig) -> tuple[datasets.Dataset, str]:
    """
    The source split and its fingerprint (which changes when the source does), with image columns left undecoded so
    that a bad image reaches the converter (and the rejects file) instead of failing inside `datasets`. A `.jsonl`
    source is read by [`read_json_lines`]; get its rows with [`source_row`].
    """
    if Path(config.dataset).suffix == ".jsonl":
        source, fingerprint = read_json_lines(config.dataset)
    else:
        source = open_dataset(config.dataset, config.dataset_config, config.split)
        fingerprint = source._fingerprint  # `datasets`' own: from the files' paths and times, or the Hub revision
        if config.id_column and config.id_column not in source.column_names:
            raise ValueError(
                f"`id_column` {config.id_column!r} is not a column of {config.dataset}; it has "
                f"{sorted(source.column_names)}. Name one of these, or leave `id_column` unset to use row positions."
            )
    if len(source) == 0:
        raise ValueError(f"{config.dataset} (split {config.split!r}) has no rows: there is nothing to prepare.")
    for name, feature in source.features.items():
        if isinstance(feature, datasets.Image):
            source = source.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List | datasets.Sequence) and isinstance(feature.feature, datasets.Image):
            source = source.cast_column(name, datasets.List(datasets.Image(decode=False)))
    if config.limit is not None:
        source = source.select(range(min(config.limit, len(source))))
    return source, fingerprint


def read_json_lines(pattern: str) -> tuple[datasets.Dataset, str]:
    """
    A JSON Lines source (a file or a glob of them, in name order) as one row per non-blank line, each holding its file,
    line number and raw bytes, and the SHA-256 of the files. Lines are parsed per row by [`source_row`], so a
    malformed line rejects that row alone, and rows of different shapes do not trip `datasets`' schema inference.
    """
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"No file matches `dataset` {pattern!r}.")
    digest, records = hashlib.sha256(), {"file": [], "line": [], "data": []}
    for path in paths:
        data = Path(path).read_bytes()
        digest.update(f"{path}\0{len(data)}\0".encode() + data)
        for number, line in enumerate(data.split(b"\n"), start=1):
            if line.strip():
                records["file"].append(path)
                records["line"].append(number)
                records["data"].append(line)
    features = datasets.Features(
        {"file": datasets.Value("string"), "line": datasets.Value("int64"), "data": datasets.Value("binary")}
    )
    return datasets.Dataset.from_dict(records, features=features), digest.hexdigest()


def source_row(source: datasets.Dataset, index: int, config: PrepareConfig) -> dict[str, Any]:
    """
    Row `index` of a source from [`load_source`]. For JSON Lines, the parsed line; raises [`RejectedRow`]
    (`malformed_line`, naming the file and line) when it is not valid UTF-8, not valid JSON, not an object, or holds a
    string that is not valid Unicode (a lone surrogate such as `"\\ud800"`, which Arrow cannot store).
    """
    row = source[index]
    if Path(config.dataset).suffix != ".jsonl":
        return row
    where = f"{row['file']} line {row['line']}"
    try:
        value = json.loads(row["data"].decode("utf-8"))
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as error:
        raise RejectedRow("malformed_line", f"{where} is not valid UTF-8 ({error})") from None
    except UnicodeEncodeError as error:
        raise RejectedRow("malformed_line", f"{where} holds a string that is not valid Unicode ({error})") from None
    except json.JSONDecodeError as error:
        raise RejectedRow("malformed_line", f"{where} is not valid JSON (cut short?): {error}") from None
    if not isinstance(value, dict):
        raise RejectedRow("malformed_line", f"{where} holds a JSON {type(value).__name__}, not an object (a row)")
    return value


def duplicate_ids(source: datasets.Dataset, config: PrepareConfig) -> dict[int, int]:
    """
    `{index: first index}` for every row whose id an earlier row already has. Ids must be unique: the trainer tells a
    prompt's rollouts apart from other prompts by `id`. Rows without a readable id have position ids and never clash.
    """
    if not config.id_column:
        return {}  # position ids are unique
    if Path(config.dataset).suffix == ".jsonl":
        values = []
        for index in range(len(source)):
            try:
                values.append(source_row(source, index, config).get(config.id_column))
            except RejectedRow:
                values.append(None)
    else:
        values = source[config.id_column]
    first, duplicates = {}, {}
    for index, value in enumerate(values):
        identifier = row_id({config.id_column: value}, index, config)
        if identifier in first:
            duplicates[index] = first[identifier]
        else:
            first[identifier] = index
    return duplicates


def convert_shard(
    source: datasets.Dataset, rows: range, config: PrepareConfig, duplicates: dict[int, int]
) -> tuple[list[dict], list[dict]]:
    """
    Convert a range of source rows; returns the V-Zero rows and one record per rejected row. `duplicates` maps rows
    whose id is taken to the first row with that id ([`duplicate_ids`]).
    """
    kept, rejects = [], []
    for index in rows:
        row = {}
        try:
            row = source_row(source, index, config)
            if index in duplicates:
                raise RejectedRow(
                    "duplicate_id",
                    f"id {row_id(row, index, config)!r} (column {config.id_column!r}) is already row "
                    f"{duplicates[index]}'s; ids must be unique. Fix the source, or leave `id_column` unset to use "
                    "row positions",
                )
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
    `summary.json`. Every source row ends up either kept or in `rejects.jsonl`.
    """
    source, fingerprint = load_source(config)  # before anything is written: a mistyped `dataset` leaves no trace
    output_dir = Path(config.output_dir)
    shards_dir = output_dir / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    for stale in shards_dir.glob("*.tmp"):  # a shard that a killed run was writing
        shutil.rmtree(stale)
    _check_settings_unchanged(output_dir, config, fingerprint, len(source))

    duplicates = duplicate_ids(source, config)
    ranges = [
        range(start, min(start + config.shard_size, len(source))) for start in range(0, len(source), config.shard_size)
    ]
    pending = [k for k in range(len(ranges)) if not (shards_dir / f"{k:05d}").is_dir()]
    with tqdm(total=sum(len(ranges[k]) for k in pending), desc="Preparing rows", unit="row") as progress:
        if config.num_proc == 1:
            for k in pending:
                _write_shard(shards_dir / f"{k:05d}", *convert_shard(source, ranges[k], config, duplicates), config)
                progress.update(len(ranges[k]))
        else:
            with ProcessPoolExecutor(max_workers=config.num_proc, initializer=_exit_with_parent) as pool:
                futures = {
                    pool.submit(_convert_and_write, source, ranges[k], config, duplicates, shards_dir / f"{k:05d}"): k
                    for k in pending
                }
                for future in as_completed(futures):
                    future.result()
                    progress.update(len(ranges[futures[future]]))
    return _assemble(output_dir, len(ranges), len(source), config)


def _exit_with_parent() -> None:
    # A worker blocks on its task queue forever once the main process is killed (SIGKILL and SIGTERM skip the pool's
    # shutdown), so each worker watches for its parent to go and exits then.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _convert_and_write(
    source: datasets.Dataset, rows: range, config: PrepareConfig, duplicates: dict[int, int], directory: Path
) -> None:
    _write_shard(directory, *convert_shard(source, rows, config, duplicates), config)


def _write_shard(directory: Path, kept: list[dict], rejects: list[dict], config: PrepareConfig) -> None:
    # Written beside its final place and renamed in one step, so a shard folder is either complete or absent.
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if kept:  # a shard whose rows were all rejected has no data folder (`datasets` cannot reload an empty one)
        features = dataset_features(config.random_crop)
        datasets.Dataset.from_list(kept, features=features).save_to_disk(str(staging / "data"))
    with open(staging / "rejects.jsonl", "w") as file:
        file.writelines(json.dumps(record) + "\n" for record in rejects)
    staging.rename(directory)


def _assemble(output_dir: Path, num_shards: int, num_rows: int, config: PrepareConfig) -> dict[str, Any]:
    shards = [output_dir / "shards" / f"{k:05d}" for k in range(num_shards)]
    parts = [datasets.load_from_disk(str(shard / "data")) for shard in shards if (shard / "data").is_dir()]
    rejects = [line for shard in shards for line in (shard / "rejects.jsonl").read_text().splitlines()]
    kept = sum(len(part) for part in parts)
    if kept + len(rejects) != num_rows:  # never publish a dataset that silently lost rows
        raise RuntimeError(
            f"The shards in {output_dir} account for {kept} kept and {len(rejects)} rejected rows, but the source has "
            f"{num_rows}. Delete {output_dir} and run again."
        )
    shutil.rmtree(output_dir / "dataset", ignore_errors=True)
    if parts:  # with every row rejected there is no dataset to write (`datasets` cannot reload an empty one)
        staging = output_dir / "dataset.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        datasets.concatenate_datasets(parts).save_to_disk(str(staging))
        staging.rename(output_dir / "dataset")

    (output_dir / "rejects.jsonl").write_text("".join(line + "\n" for line in rejects))
    reasons = Counter(json.loads(line)["reason"] for line in rejects)
    summary = {
        "source": config.dataset,
        "split": config.split,
        "source_rows": num_rows,
        "kept": kept,
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "settings": dataclasses.asdict(config),
        "vzero_trl_version": version("vzero_trl"),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    build_dataset_card(summary).save(output_dir / "README.md")  # the local folder's card; `publish` writes the Hub's
    return summary


# Settings that change the rows: a resumed run must use the same ones, or its shards would mix two datasets.
_ROW_SETTINGS = [
    f.name
    for f in dataclasses.fields(PrepareConfig)
    if f.name not in ("output_dir", "num_proc", "push_to_hub", "hub_dataset_id", "hub_private", "license")
]


def _check_settings_unchanged(output_dir: Path, config: PrepareConfig, fingerprint: str, num_rows: int) -> None:
    # Finished shards bind `output_dir` to the settings and the source they were made from. Before the first shard is
    # finished nothing is bound: a failed first run (a mistyped flag) leaves nothing that refuses the corrected one.
    settings = {name: getattr(config, name) for name in _ROW_SETTINGS}
    source = {"fingerprint": fingerprint, "rows": num_rows}
    path = output_dir / "settings.json"
    finished = [shard for shard in (output_dir / "shards").iterdir() if shard.is_dir()]
    if path.is_file() and finished:
        previous = json.loads(path.read_text())
        changed = {
            name: (previous.get(name), value) for name, value in settings.items() if previous.get(name) != value
        }
        if changed:
            raise ValueError(
                f"{output_dir} holds {len(finished)} finished shard(s) made with other settings ({changed}, as "
                "(before, now)); resuming would mix two datasets. Use a new `output_dir`, or delete this one to start "
                "over."
            )
        if previous.get("source") != source:
            before = previous.get("source") or {}
            raise ValueError(
                f"The source {config.dataset} changed since the shards in {output_dir} were made: {before.get('rows')} "
                f"rows then, {num_rows} now, fingerprint {before.get('fingerprint')} then, {fingerprint} now. The "
                "finished shards hold the old rows, so resuming would drop or mix rows. Use a new `output_dir`, or "
                "delete this one to prepare the source as it is now."
            )
    path.write_text(json.dumps({**settings, "source": source}, indent=2) + "\n")


def publish(config: PrepareConfig, summary: dict[str, Any]) -> None:
    """
    Push the assembled dataset to `config.hub_dataset_id`, then its card (keeping the metadata `push_to_hub` wrote),
    `rejects.jsonl` and `summary.json`, whose local paths are cut to their last component as in the card.
    """
    from huggingface_hub import DatasetCard, HfApi

    output_dir, repo_id = Path(config.output_dir), config.hub_dataset_id
    if summary["kept"] == 0:
        raise ValueError(f"Nothing to push to {repo_id}: every row was rejected, see {output_dir / 'rejects.jsonl'}.")
    datasets.load_from_disk(str(output_dir / "dataset")).push_to_hub(repo_id, private=config.hub_private)
    card = build_dataset_card(summary, repo_id, existing=DatasetCard.load(repo_id, repo_type="dataset"))
    card.save(output_dir / "README.md")
    settings = public_settings(summary["settings"])
    public_summary = {**summary, "source": settings["dataset"], "settings": settings}
    files = {
        "README.md": (output_dir / "README.md").read_bytes(),
        "rejects.jsonl": (output_dir / "rejects.jsonl").read_bytes(),
        "summary.json": (json.dumps(public_summary, indent=2) + "\n").encode(),
    }
    api = HfApi()
    for name, data in files.items():
        api.upload_file(
            path_or_fileobj=data,
            path_in_repo=name,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"Add {name} (vzero_trl data preparation)",
        )
