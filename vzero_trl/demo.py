"""A short V-Zero run on the embedded defaults: tiny random Qwen3.5 models and the synthetic dataset, on CPU.

    python -m vzero_trl.demo --output_dir outputs/demo

It builds what is missing under `output_dir` (`models/student`, `models/teacher`, `data/`), trains with `G = 4`
rollouts per prompt while logging the `evidence/*` metrics, checkpoints every 10 steps (a rerun resumes from the last
checkpoint), and saves the final model, processor and model card to `output_dir/final`. The weights are random, so the
run shows the machinery working, not a model learning to see.
"""

import argparse
from pathlib import Path

import datasets
from transformers.trainer_utils import get_last_checkpoint

from .config import VZeroConfig
from .synthetic import make_dataset
from .tiny import build_tiny_pair
from .trainer import VZeroTrainer


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Train V-Zero on tiny local models and synthetic data (CPU).")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--num_examples", type=int, default=128, help="Synthetic prompts to generate.")
    args = parser.parse_args(argv)

    student, teacher = build_tiny_pair(args.output_dir / "models")
    data_dir = args.output_dir / "data"
    if not (data_dir / "dataset_info.json").is_file():
        make_dataset(args.num_examples, seed=0).save_to_disk(data_dir)
    dataset = datasets.load_from_disk(data_dir)

    config = VZeroConfig(
        output_dir=str(args.output_dir / "run"),
        num_generations=4,
        per_device_train_batch_size=8,  # rollouts: 2 prompts x 4
        max_completion_length=24,
        max_steps=args.max_steps,
        learning_rate=5e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=10,
        save_total_limit=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = VZeroTrainer(model=str(student), teacher_model=str(teacher), args=config, train_dataset=dataset)
    trainer.train(resume_from_checkpoint=get_last_checkpoint(config.output_dir))

    final_dir = args.output_dir / "final"
    trainer.save_model(str(final_dir))
    trainer.processing_class.save_pretrained(str(final_dir))
    trainer.create_model_card(model_name="vzero-tiny-demo", dataset_name="vzero_trl.synthetic")
    (final_dir / "README.md").write_text((Path(config.output_dir) / "README.md").read_text())
    trainer.accelerator.print(f"Saved the trained student, its processor and model card to {final_dir}")
    return final_dir


if __name__ == "__main__":
    main()
