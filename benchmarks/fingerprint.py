"""Fingerprints of the trainer's behaviour: logged values and final parameters over a grid of settings.

A refactor that claims to change nothing runs this before and after and compares the two files:

    python benchmarks/fingerprint.py --output before.json     # at the old commit
    python benchmarks/fingerprint.py --output after.json      # at the new one
    python benchmarks/fingerprint.py --compare before.json after.json

Each setting trains the tiny random student (and teacher) for two steps on CPU, then evaluates when it has an
evaluation set. The fingerprint holds every logged number except wall-clock timings (exact floats), a sha256 of every
final parameter of the student (and of the teacher where it trains), and a sha256 of the model card and of the
completions tables (the card's training duration blanked). Equal fingerprints mean bit-identical logs and parameters.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path


os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402


torch.set_num_threads(1)

from peft import LoraConfig  # noqa: E402

from vzero_trl import VZeroConfig, VZeroTrainer  # noqa: E402
from vzero_trl.toy.synthetic import make_dataset  # noqa: E402
from vzero_trl.toy.tiny import build_tiny_pair  # noqa: E402


LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "in_proj_qkv"])
TIMING = ("runtime", "per_second", "_flos", "step_time")

# name: (VZeroConfig overrides, trainer options). Every setting the trainer's hooks branch on.
SETTINGS = {
    "default": ({}, {}),
    "per_sequence_student": (dict(student_scoring="per_sequence"), {}),
    "per_sequence_teacher": (dict(teacher_scoring="per_sequence"), {}),
    "sequence_aggregation": (dict(loss_aggregation="sequence"), {}),
    "full_reverse_kl": (dict(loss_type="full_reverse_kl"), {}),
    "top_k_jsd": (dict(beta=0.5, loss_top_k=8, loss_type="full_reverse_kl"), {}),
    "accumulation": (dict(per_device_train_batch_size=2, gradient_accumulation_steps=2), {}),
    "plain_opd_with_alarm": (dict(evidence_alpha=0.0), {}),
    "offload": (dict(offload_teacher=True), {}),
    "frozen": (dict(teacher_source="frozen"), {"teacher": None}),
    "ema": (dict(teacher_source="ema", save_strategy="steps", save_steps=1), {"teacher": None}),
    "lora_frozen": (dict(teacher_source="frozen", gradient_checkpointing=True), {"teacher": None, "lora": True}),
    "lora_frozen_full_kl": (
        dict(teacher_source="frozen", gradient_checkpointing=True, loss_type="full_reverse_kl"),
        {"teacher": None, "lora": True},
    ),
    "lora_external": (dict(gradient_checkpointing=True), {"lora": True}),
    "evaluation": (
        dict(num_generations_eval=2, per_device_eval_batch_size=4, eval_strategy="steps", eval_steps=1),
        {"eval": True},
    ),
    "iterable": (
        dict(
            num_generations=2,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            eval_strategy="steps",
            eval_steps=1,
            num_generations_eval=2,
            per_device_eval_batch_size=2,
        ),
        {"eval": True, "iterable": True},
    ),
    "completions_table": (dict(log_completions=True), {}),
}


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def fingerprint(name: str, tiny: tuple[Path, Path], workdir: Path) -> dict:
    overrides, options = SETTINGS[name]
    settings = dict(
        output_dir=str(workdir / name),
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
    dataset = make_dataset(16, seed=0)
    eval_dataset = dataset.select(range(4)) if options.get("eval") else None
    if options.get("iterable"):
        dataset, eval_dataset = dataset.to_iterable_dataset(), eval_dataset.to_iterable_dataset()
    teacher = options.get("teacher", str(tiny[1]))
    trainer = VZeroTrainer(
        model=str(tiny[0]),
        teacher_model=teacher,
        args=VZeroConfig(**settings),
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=LoraConfig(**LORA) if options.get("lora") else None,
    )
    trainer.train()
    logs = [
        {key: value for key, value in entry.items() if not any(t in key for t in TIMING)}
        for entry in trainer.state.log_history
    ]
    result = {"logs": logs, "student": {n: digest(p) for n, p in trainer.model.named_parameters()}}
    if trainer.teacher_model is not None and overrides.get("teacher_source") == "ema":
        result["teacher"] = {n: digest(p) for n, p in trainer.teacher_model.named_parameters()}
    trainer.create_model_card()
    out = Path(settings["output_dir"])
    files = sorted(p for p in out.rglob("*") if p.is_file() and (p.name == "README.md" or "completions" in p.name))
    # The card states how long training took: the one wall-clock figure it holds is blanked before hashing.
    texts = {p: re.sub(rb"training took [^.]*\.", b"training took -.", p.read_bytes()) for p in files}
    result["files"] = {str(p.relative_to(out)): hashlib.sha256(text).hexdigest()[:16] for p, text in texts.items()}
    return result


def compare(before: dict, after: dict) -> list[str]:
    differences = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            a, b = before.get(name, {}), after.get(name, {})
            keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            differences.append(f"{name}: {', '.join(keys)} differ")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="Where the fingerprints are written (JSON).")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--workdir", default="outputs/fingerprint", help="Scratch folder, emptied first.")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="Compare two fingerprint files.")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        differences = compare(before, after)
        print("\n".join(differences) or f"identical: {len(before)} settings, logs and parameters bit for bit")
        return 1 if differences else 0
    if not args.output:
        parser.error("--output is required unless --compare is given")
    # One fixed folder: the card names the student's path, which must not differ between the two runs.
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    tiny = build_tiny_pair(workdir / "tiny")
    results = {}
    for name in tqdm(args.settings, desc="settings"):
        results[name] = fingerprint(name, tiny, workdir)
    Path(args.output).write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
