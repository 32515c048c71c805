"""Benchmarks (a) and (b) on one GPU at real model shapes: a random-weight Qwen3.5-4B-shaped student and a
9B-shaped teacher in bf16, with the step time set against the FLOP-bound ideal.

    python benchmarks/gpu_scale.py --output benchmarks/results/gpu_scale.json

No weights are downloaded: both models are built from their published shapes (vocabulary 248,320, the 27-block
vision tower, 3:1 Gated-DeltaNet to full-attention layers) with random weights, directly on the GPU, and share the
tiny models' processor (its tokenizer's ids are a subset of the models' vocabulary). Random weights give the real
cost: completions run to `--completion_length`, since the end-of-sequence token is almost never sampled.

Parts, in order (`--parts`):

- `teacher`: (b) `vzero_trl.replay.replay_teacher`, shared prefix against per sequence ("naive"), at each
  `--teacher_settings`;
- `student`: the student's training forward and backward on one group, shared prefix against naive, with
  activation checkpointing on;
- `step`: (a) whole optimizer steps (generation with `model.generate`, teacher scoring, loss, backward, AdamW) for the
  trainers of `step_time.py`: `vzero`, `opd_crop`, `trl_distillation` and `vzero_naive`. Each step is timed between
  CUDA synchronisations; the median excludes the first step. The ideal is the FLOP count of the same step with the
  prefix shared (2N per forward token, 6N per trained token, vision tower included, quadratic attention left out) at
  `--peak_tflops`.

Use `--shapes smoke` for a CPU or small-GPU run of the same code on small models with the full vocabulary.
"""

import argparse
import gc
import json
import statistics
import time
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from step_time import build_trainer, dataset
from student_scoring import measure as measure_student
from teacher_scoring import measure as measure_teacher
from transformers import AutoProcessor, Qwen3_5ForConditionalGeneration, TrainerCallback
from transformers.utils.import_utils import is_flash_linear_attention_available

import vzero_trl.trainer
from vzero_trl import VZeroTrainer
from vzero_trl.replay import replay_teacher, teacher_views, tokenize
from vzero_trl.toy.synthetic import make_example
from vzero_trl.toy.tiny import TINY_STUDENT, ensure_tiny_vlm, vlm_config
from vzero_trl.views import student_messages


LINEAR_HEADS = dict(
    linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128
)
ATTENTION = dict(num_attention_heads=16, num_key_value_heads=4, head_dim=256, mrope_section=[11, 11, 10])
SMOKE = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=32, mrope_section=[2, 1, 1], linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
    linear_value_head_dim=32,
)  # fmt: skip
TEXT_SHAPES = {
    # Qwen3.5-4B and -9B text towers (performance.md section 1; the 9B is transformers' default Qwen3_5TextConfig)
    "4b": dict(hidden_size=2560, intermediate_size=9216, num_hidden_layers=32, **ATTENTION, **LINEAR_HEADS),
    "9b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, **ATTENTION, **LINEAR_HEADS),
    "smoke-student": SMOKE,
    "smoke-teacher": {**SMOKE, "hidden_size": 192, "intermediate_size": 384},
}
VISION_SHAPES = {
    "full": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, num_position_embeddings=2304),
    "smoke": dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, num_position_embeddings=64),
}
SHAPES = {"real": ("4b", "9b", "full"), "smoke": ("smoke-student", "smoke-teacher", "smoke")}
VOCAB_SIZE = 248_320


def random_model(
    text_shape: str, vision_shape: str, processor, seed: int, device: str, dtype: torch.dtype
) -> torch.nn.Module:
    """A random-weight Qwen3.5 VLM of the given shape, in `dtype` on `device`, speaking `processor`'s token ids."""
    text = dict(TEXT_SHAPES[text_shape])
    mrope_section = text.pop("mrope_section")
    text_config = dict(
        **text,
        vocab_size=VOCAB_SIZE,
        layer_types=[("linear_attention", "full_attention")[i % 4 == 3] for i in range(text["num_hidden_layers"])],
        linear_conv_kernel_dim=4,
        max_position_embeddings=32768,
        rope_parameters=dict(
            rope_type="default",
            rope_theta=1e7,
            partial_rotary_factor=0.25,
            mrope_section=mrope_section,
            mrope_interleaved=True,
        ),
    )
    config = vlm_config(processor.tokenizer, text_config, VISION_SHAPES[vision_shape])
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3_5ForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id, config.text_config.pad_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model


def has(package: str) -> bool:
    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters that cost FLOPs per token: the language model without its embedding table, plus the LM head."""
    language = sum(p.numel() for p in model.model.language_model.parameters())
    embedding = model.model.language_model.embed_tokens.weight.numel()
    return {
        "llm": language - embedding + model.lm_head.weight.numel(),
        "vision": sum(p.numel() for p in model.model.visual.parameters()),
    }


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, between CUDA synchronisations."""

    def __init__(self):
        self.times = []

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.times.append(time.perf_counter() - self.start)


def common_args(settings: dict) -> dict:
    return dict(
        per_device_train_batch_size=settings["num_generations"],
        gradient_accumulation_steps=settings["prompts"],
        max_completion_length=settings["completion_length"],
        max_steps=settings["steps"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=settings["dtype"] == "bfloat16",
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=True,
        seed=0,
        shuffle_dataset=False,
        learning_rate=1e-7,
        disable_tqdm=True,
    )


def run_step(name: str, student, teacher, processor, settings: dict, output_dir: Path) -> dict:
    data = dataset(settings["prompts"] * settings["steps"], settings["num_generations"], settings["image_side"])
    common = dict(output_dir=str(output_dir / name), **common_args(settings))
    trainer = build_trainer(
        name, student, teacher, common, settings["num_generations"], train_dataset=data, processing_class=processor
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    phases = {}
    student.generate = timed(student.generate, "generate", phases, trainer)
    trainer._compute_loss = timed(trainer._compute_loss, "compute_loss", phases, trainer)
    if isinstance(trainer, VZeroTrainer):  # the trainer calls the replay by its name in `vzero_trl.trainer`
        vzero_trl.trainer.replay_teacher = timed(replay_teacher, "score_teacher_views", phases, trainer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train()
        result = {"median_step_s": round(statistics.median(timer.times[1:]), 3)}
    except torch.OutOfMemoryError as error:
        result = {"error": f"out of memory: {str(error).splitlines()[0]}"}
    del student.generate  # back to the class method
    vzero_trl.trainer.replay_teacher = replay_teacher
    result |= {
        "steps_s": [round(t, 3) for t in timer.times],
        # seconds per step inside each call, steps after the first; backward and the optimizer are the remainder
        "phase_s": {phase: round(total / max(len(timer.times) - 1, 1), 3) for phase, total in phases.items()},
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
    }
    del trainer
    gc.collect()
    torch.cuda.empty_cache()
    return result


def timed(function, name: str, phases: dict, trainer):
    """`function`, adding its synchronised wall time to `phases[name]` on every step but the first."""

    def wrapper(*args, **kwargs):
        synchronize()
        start = time.perf_counter()
        output = function(*args, **kwargs)
        synchronize()
        if trainer.state.global_step > 0:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return output

    return wrapper


def ideal_step(student_counts, teacher_counts, prompt: dict, settings: dict, peak_tflops: float) -> dict:
    """FLOP-bound time of one step with the prefix shared: 2N per forward token, 6N per trained token."""
    g, c = settings["num_generations"], settings["completion_length"]
    tokens = prompt["student_prompt"] + g * c
    full, crops = prompt["full_patches"], prompt["crop_patches"]
    flops = {
        "rollout": 2 * student_counts["llm"] * tokens + 2 * student_counts["vision"] * full,
        "student_train": 6 * student_counts["llm"] * tokens + 6 * student_counts["vision"] * full,
        "teacher": 2 * teacher_counts["llm"] * prompt["teacher_shared_tokens"]
        + 2 * teacher_counts["vision"] * (full + crops),
    }
    flops = {key: value * settings["prompts"] for key, value in flops.items()}
    return {
        "flops": {key: f"{value:.3e}" for key, value in flops.items()},
        "peak_tflops": peak_tflops,
        "ideal_s": float(f"{sum(flops.values()) / (peak_tflops * 1e12):.4g}"),
    }


def prompt_sizes(trainer: VZeroTrainer, image_side: int) -> dict:
    """Token and vision-patch counts of one prompt of the step benchmark."""
    example = make_example(0, seed=0, canvas_size=(image_side, image_side))
    student = trainer.processing_class.apply_chat_template(
        [student_messages(example)], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    columns, prefix, suffix = (
        ["crop", "negative_crop"],
        trainer.args.teacher_crop_prefix,
        trainer.args.teacher_crop_suffix,
    )
    messages = teacher_views([example], [slice(0, 1)], columns, prefix, suffix)
    views = [tokenize(trainer.processing_class, view, {}, trainer.accelerator.device) for view in messages]
    return {
        "student_prompt": student["input_ids"].size(1),
        "full_patches": int(student["image_grid_thw"][0].prod()),
        "crop_patches": sum(int(view["image_grid_thw"][-1].prod()) for view in views),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu_scale.json"))
    parser.add_argument("--models_dir", type=Path, default=Path("outputs/bench_models"))
    parser.add_argument("--shapes", choices=list(SHAPES), default="real")
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="Model weights; float32 checks that the shared and naive paths agree on the GPU (parts teacher, student).",
    )
    parser.add_argument("--parts", default="teacher,student,step", help="Comma-separated: teacher, student, step.")
    parser.add_argument("--trainers", default="vzero,opd_crop,trl_distillation,vzero_naive")
    parser.add_argument("--image_side", type=int, default=1536, help="Full-image side in px (~(side/32)^2 tokens).")
    parser.add_argument("--completion_length", type=int, default=256)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="Prompts per optimizer step.")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--teacher_settings",
        default="1024:128:8,1536:256:8,2048:256:8",
        help="Comma-separated image_side:C:G settings of part (b), besides the step's own.",
    )
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="Dense bf16 peak (H100/H200 SXM: 989).")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor = AutoProcessor.from_pretrained(ensure_tiny_vlm(args.models_dir / "student", **TINY_STUDENT))
    step_size = {"shortest_edge": 32 * 32, "longest_edge": args.image_side**2}
    processor.image_processor.size = step_size
    student_shape, teacher_shape, vision_shape = SHAPES[args.shapes]
    start = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    student = random_model(student_shape, vision_shape, processor, seed=0, device=device, dtype=dtype)
    teacher = random_model(teacher_shape, vision_shape, processor, seed=1, device=device, dtype=dtype).eval()
    settings = {
        "image_side": args.image_side,
        "completion_length": args.completion_length,
        "num_generations": args.num_generations,
        "prompts": args.prompts,
        "steps": args.steps,
        "dtype": args.dtype,
    }
    result = {
        "date": str(date.today()),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "software": ", ".join(
            f"{name} {version(name)}" for name in ("torch", "transformers", "trl", "datasets", "triton") if has(name)
        ),
        "shapes": {"student": student_shape, "teacher": teacher_shape, "vision": vision_shape},
        "parameters": {"student": parameter_counts(student), "teacher": parameter_counts(teacher)},
        # flash-linear-attention's kernels for the Gated-DeltaNet layers; without it transformers runs PyTorch code
        "fla": version("flash-linear-attention") if is_flash_linear_attention_available() else None,
        "build_s": round(time.perf_counter() - start, 1),
        "settings": settings,
    }
    print(json.dumps(result), flush=True)
    output_dir = args.models_dir / "gpu_runs"
    parts = args.parts.split(",")

    def save():
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")

    common = dict(output_dir=str(output_dir / "probe"), **common_args(settings))
    probe = build_trainer("vzero", student, teacher, common, args.num_generations, processing_class=processor)
    prompt = prompt_sizes(probe, args.image_side)
    step_setting = f"{args.image_side}:{args.completion_length}:{args.num_generations}"
    teacher_settings = [step_setting] + [s for s in args.teacher_settings.split(",") if s and s != step_setting]
    if "teacher" not in parts:
        # the step's teacher token count is still needed for its ideal
        teacher_settings = [step_setting] if "step" in parts else []
    result["teacher_scoring"] = []
    for setting in teacher_settings:
        side, completion_length, num_generations = map(int, setting.split(":"))
        processor.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": side**2}
        row = measure_teacher(probe, side, completion_length, num_generations, args.repeats)
        processor.image_processor.size = step_size
        row["image_side"] = side
        print(json.dumps(row), flush=True)
        result["teacher_scoring"].append(row)
        save()
    if teacher_settings:
        prompt["teacher_shared_tokens"] = result["teacher_scoring"][0]["shared_tokens"]
    result["prompt"] = prompt
    if "student" in parts:
        row = measure_student(probe, args.image_side, args.completion_length, args.num_generations, 1, True)
        student.zero_grad(set_to_none=True)
        print(json.dumps(row), flush=True)
        result["student_scoring"] = row
        save()
    del probe
    gc.collect()
    torch.cuda.empty_cache()

    if "step" in parts:
        ideal = ideal_step(
            result["parameters"]["student"], result["parameters"]["teacher"], prompt, settings, args.peak_tflops
        )
        result["ideal"] = ideal
        result["step"] = {}
        for name in args.trainers.split(","):
            row = run_step(name, student, teacher, processor, settings, output_dir)
            if "median_step_s" in row:
                row["over_ideal"] = round(row["median_step_s"] / ideal["ideal_s"], 2)
            print(json.dumps({"trainer": name, **row}), flush=True)
            result["step"][name] = row
            save()
        times = {name: row.get("median_step_s") for name, row in result["step"].items()}
        for name, reference in (("opd_crop", "opd_crop"), ("trl_distillation", "trl_distillation")):
            if times.get("vzero") and times.get(reference):
                result[f"vzero_over_{name}"] = round(times["vzero"] / times[reference], 3)
        save()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
