"""Benchmark (b'): the student's training forward and backward, shared prefix vs naive, as a function of P, C and G.

    OMP_NUM_THREADS=1 python benchmarks/student_scoring.py --output benchmarks/results/student_scoring.json

For each setting it times the student's forward, the gated sampled-token loss and its backward (what one micro-batch of
training runs in `VZeroTrainer._compute_loss`) on `G` rollouts of one prompt, with the shared-prefix forward
(`vzero_trl.shared_prefix.student_hidden_grouped`) and per sequence (TRL's `_get_last_hidden_state`, reported as
"naive"), interleaved, best of `--repeats` after a warm-up; counts the full-image encodings (a hook on the vision
tower) and the tokens each path runs; and checks that both give the same loss and gradients. Each setting runs with
activation checkpointing off, and the largest ones again with it on (non-reentrant, as the trainer enables it), for
both paths alike.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.gating import group_slices, rollout_groups
from vzero_trl.losses import sampled_token_loss
from vzero_trl.replay import MULTIMODAL_KEYS
from vzero_trl.scoring import completion_logps
from vzero_trl.shared_prefix import student_hidden_grouped
from vzero_trl.toy.synthetic import make_example
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm
from vzero_trl.views import student_messages


MODELS = {
    # the embedded student (hidden 64, 2 layers), and a wider, deeper random one (hidden 512, 8 layers)
    "tiny": {**TINY_STUDENT},
    "larger": {"seed": 2, "hidden_size": 512, "num_hidden_layers": 8},
}


def trainer_for(models_dir: Path, student: str, image_side: int) -> VZeroTrainer:
    student_dir = ensure_tiny_vlm(models_dir / f"student-{student}", **MODELS[student])
    teacher = ensure_tiny_vlm(models_dir / "teacher-tiny", **TINY_TEACHER)
    args = VZeroConfig(
        output_dir=str(models_dir / "out"),
        num_generations=2,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        student_scoring="shared_prefix",
    )
    trainer = VZeroTrainer(model=str(student_dir), teacher_model=str(teacher), args=args)
    trainer.processing_class.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": image_side**2}
    return trainer


def micro_batch(trainer: VZeroTrainer, image_side: int, completion_length: int, num_generations: int) -> dict:
    """`G` rollouts of one prompt, laid out as `_compute_loss` receives them."""
    example = make_example(0, seed=0, canvas_size=(image_side, image_side))
    prompt = trainer.processing_class.apply_chat_template(
        [student_messages(example)] * num_generations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    generator = torch.Generator().manual_seed(0)
    vocab = trainer.processing_class.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ordinary tokens lie below it
    completion_ids = torch.randint(0, vocab, (num_generations, completion_length), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    return {
        "prompt_ids": prompt["input_ids"],
        "prompt_mask": prompt["attention_mask"],
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
        "mm_token_type_ids": torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(completion_ids)], dim=1),
        "teacher_logps": -torch.rand(num_generations, completion_length, generator=generator) * 8,
        "evidence_weights": torch.rand(num_generations, generator=generator) * 2,
        "num_sequences_in_batch": torch.tensor(num_generations),
        "group_index": rollout_groups(num_generations, num_generations),
    }


def loss(trainer: VZeroTrainer, student, inputs: dict, shared: bool) -> torch.Tensor:
    """The gated sampled-token loss of the micro-batch, the student's forward shared over the prompt or per row."""
    ids, mask = inputs["completion_ids"], inputs["completion_mask"]
    if shared:
        groups = group_slices(inputs["group_index"])
        hidden = student_hidden_grouped(student.base_model, inputs, groups, student.config.image_token_id)
    else:
        hidden = trainer._get_last_hidden_state(
            student,
            torch.cat([inputs["prompt_ids"], ids], dim=1),
            torch.cat([inputs["prompt_mask"], mask], dim=1),
            ids.size(1),
            **{key: inputs[key] for key in MULTIMODAL_KEYS if key in inputs},
        )
    logps, _ = completion_logps(hidden, student.get_output_embeddings(), ids, mask)
    return sampled_token_loss(
        logps, inputs["teacher_logps"], mask, inputs["evidence_weights"], normalizer=inputs["num_sequences_in_batch"]
    )


def measure(
    trainer: VZeroTrainer,
    image_side: int,
    completion_length: int,
    num_generations: int,
    repeats: int,
    checkpointing: bool,
) -> dict:
    inputs = micro_batch(trainer, image_side, completion_length, num_generations)
    inputs = {key: value.to(trainer.accelerator.device) for key, value in inputs.items()}
    student = trainer.accelerator.unwrap_model(trainer.model)
    if checkpointing:
        student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    full_grid = inputs["image_grid_thw"][0].tolist()
    encodings = []
    hook = student.base_model.visual.register_forward_hook(
        lambda module, args, kwargs, output: encodings.append(kwargs["grid_thw"]), with_kwargs=True
    )
    times, losses, counts, allocated = {"shared_prefix": [], "naive": []}, {}, {}, {}
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    for _ in range(repeats + 1):
        for mode in ("shared_prefix", "naive"):
            student.zero_grad()
            encodings.clear()
            start = time.perf_counter()
            value = loss(trainer, student, inputs, shared=mode == "shared_prefix")
            value.backward()
            synchronize()
            times[mode].append(time.perf_counter() - start)
            losses[mode] = value.item()
            if torch.cuda.is_available():
                allocated[mode] = round(torch.cuda.memory_allocated() / 2**30, 1)
            if mode == "shared_prefix":  # kept on the host, compared per parameter: a large model's grads fit once
                shared_grads = [p.grad.cpu() for p in student.parameters() if p.grad is not None]
            else:
                naive_grads = [p.grad for p in student.parameters() if p.grad is not None]
                squares = [
                    ((a.double() - b.to(a.device).double()) ** 2).sum()
                    for a, b in zip(naive_grads, shared_grads, strict=True)
                ]
                grad_rel_diff = float(sum(squares).sqrt() / sum((a.double() ** 2).sum() for a in naive_grads).sqrt())
            counts[mode] = sum(grid.tolist() == full_grid for grid in torch.cat(encodings))
    hook.remove()
    prompt_length = inputs["prompt_ids"].size(1)
    naive_tokens = num_generations * (prompt_length + completion_length)
    shared_tokens = prompt_length + num_generations * (completion_length - 1)
    best = {mode: min(values[1:]) for mode, values in times.items()}  # the first round warms up
    return {
        "checkpointing": checkpointing,
        "P": prompt_length,
        "C": completion_length,
        "G": num_generations,
        "P_over_C": round(prompt_length / completion_length, 1),
        "naive_s": round(best["naive"], 4),
        "shared_s": round(best["shared_prefix"], 4),
        "speedup": round(best["naive"] / best["shared_prefix"], 2),
        "token_ratio": round(naive_tokens / shared_tokens, 2),
        "full_image_encodings_naive": counts["naive"],
        "full_image_encodings_shared": counts["shared_prefix"],
        "loss_abs_diff": abs(losses["naive"] - losses["shared_prefix"]),
        "grad_rel_diff": grad_rel_diff,
        **({"allocated_after_backward_gib": allocated} if allocated else {}),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/student_scoring.json"))
    parser.add_argument("--models_dir", type=Path, default=Path("outputs/bench_models"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="One small setting per model (a smoke run).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # (model, image side in px, C, G, checkpointing): image side 544 gives ~290 image tokens, 1024 gives ~1,024
    settings = [
        ("tiny", 544, 32, 8, False),
        ("tiny", 1024, 128, 8, False),
        ("larger", 544, 32, 8, False),
        ("larger", 1024, 128, 8, False),
        ("tiny", 1024, 128, 8, True),
        ("larger", 1024, 128, 8, True),
    ]
    if args.quick:
        settings = [("tiny", 544, 16, 4, False), ("larger", 544, 32, 4, True)]
    results = []
    for model, side, completion_length, num_generations, checkpointing in settings:
        trainer = trainer_for(args.models_dir, model, side)
        measured = measure(trainer, side, completion_length, num_generations, args.repeats, checkpointing)
        result = {"model": model, **measured}
        print(json.dumps(result), flush=True)
        results.append(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
