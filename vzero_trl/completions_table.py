"""The completions table of a generation batch: each rollout beside the evidence the teacher was shown and its gate.

With `log_completions=True`, `VZeroTrainer.log` writes it in place of TRL's table (which has no gates): printed with
rich (text columns), saved to `output_dir/completions/completions_<step>.parquet`, and logged to wandb / trackio with
the crops as image columns. Mirrors the completions part of `trl.DistillationTrainer.log` (TRL 1.16), with the extra
columns: the rollout's `group` (its prompt within the step's generation batch), `gate`, `evidence_score`, and the
positive and negative crop (`crop`, `negative_crop`). In the parquet file the crops are PNG bytes (thumbnails of at most
`THUMBNAIL` pixels a side), so the file reads with pandas alone: `PIL.Image.open(io.BytesIO(table["crop"][0]))`.
"""

import io
import math
import os
from collections import deque

import torch
from PIL import Image
from transformers import is_trackio_available, is_wandb_available
from transformers.utils import is_rich_available
from trl.trainer.utils import print_prompt_completions_sample


# The table's columns besides `step`, in order; `VZeroTrainer` keeps one deque of each.
COLUMNS = ("prompt", "completion", "group", "gate", "evidence_score", "crop", "negative_crop")
IMAGE_COLUMNS = ("crop", "negative_crop")
# Longest side of a logged crop, in pixels: enough to see what the teacher was shown, small beside a run's logs.
THUMBNAIL = 256


def add_columns(logs: dict[str, deque]) -> None:
    """Give the trainer's completion logs (TRL's `_logs`, which hold `prompt` and `completion`) the table's other
    columns, as deques of the same length."""
    for key in COLUMNS[2:]:
        logs[key] = deque(maxlen=logs["prompt"].maxlen)


def extend_columns(
    logs: dict[str, deque],
    gates: torch.Tensor,
    scores: torch.Tensor | None,
    groups: torch.Tensor,
    crops: list[tuple[bytes | None, bytes | None]],
) -> None:
    """
    Append one generation batch's rollouts to the columns of [`add_columns`], in the order of the base class's prompts
    and completions: gates `(N,)`, evidence scores `(N,)` (`None` without a negative view: `nan`), groups `(N,)`, and
    each rollout's positive and negative crop as [`thumbnail_png`] bytes, all gathered from every process.
    """
    logs["gate"].extend(gates.tolist())
    logs["evidence_score"].extend(scores.tolist() if scores is not None else [math.nan] * len(gates))
    logs["group"].extend(groups.tolist())
    for key, images in zip(IMAGE_COLUMNS, zip(*crops, strict=True), strict=True):
        logs[key].extend(images)


def thumbnail_png(image: Image.Image | None) -> bytes | None:
    """The image as PNG bytes, shrunk to at most `THUMBNAIL` pixels a side (aspect kept); `None` stays `None`."""
    if image is None:
        return None
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def log_completions_table(
    columns: dict[str, list],
    step: int,
    output_dir: str,
    num_to_print: int | None,
    unique_prompts: bool,
    report_to: list[str],
) -> None:
    """
    Print, save and log the completions table.

    Args:
        columns (`dict[str, list]`):
            The `COLUMNS`, one entry per rollout, aligned; the crops as PNG bytes ([`thumbnail_png`]) or `None`.
        step (`int`):
            The global step, a column of its own and part of the file name.
        output_dir (`str`):
            The run's output folder; the table goes to its `completions/` folder.
        num_to_print (`int`, *optional*):
            How many rows to print (all when `None`).
        unique_prompts (`bool`):
            Log each prompt once to wandb / trackio (the parquet file keeps every rollout).
        report_to (`list[str]`):
            The run's reporting integrations.
    """
    import pandas as pd

    table = pd.DataFrame({"step": [step] * len(columns["prompt"]), **columns})
    if is_rich_available():
        print_prompt_completions_sample(
            table["prompt"].tolist(),
            table["completion"].tolist(),
            rewards={"gate": table["gate"].tolist(), "evidence_score": table["evidence_score"].tolist()},
            advantages=None,
            step=step,
            num_samples=num_to_print,
        )
    os.makedirs(os.path.join(output_dir, "completions"), exist_ok=True)
    table.to_parquet(os.path.join(output_dir, "completions", f"completions_{step:05d}.parquet"))
    if unique_prompts:
        table = table.drop_duplicates(subset=["prompt"])
    if "wandb" in report_to and is_wandb_available():
        import wandb

        if wandb.run is not None:
            media = _with_images(table, wandb.Image)  # row lists: wandb keeps image cells only when given as data
            wandb.log({"completions": wandb.Table(columns=list(media.columns), data=media.values.tolist())})
    if "trackio" in report_to and is_trackio_available():
        import trackio

        trackio.log({"completions": trackio.Table(dataframe=_with_images(table, trackio.Image))})


def _with_images(table, image_class):
    # The PNG bytes of the image columns as the tracker's image objects (None where a row has no crop).
    table = table.copy()
    for column in IMAGE_COLUMNS:
        table[column] = [None if png is None else image_class(Image.open(io.BytesIO(png))) for png in table[column]]
    return table
