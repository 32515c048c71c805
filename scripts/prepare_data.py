"""Build a V-Zero training set (full image, question, positive crop, negative crop) from grounded-VQA data.

The paper's set, from ZwZ (download the parquet and both image archives, extract them, then):

    python scripts/prepare_data.py --source_format zwz --dataset zwz/train.parquet --image_dir zwz \
        --clean_image_dir zwz/original_images --output_dir data/vzero-zwz --num_proc 16 --license apache-2.0 \
        --processor Qwen/Qwen3.5-4B --max_student_tokens 25000 --max_teacher_tokens 30000

Any dataset with an image, a question and a box:

    python scripts/prepare_data.py --dataset my/grounded-vqa --bbox_format xywh --output_dir data/mine \
        --push_to_hub --hub_dataset_id me/mine-vzero

A rerun with the same settings resumes where an interrupted run stopped. `--limit 100` makes a quick trial. Bad rows
are never fatal: they are listed in `output_dir/rejects.jsonl` and counted in the card. The command fails (exit status
1) only when no row at all was kept. Every flag is a field of `vzero_trl.prepare.convert.PrepareConfig`; `--config settings.yaml`
reads them from a file.
"""

import sys

from trl import TrlParser

from vzero_trl.prepare.convert import PrepareConfig
from vzero_trl.prepare.pipeline import prepare, publish


def main(config: PrepareConfig) -> dict:
    summary = prepare(config)
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["rejected_by_reason"].items()) or "none"
    if summary["kept"] == 0:
        sys.exit(
            f"Every one of the {summary['source_rows']} rows was rejected ({reasons}), so no dataset was written. "
            f"{config.output_dir}/rejects.jsonl gives each row's reason; fix the source or the flags and run again."
        )
    print(
        f"Kept {summary['kept']} of {summary['source_rows']} rows in {config.output_dir}/dataset; rejected "
        f"{summary['rejected']} ({reasons})."
    )
    if config.push_to_hub:
        publish(config, summary)
        print(f"Pushed to https://huggingface.co/datasets/{config.hub_dataset_id}")
    return summary


if __name__ == "__main__":
    (config,) = TrlParser((PrepareConfig,)).parse_args_and_config()
    main(config)
