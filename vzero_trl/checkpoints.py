"""Checkpoints: a checkpoint counts only once every file it needs is on disk, and a resume applies the new rate.

`transformers` writes a checkpoint's files one after another, and V-Zero adds its own (the EMA teacher), so a kill in
between leaves a folder that looks complete by any single file. The trainer therefore writes `vzero_checkpoint.json`
last ([`write_marker`]), listing every file of the folder with its size, after every process has finished writing;
V-Zero's own files are written to a temporary name and renamed ([`atomic_save`]). [`last_complete_checkpoint`]
resumes only from a folder whose marker is there and whose files all match it, and logs each newer folder it skips.

A resumed optimizer and scheduler come back with the learning rate they were saved with; [`set_learning_rate`] puts
the run's own rate on them, so that a changed `learning_rate` takes effect from the resumed step on.

[`MarkedCheckpoints`] is the trainer side of both: a mixin whose hooks save and resume this way.
"""

import json
import os
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
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


class MarkedCheckpoints:
    """
    Mixin for a `transformers.Trainer` subclass (placed before it): every checkpoint it saves gets its marker, and a
    resume puts the run's `learning_rate` on the restored optimizer and scheduler. Overrides `_save_checkpoint`,
    `_push_from_checkpoint` and `_load_optimizer_and_scheduler` (transformers 5.25); a subclass writes files of its
    own into each checkpoint with [`_save_own_state`], called on the process that saves, before the base class's files.
    """

    def _save_own_state(self, folder: str) -> None:
        """Write the subclass's own files into the checkpoint `folder` (nothing here)."""

    def _save_checkpoint(self, model, trial):
        # The subclass's own state first, then the base class's files, then, once every process has written its part,
        # the marker (before a push, so that the pushed copy is complete too). Older checkpoints are rotated out only
        # after that (the base class would rotate before it), so a kill while saving leaves a complete checkpoint.
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")  # the base class's name
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            remove_marker(folder)
            self._save_own_state(folder)
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        self._mark_complete(folder)
        if self.args.should_save:
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint, use_mtime=True)

    def _push_from_checkpoint(self, checkpoint_folder):
        # Called by the base `_save_checkpoint` on every process once all files are written (transformers 5).
        self._mark_complete(checkpoint_folder)
        super()._push_from_checkpoint(checkpoint_folder)

    def _mark_complete(self, folder: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_marker(folder, self.state.global_step)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # The schedule's base rate, which the restored optimizer state brought back from the checkpoint.
        if checkpoint is None or self.optimizer.param_groups[0].get("initial_lr") in (None, self.args.learning_rate):
            return
        restored = set_learning_rate(self.optimizer, self.lr_scheduler, self.args.learning_rate)
        logger.warning(
            f"Resuming {checkpoint} with learning_rate {self.args.learning_rate} instead of the {restored} it was "
            f"saved with: the restored optimizer and scheduler now use it (current rate "
            f"{self.lr_scheduler.get_last_lr()[0]:.6g} at optimizer step {self.lr_scheduler.last_epoch})."
        )
