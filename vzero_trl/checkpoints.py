"""Checkpoints: a checkpoint counts only once every file it needs is on disk, and a resume applies the new rate.

`transformers` writes a checkpoint's files one after another, and V-Zero adds its own (the EMA teacher), so a kill in
between leaves a folder that looks complete by any single file. The trainer therefore writes `vzero_checkpoint.json`
last ([`write_marker`]), listing every file of the folder with its size, after every process has finished writing;
V-Zero's own files are written to a temporary name and renamed ([`atomic_save`]). [`last_complete_checkpoint`]
resumes only from a folder whose marker is there and whose files all match it, and logs each newer folder it skips.

A resumed optimizer and scheduler come back with the learning rate they were saved with; [`set_learning_rate`] puts
the run's own rate on them, so that a changed `learning_rate` takes effect from the resumed step on.
"""

import json
import os
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


logger = logging.get_logger(__name__)

MARKER = "vzero_checkpoint.json"


def atomic_save(obj: object, path: str) -> None:
    """`torch.save` to a temporary name, then rename: a kill leaves either the old file or the whole new one."""
    partial = f"{path}.partial"
    torch.save(obj, partial)
    os.replace(partial, path)


def write_marker(folder: str, step: int) -> None:
    """Record that the checkpoint in `folder` is complete: every file in it (recursively) with its size."""
    root = Path(folder)
    files = {
        str(path.relative_to(root)): path.stat().st_size
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != MARKER and not path.name.endswith(".partial")
    }
    partial = root / f"{MARKER}.partial"
    partial.write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n")
    os.replace(partial, root / MARKER)


def remove_marker(folder: str) -> None:
    """Forget that `folder` was complete, before it is written again."""
    (Path(folder) / MARKER).unlink(missing_ok=True)


def incomplete_reason(folder: str) -> str | None:
    """Why the checkpoint in `folder` cannot be resumed from, or `None` when it is complete."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return f"it has no {MARKER}, which is written last: it was cut off while being saved"
    files = json.loads(marker.read_text())["files"]
    missing = [name for name in files if not (Path(folder) / name).is_file()]
    if missing:
        return f"files listed in its {MARKER} are missing: {', '.join(missing)}"
    changed = [name for name, size in files.items() if (Path(folder) / name).stat().st_size != size]
    if changed:
        return f"files differ in size from its {MARKER}: {', '.join(changed)}"
    return None


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` that is complete; each newer, incomplete one is logged."""
    folders = Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    steps = sorted((int(f.name.split("-")[-1]), f) for f in folders if f.name.split("-")[-1].isdigit())
    for _, folder in reversed(steps):
        reason = incomplete_reason(str(folder))
        if reason is None:
            return str(folder)
        logger.warning(f"Not resuming from {folder}: {reason}. Delete it, or leave it to be overwritten.")
    return None


def set_learning_rate(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, learning_rate: float
) -> float:
    """
    Give a restored optimizer and `LambdaLR` scheduler the peak rate `learning_rate`, at the schedule's position: every
    group's base rate is rescaled so that the first group's is `learning_rate` (groups keep their ratios), and its
    current rate is the new base times the schedule's factor at the restored step. Returns the restored base rate.
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        raise ValueError(
            f"The restored {type(scheduler).__name__} learning-rate scheduler cannot be given a new `learning_rate` "
            f"({learning_rate}): keep the rate the run was started with, or start a new run."
        )
    restored = scheduler.base_lrs[0]
    scale = learning_rate / restored if restored else None
    scheduler.base_lrs = [base * scale if scale else learning_rate for base in scheduler.base_lrs]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return restored
