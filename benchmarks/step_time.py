"""Benchmark (a): one V-Zero optimizer step vs one plain on-policy distillation step, same data, same group size.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py --output benchmarks/results/step_time.json

Every trainer runs the same tiny student and teacher on the same synthetic prompts, each repeated G times in a row,
with the same batch (2 prompts x G rollouts), completion length and seed; the time is TRL's `step_time` (generation,
teacher scoring, forward and backward of one optimizer step), the median over the steps after the first. Trainers:

- `vzero`: V-Zero with the defaults: gate on, shared-prefix teacher scoring and student forward;
- `vzero_naive`: the same with `teacher_scoring="per_sequence"` and `student_scoring="per_sequence"` (every sequence
  alone);
- `opd_crop`: V-Zero with the gate off (`evidence_alpha=0`): plain on-policy distillation from the crop view, the
  paper's Table 2 "None" row, with the same defaults;
- `trl_distillation`: TRL's `DistillationTrainer` (reverse KL over the full vocabulary, teacher on the student's own
  prompt), the upstream plain on-policy distillation, every sequence alone.
"""

import argparse
import json
import statistics
from pathlib import Path

import datasets
import torch
from trl import DistillationConfig, DistillationTrainer

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.toy.synthetic import make_example
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


def dataset(num_prompts: int, num_generations: int, image_side: int) -> datasets.Dataset:
    rows = [make_example(i, seed=0, canvas_size=(image_side, image_side)) for i in range(num_prompts)]
    # Each prompt G times in a row, so that TRL's trainer (one rollout per row) sees the same rollouts per prompt.
    return datasets.Dataset.from_list([row for row in rows for _ in range(num_generations)])


# The V-Zero variants by name, as config overrides; `trl_distillation` is TRL's own trainer.
VZERO_VARIANTS = {
    "vzero": {},
    "vzero_naive": {"teacher_scoring": "per_sequence", "student_scoring": "per_sequence"},
    "opd_crop": {"evidence_alpha": 0.0},
}


def build_trainer(name: str, model, teacher_model, common: dict, num_generations: int, **kwargs):
    """
    The trainer called `name` (a key of `VZERO_VARIANTS`, or `trl_distillation`) with the training arguments `common`
    that every trainer shares; `kwargs` go to the trainer (`train_dataset`, `processing_class`).
    """
    if name == "trl_distillation":
        args = DistillationConfig(**common)
        return DistillationTrainer(model=model, teacher_model=teacher_model, args=args, **kwargs)
    args = VZeroConfig(num_generations=num_generations, **common, **VZERO_VARIANTS[name])
    return VZeroTrainer(model=model, teacher_model=teacher_model, args=args, **kwargs)


def run(name: str, models: tuple[Path, Path], data: datasets.Dataset, settings: dict, output_dir: Path) -> list[float]:
    common = dict(
        output_dir=str(output_dir / name),
        per_device_train_batch_size=settings["batch"],
        max_completion_length=settings["completion_length"],
        max_steps=settings["steps"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        seed=0,
        shuffle_dataset=False,
        learning_rate=1e-5,
        disable_tqdm=True,
    )
    trainer = build_trainer(
        name, str(models[0]), str(models[1]), common, settings["num_generations"], train_dataset=data
    )
    size = {"shortest_edge": 32 * 32, "longest_edge": settings["image_side"] ** 2}
    trainer.processing_class.image_processor.size = size
    trainer.train()
    return [entry["step_time"] for entry in trainer.state.log_history if "step_time" in entry]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/step_time.json"))
    parser.add_argument("--models_dir", type=Path, default=Path("outputs/bench_models"))
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--completion_length", type=int, default=32)
    parser.add_argument("--image_side", type=int, default=512, help="Full-image side in px (~(side/32)^2 tokens).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = (
        ensure_tiny_vlm(args.models_dir / "student", **TINY_STUDENT),
        ensure_tiny_vlm(args.models_dir / "teacher-tiny", **TINY_TEACHER),
    )
    settings = {
        "num_generations": args.num_generations,
        "batch": 2 * args.num_generations,
        "completion_length": args.completion_length,
        "steps": args.steps,
        "image_side": args.image_side,
    }
    data = dataset(2 * args.steps, args.num_generations, args.image_side)
    times = {}
    for name in ("vzero", "vzero_naive", "opd_crop", "trl_distillation"):
        steps = run(name, models, data, settings, args.models_dir / "runs")
        times[name] = round(statistics.median(steps[1:]), 4)  # the first step warms up
        print(json.dumps({"trainer": name, "median_step_s": times[name], "steps_s": [round(t, 3) for t in steps]}))
    summary = {
        **settings,
        "median_step_s": times,
        "vzero_over_opd_crop": round(times["vzero"] / times["opd_crop"], 3),
        "vzero_over_trl_distillation": round(times["vzero"] / times["trl_distillation"], 3),
        "vzero_naive_over_trl_distillation": round(times["vzero_naive"] / times["trl_distillation"], 3),
    }
    print(json.dumps(summary))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
