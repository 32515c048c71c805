"""Helpers shared by the test modules: trainers on the tiny models, generation batches, and full-logits references.

Test modules import from here, never from each other. The references are written from the definitions with plain
full-logits forwards and hand-built messages, sharing no code with the trainer's chunked, batched path.
"""

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.config import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX
from vzero_trl.gating import group_slices, rollout_groups
from vzero_trl.processing import load_processor
from vzero_trl.replay import replay_teacher


ROOT = Path(__file__).parent.parent


def load_script():
    """`scripts/vzero.py` as a module."""
    spec = importlib.util.spec_from_file_location("vzero_script", ROOT / "scripts" / "vzero.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_command(*flags: str, accelerate: tuple[str, ...] = ("--num_processes", "1")) -> list[str]:
    """`accelerate launch <accelerate> scripts/vzero.py <flags>` with this Python, to run from the repository root
    (`accelerate=("--config_file", "configs/accelerate/cpu.yaml")` launches as `make demo` does)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *accelerate, "scripts/vzero.py", *flags]


def run_command(command: list[str], env: dict[str, str] | None = None, timeout: int = 600):
    """
    Run `command` from the repository root, with `env` over this process's environment, one OpenMP thread and no Hub
    (a fake Hub's `env()` turns it back on). The test fails with the tail of the output unless it exits 0; returns the
    `CompletedProcess`.
    """
    offline = dict.fromkeys(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"), "1")
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **offline, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


# --- trainers on the tiny models --------------------------------------------------------------------------------------


def make_args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        seed=0,
    )
    settings.update(overrides)
    return VZeroConfig(**settings)


def make_trainer(tiny_models, tmp_path, train_dataset, eval_dataset=None, **overrides):
    student, teacher = tiny_models
    return VZeroTrainer(
        model=str(student),
        teacher_model=str(teacher),
        args=make_args(tmp_path, **overrides),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )


def generation_batch(trainer, rows):
    """One generation batch exactly as `_prepare_inputs` would build it (before shuffling), in train mode."""
    trainer.model.train()
    with torch.no_grad():
        return trainer._generate_and_score_completions(copy.deepcopy(rows))


def replay(trainer, rows, batch, crop_columns, strategy, **kwargs):
    """`replay_teacher` on the trainer's teacher and processor, the rows grouped by `num_generations` as sampled."""
    groups = group_slices(rollout_groups(len(rows), trainer.args.num_generations))
    return replay_teacher(
        trainer.accelerator.unwrap_model(trainer.teacher_model),
        trainer.processing_class,
        rows,
        groups,
        batch["completion_ids"],
        batch["completion_mask"],
        crop_columns,
        strategy=strategy,
        crop_prefix=trainer.args.teacher_texts[0],
        crop_suffix=trainer.args.teacher_texts[1],
        layout=trainer.args.teacher_view,
        **kwargs,
    )


def rows_with_two_image_sizes(dataset):
    """Two prompts of G = 4, the second with a smaller full image: prompts of different lengths, so a batch of them is
    left padded."""
    small = dict(dataset[1], image=dataset[1]["image"].resize((320, 192)))
    return [dataset[0]] * 4 + [small] * 4


def ragged(batch, pad_id):
    """Cut the rollouts to different lengths (12, 3, 7, 1, ...), as EOS would: the tiny random model never stops early."""
    lengths = [12, 3, 7, 1, 9, 12, 2, 5][: batch["completion_ids"].size(0)]
    for row, length in enumerate(lengths):
        batch["completion_mask"][row, length:] = 0
        batch["completion_ids"][row, length:] = pad_id
    return batch


def completions_of(batch):
    return [
        ids[mask.bool()].tolist() for ids, mask in zip(batch["completion_ids"], batch["completion_mask"], strict=True)
    ]


# --- references -------------------------------------------------------------------------------------------------------


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path).eval(), load_processor(path, padding_side="left")


def reference_logits(model, processor, messages, tokens):
    """Full logits `(P + len(tokens), V)` of one sequence alone, `[prompt | tokens]`, and the prompt length `P`."""
    prompt = processor.apply_chat_template(
        [messages], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = torch.cat([prompt["input_ids"], torch.tensor([tokens], dtype=torch.long)], dim=1)
    token_types = torch.cat([prompt["mm_token_type_ids"], torch.zeros(1, len(tokens), dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=prompt["pixel_values"],
            image_grid_thw=prompt["image_grid_thw"],
            mm_token_type_ids=token_types,
        ).logits[0]
    return logits, prompt["input_ids"].size(1)


def reference_logps(model, processor, messages, completion):
    """log pi(y_k | messages, y_<k) for each token of `completion` (a list of ids), one sequence alone, full logits."""
    logits, start = reference_logits(model, processor, messages, completion)
    # Position p predicts token p + 1: completion token k sits at start + k and is predicted at start + k - 1.
    return [logits[start + k - 1].log_softmax(-1)[token].item() for k, token in enumerate(completion)]


def full_distribution(model, processor, messages, prefix):
    """log pi(. | messages, prefix) over the whole vocabulary."""
    logits, _ = reference_logits(model, processor, messages, prefix)
    return logits[-1].log_softmax(-1)


def student_view(row):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": row["image"]},
                {"type": "text", "text": row["prompt"][0]["content"]},
            ],
        }
    ]


def teacher_view(row, crop_column):
    content = student_view(row)[0]["content"] + [
        {"type": "text", "text": TEACHER_CROP_PREFIX},
        {"type": "image", "image": row[crop_column]},
        {"type": "text", "text": TEACHER_CROP_SUFFIX},
    ]
    return [{"role": "user", "content": content}]
