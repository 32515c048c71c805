"""What produced a result: fingerprints of local checkpoints and data, Hub commits, the machine, and the settings that
differ.

An output folder that is written over several runs (evaluation predictions, training checkpoints) records the settings
of the run that started it. A later run into the same folder compares its own settings with that record
([`setting_differences`]) and goes on only when nothing that changes the results differs; otherwise it is refused with
the differing settings named. This module computes the parts of such a record that are not plain flags.
"""

import hashlib
import os
import platform
import re
from pathlib import Path

import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError


# Files of a model or checkpoint folder that do not change what the model computes: training state, records, the card.
NOT_MODEL_FILES = (
    "README.md", "optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "vzero_run.json"
)  # fmt: skip


def fingerprint(path: str | Path, skip: tuple[str, ...] = (), recursive: bool = True) -> str:
    """
    `"sha256:<hex>"` of a file's bytes, or of a folder's files (their relative paths and bytes, in sorted order; names
    in `skip` and `rng_state*` files left out; with `recursive=False` only the files at the top of the folder, so a
    model folder's checkpoints and logs do not count).
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    else:
        found = path.rglob("*") if recursive else path.iterdir()
        files = sorted(p for p in found if p.is_file() and p.name not in skip and not p.name.startswith("rng_state"))
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"sha256:{digest.hexdigest()}"


def hub_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str:
    """
    The commit a Hub repository's `revision` (default branch when `None`) points to: asked of the Hub, or read from the
    local cache when offline. Raises `ValueError` when the repository or revision does not exist or cannot be
    resolved.
    """
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ValueError(
            f"{repo_type.capitalize()} {repo_id!r} (revision {revision or 'default branch'}) is not on the Hub: "
            f"{error}. Check the id, or pass a local folder."
        ) from error
    except Exception:  # offline, or the Hub unreachable: the commit the local cache holds for that revision
        ref = (
            Path(constants.HF_HUB_CACHE)
            / f"{repo_type}s--{repo_id.replace('/', '--')}"
            / "refs"
            / (revision or "main")
        )
        if ref.is_file():
            return ref.read_text().strip()
        raise ValueError(
            f"{repo_type.capitalize()} {repo_id!r} (revision {revision or 'default branch'}) cannot be resolved: the Hub "
            "is not reachable and it is not in the local cache. Go online once, pass a commit as revision, or pass a "
            "local folder."
        ) from None


def setting_differences(recorded: dict, requested: dict) -> list[str]:
    """
    One line `name: recorded -> requested` per setting whose values differ, for every name in either dict (a name
    missing from one side shows as `<unset>`), in sorted order.
    """
    lines = []
    for name in sorted(recorded.keys() | requested.keys()):
        before, after = recorded.get(name, _UNSET), requested.get(name, _UNSET)
        if before != after:
            lines.append(f"{name}: {_show(before)} -> {_show(after)}")
    return lines


_UNSET = object()


def _show(value: object) -> str:
    return "<unset>" if value is _UNSET else repr(value)


def machine() -> dict:
    """The CPU, core count, Python and torch versions that a result was measured with."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
