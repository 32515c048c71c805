"""Two-process training run that records, per process and per generation batch, the rollouts and their evidence gates.

With `num_generations=4` and `per_device_train_batch_size=2` on 2 processes, each prompt's group of 4 rollouts is split
over both processes (rows 0-1 on rank 0, rows 2-3 on rank 1), so the gates are only right if the scores are gathered
before the group is standardised. `tests/test_distributed.py` launches this script and recomputes the gates of the
recorded rollouts in one process. Launch it on CPU (2 processes, gloo) as that test does:

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        --main_process_port 0 tests/distributed_gates.py --models DIR --data DIR --out DIR

Each process writes `OUT/rank{r}_call{k}.pt` for its `k`-th `_generate_and_score_completions` call, and
`OUT/rank{r}_done.pt` once `trainer.train()` has returned.
"""

import argparse
from pathlib import Path

import torch
from datasets import load_from_disk

from vzero_trl import VZeroConfig, VZeroTrainer


MAX_STEPS = 2


def training_args(output_dir: str | Path, **overrides) -> VZeroConfig:
    """The run's settings, shared with the single-process recomputation in `tests/test_distributed.py`."""
    settings = dict(
        output_dir=str(output_dir),
        num_generations=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_completion_length=8,
        max_steps=MAX_STEPS,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        use_cpu=True,  # with the torchrun variables set, accelerate then picks MULTI_CPU with the gloo backend
        gradient_checkpointing=False,
        seed=0,
    )
    settings.update(overrides)
    return VZeroConfig(**settings)


class RecordingVZeroTrainer(VZeroTrainer):
    """`VZeroTrainer` that saves what this process produced in every `_generate_and_score_completions` call."""

    def __init__(self, *args, record_dir: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir
        self.num_calls = 0

    def _generate_and_score_completions(self, inputs):
        ids = [row["id"] for row in inputs]
        output = super()._generate_and_score_completions(inputs)
        rank = self.accelerator.process_index
        record = {
            "process_index": rank,
            "num_processes": self.accelerator.num_processes,
            "ids": ids,
            "completion_ids": output["completion_ids"].cpu(),  # (B, C), right padded
            "completion_mask": output["completion_mask"].cpu(),  # (B, C)
            "evidence_weights": output["evidence_weights"].cpu(),  # (B,)
        }
        torch.save(record, self.record_dir / f"rank{rank}_call{self.num_calls}.pt")
        self.num_calls += 1
        return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="Parent folder of the tiny `student/`, `teacher/`.")
    parser.add_argument("--data", type=Path, required=True, help="A dataset saved with `Dataset.save_to_disk`.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the records.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    trainer = RecordingVZeroTrainer(
        model=str(args.models / "student"),
        teacher_model=str(args.models / "teacher"),
        args=training_args(args.out / "trainer"),
        train_dataset=load_from_disk(str(args.data)),
        record_dir=args.out,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save({"global_step": trainer.state.global_step}, args.out / f"rank{rank}_done.pt")


if __name__ == "__main__":
    main()
