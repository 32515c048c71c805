"""The completions table of a generation batch: each rollout's prompt, completion, gate and evidence score.

With `log_completions=True`, `VZeroTrainer.log` writes it in place of TRL's table (which has no gates): printed with
rich, saved to `output_dir/completions/completions_<step>.parquet`, and logged to wandb / trackio. Mirrors the
completions part of `trl.DistillationTrainer.log` (TRL 1.16), with the two extra columns.
"""

import os

from transformers import is_trackio_available, is_wandb_available
from transformers.utils import is_rich_available
from trl.trainer.utils import print_prompt_completions_sample


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
            `prompt`, `completion`, `gate` and `evidence_score`, one entry per rollout, aligned.
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
            wandb.log({"completions": wandb.Table(dataframe=table)})
    if "trackio" in report_to and is_trackio_available():
        import trackio

        trackio.log({"completions": trackio.Table(dataframe=table)})
