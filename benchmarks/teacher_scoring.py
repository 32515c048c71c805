"""Benchmark (b): shared-prefix vs naive teacher scoring of both views, as a function of P, C and G.

    OMP_NUM_THREADS=1 python benchmarks/teacher_scoring.py --output benchmarks/results/teacher_scoring.json

For each setting it times `vzero_trl.replay.replay_teacher` (what training runs) with `strategy="shared_prefix"` and
`"per_sequence"` (reported as "naive"), interleaved, best of `--repeats` after a warm-up; counts the tokens each path
runs through the teacher (from the sequence lengths) and the full-image encodings per prompt (a hook on the vision
tower); and checks that both give the same log-probabilities. P is the teacher prompt's length (set through the image
size: one token per 32x32 pixels), C the completion length, G the rollouts per prompt.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.gating import group_slices, rollout_groups
from vzero_trl.replay import replay_teacher, teacher_views, tokenize
from vzero_trl.toy.synthetic import make_example
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


MODELS = {
    # the embedded teacher (hidden 96, 2 layers), and a wider, deeper random one (hidden 512, 8 layers: 4 Gated-DeltaNet
    # + 4 full attention)
    "tiny": {**TINY_TEACHER},
    "larger": {"seed": 1, "hidden_size": 512, "num_hidden_layers": 8},
}


def trainer_for(models_dir: Path, teacher: str, image_side: int) -> VZeroTrainer:
    student = ensure_tiny_vlm(models_dir / "student", **TINY_STUDENT)
    teacher_dir = ensure_tiny_vlm(models_dir / f"teacher-{teacher}", **MODELS[teacher])
    args = VZeroConfig(
        output_dir=str(models_dir / "out"),
        num_generations=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
    )
    trainer = VZeroTrainer(model=str(student), teacher_model=str(teacher_dir), args=args)
    trainer.processing_class.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": image_side**2}
    return trainer


def measure(
    trainer: VZeroTrainer, image_side: int, completion_length: int, num_generations: int, repeats: int
) -> dict:
    example = make_example(0, seed=0, canvas_size=(image_side, image_side))
    rows = [example] * num_generations
    groups = group_slices(rollout_groups(num_generations, num_generations))
    generator = torch.Generator().manual_seed(0)
    vocab = trainer.processing_class.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ordinary tokens lie below it
    completion_ids = torch.randint(0, vocab, (num_generations, completion_length), generator=generator)
    device = trainer.accelerator.device
    completion_ids = completion_ids.to(device)
    completion_mask = torch.ones_like(completion_ids)
    columns = ["crop", "negative_crop"]
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    replay = dict(
        crop_prefix=trainer.args.teacher_crop_prefix,
        crop_suffix=trainer.args.teacher_crop_suffix,
        chat_template_kwargs=trainer.chat_template_kwargs,
        rows_per_forward=trainer.args.per_device_train_batch_size,
    )
    messages = teacher_views(rows, groups, columns, replay["crop_prefix"], replay["crop_suffix"])
    views = [tokenize(trainer.processing_class, view, trainer.chat_template_kwargs, device) for view in messages]
    lengths = [view["input_ids"].size(1) for view in views]
    image_runs = (views[0]["input_ids"][0] == teacher.config.image_token_id).nonzero().flatten().tolist()
    full_image_tokens = int(views[0]["image_grid_thw"][0].prod()) // 4
    prefix = image_runs[full_image_tokens]  # the first token of the crop image
    encodings = []
    hook = teacher.base_model.visual.register_forward_hook(
        lambda module, inputs, kwargs, output: encodings.append(kwargs["grid_thw"]), with_kwargs=True
    )
    times, logps = {"shared_prefix": [], "naive": []}, {}
    full_grid = views[0]["image_grid_thw"][0].tolist()
    counts = {}
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    for _ in range(repeats + 1):
        for mode, strategy in (("shared_prefix", "shared_prefix"), ("naive", "per_sequence")):
            encodings.clear()
            start = time.perf_counter()
            scored = replay_teacher(
                teacher,
                trainer.processing_class,
                rows,
                groups,
                completion_ids,
                completion_mask,
                columns,
                strategy=strategy,
                **replay,
            )
            synchronize()
            times[mode].append(time.perf_counter() - start)
            logps[mode] = torch.stack([s[0] for s in scored])
            counts[mode] = sum(grid.tolist() == full_grid for grid in torch.cat(encodings))
    hook.remove()
    naive_tokens = sum(num_generations * (length + completion_length) for length in lengths)
    shared_tokens = prefix + sum(length - prefix for length in lengths) + 2 * num_generations * (completion_length - 1)
    best = {mode: min(values[1:]) for mode, values in times.items()}  # the first round warms up
    return {
        "P": max(lengths),
        "C": completion_length,
        "G": num_generations,
        "P_over_C": round(max(lengths) / completion_length, 1),
        "naive_s": round(best["naive"], 4),
        "shared_s": round(best["shared_prefix"], 4),
        "speedup": round(best["naive"] / best["shared_prefix"], 2),
        "naive_tokens": naive_tokens,
        "shared_tokens": shared_tokens,
        "token_ratio": round(naive_tokens / shared_tokens, 2),
        "full_image_encodings_naive": counts["naive"],
        "full_image_encodings_shared": counts["shared_prefix"],
        "max_abs_logp_diff": float((logps["naive"] - logps["shared_prefix"]).abs().max()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/teacher_scoring.json"))
    parser.add_argument("--models_dir", type=Path, default=Path("outputs/bench_models"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="One small setting per model (a smoke run).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # (model, image side in px, C, G): image side 544 gives ~290 image tokens, 1024 gives ~1,024
    settings = [
        ("tiny", 544, 16, 4),
        ("tiny", 544, 16, 8),
        ("tiny", 544, 64, 8),
        ("tiny", 1024, 32, 8),
        ("tiny", 1024, 128, 8),
        ("larger", 544, 32, 8),
        ("larger", 1024, 128, 8),
    ]
    if args.quick:
        settings = [("tiny", 544, 16, 4), ("larger", 544, 32, 4)]
    results = []
    for model, side, completion_length, num_generations in settings:
        trainer = trainer_for(args.models_dir, model, side)
        result = {"model": model, **measure(trainer, side, completion_length, num_generations, args.repeats)}
        print(json.dumps(result), flush=True)
        results.append(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
