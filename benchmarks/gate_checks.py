"""Cost of the gate checks on CPU, and the probe's AUC on the letter-world pair (benchmarks/RESULTS.md, section (e)).

On the trained letter-world pair with the miniature's batch (16 prompts x G = 4, completions up to 16 tokens):

- the blind-teacher alarm under `evidence_alpha=0`: the generation batch (generate, replay the positive view) timed
  without the alarm and with it sampling the negative view of one prompt (`evidence_alarm_every=1`), alternated in one
  process; the cost per step at the default `evidence_alarm_every` is the difference over it, during the first
  `(evidence_alarm_steps - 1) * evidence_alarm_every + 1` steps only;
- the gate probe: one probe over `--probe_rows` held-out rows against one gated generation batch, and its
  `probe/gate_auc` beside the reproduction's measured gate AUC (`benchmarks/results/mini/results.json`).

Times are CPU seconds of the process (one thread), which a busy machine disturbs far less than wall time.

    python benchmarks/gate_checks.py --output benchmarks/results/gate_checks.json
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.gate_probe import run_probe
from vzero_trl.mini.pretrain import WORLD_PAIRS, ensure_pair
from vzero_trl.mini.world import make_dataset, make_rows


def trainer_for(teacher, student, output_dir, probe=None, **overrides):
    args = VZeroConfig(
        output_dir=output_dir, num_generations=4, per_device_train_batch_size=64, max_completion_length=16,
        max_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
        model_init_kwargs={"dtype": "float32"}, teacher_model_init_kwargs={"dtype": "float32"},
        gate_probe_dataset=probe, **overrides,
    )  # fmt: skip
    trainer = VZeroTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=make_dataset(16, split="bench")
    )
    trainer.model.train()
    return trainer


def batch_seconds(trainer, rows):
    start = time.process_time()
    with torch.no_grad():
        trainer._generate_and_score_completions(copy.deepcopy(rows))
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/gate_checks")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--probe_rows", type=int, default=128)
    parser.add_argument("--output", default=None)
    options = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(options.work)
    teacher, student = (str(p) for p in ensure_pair(work / "pair", WORLD_PAIRS["letter"], log=None)[:2])
    rows = [row for row in make_rows(16, split="bench") for _ in range(4)]

    plain = trainer_for(teacher, student, str(work / "a"), evidence_alpha=0.0, evidence_alarm="off")
    alarm = trainer_for(teacher, student, str(work / "b"), evidence_alpha=0.0, evidence_alarm_every=1,
                        evidence_alarm_steps=10**6)  # fmt: skip
    times = {"plain_opd": [], "with_alarm_sample": []}
    for _ in range(options.repeats):
        for name, trainer in (("plain_opd", plain), ("with_alarm_sample", alarm)):
            torch.manual_seed(0)
            times[name].append(batch_seconds(trainer, rows))
    a, b = statistics.median(times["plain_opd"]), statistics.median(times["with_alarm_sample"])
    result = {
        "alarm_alpha0": {
            "plain_batch_s": a, "sampled_batch_s": b, "sampled_ratio": b / a,
            "per_step_ratio_every_10": 1 + (b - a) / a / 10, "times": times,
        }
    }  # fmt: skip

    make_dataset(options.probe_rows, split="eval").save_to_disk(str(work / "probe"))
    gated = trainer_for(teacher, student, str(work / "c"), probe=str(work / "probe"))
    probe_rows = gated.callback_handler.callbacks[-1].rows
    torch.manual_seed(0)
    step = statistics.median(batch_seconds(gated, rows) for _ in range(2))
    start = time.process_time()
    metrics = run_probe(gated, probe_rows)
    probe_s = time.process_time() - start
    reference = json.loads(Path("benchmarks/results/mini/results.json").read_text())["summary"]["letter"]["vzero"]
    result["probe"] = {
        "rows": len(probe_rows), "seconds": probe_s, "gated_batch_s": step, "ratio_to_batch": probe_s / step,
        "metrics": metrics, "reproduction_gate_auc": reference["gate_auc"],
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if options.output:
        Path(options.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
