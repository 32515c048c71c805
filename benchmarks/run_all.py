"""Run the three benchmarks side by side on this machine and write benchmarks/RESULTS.md.

    make bench        # or: OMP_NUM_THREADS=1 python benchmarks/run_all.py

(a) `step_time.py`: a V-Zero optimizer step against plain on-policy distillation on the same data and group size;
(b) `teacher_scoring.py`: shared-prefix against naive teacher scoring as P, C and G vary, and `student_scoring.py`: the
    same for the student's training forward and backward;
(c) `logprob_memory.py`: peak memory of chunked against full-logits log-probabilities at T = 2,048, V = 248,320.
Each runs in its own process; the raw numbers are kept in `benchmarks/results/*.json`.
The GPU section comes from `benchmarks/results/gpu_scale.json`, written by `gpu_scale.py` on a GPU machine, and the
learning section from `benchmarks/results/mini/results.json`, copied from a `make reproduce` run (`vzero_trl.mini`).

`--only step_time teacher_scoring` reruns only those parts and reuses the others' JSON files; the report gives the date
each part was measured.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch

from vzero_trl.mini.reproduce import markdown_table, pairs_table
from vzero_trl.provenance import machine as provenance_machine


HERE = Path(__file__).parent
RESULTS = HERE / "results"


def machine() -> str:
    """`provenance.machine()` as one line, with the thread setting, the GPU and the library versions."""
    host = provenance_machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{host['cpu']}, {host['cores']} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, GPU: {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {version('transformers')}, "
        f"trl {version('trl')}"
    )


def run(script: str) -> dict | list:
    output = RESULTS / f"{script}.json"
    subprocess.run([sys.executable, str(HERE / f"{script}.py"), "--output", str(output)], check=True)
    return json.loads(output.read_text())


def report(step: dict, scoring: list, student: list, memory: dict) -> str:
    t = step["median_step_s"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {date.today()} on: {machine()}.",
        "Reproduce with `make bench`. Raw numbers: `benchmarks/results/*.json`.",
        "",
        "## (a) V-Zero step vs plain on-policy distillation step",
        "",
        f"Tiny student and teacher, {step['batch']} rollouts per step ({step['batch'] // step['num_generations']} "
        f"prompts x G = {step['num_generations']}), {step['completion_length']}-token completions, "
        f"{step['image_side']} px images; median `step_time` over {step['steps'] - 1} steps after the first.",
        "",
        "| Trainer | Step (s) | V-Zero / this |",
        "| --- | --- | --- |",
        f"| V-Zero (defaults: gate on, shared-prefix teacher and student) | {t['vzero']:.3f} | 1.00 |",
        f"| V-Zero, naive teacher and student (every sequence alone) | {t['vzero_naive']:.3f} | "
        f"{t['vzero'] / t['vzero_naive']:.2f} |",
        f'| plain OPD from the crop view (gate off, Table 2 "None"), same defaults | {t["opd_crop"]:.3f} | '
        f"{step['vzero_over_opd_crop']:.2f} |",
        f"| TRL `DistillationTrainer` (plain OPD, full-vocabulary reverse KL, every sequence alone) | "
        f"{t['trl_distillation']:.3f} | {step['vzero_over_trl_distillation']:.2f} |",
        "",
        f"V-Zero / plain OPD: **{step['vzero_over_opd_crop']:.2f}** against the same trainer with the gate off, "
        f"**{step['vzero_over_trl_distillation']:.2f}** against TRL's trainer. Target: <= 1.3. Without prefix sharing "
        f"the second teacher view makes V-Zero {step['vzero_naive_over_trl_distillation']:.2f}x TRL's step.",
        "",
        "## (b) Shared-prefix vs naive teacher scoring (both views)",
        "",
        "P: teacher prompt tokens; C: completion tokens; G: rollouts per prompt. Tokens: what each path runs through the",
        "teacher; full-image encodings per prompt counted with a hook on the vision tower; times are the best of 3.",
        "",
        "| Teacher | P | C | G | P/C | naive (s) | shared (s) | speedup | token ratio | full-image encodings naive / shared | max abs logp diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in scoring:
        lines.append(
            f"| {r['model']} | {r['P']} | {r['C']} | {r['G']} | {r['P_over_C']} | {r['naive_s']:.3f} | "
            f"{r['shared_s']:.3f} | **{r['speedup']:.2f}x** | {r['token_ratio']:.2f}x | "
            f"{r['full_image_encodings_naive']} / {r['full_image_encodings_shared']} | {r['max_abs_logp_diff']:.1e} |"
        )
    lines += [
        "",
        "Target: at P/C >= 8 and G = 8, shared at least 3x faster, with one full-image encoding per prompt.",
        "",
        "### Student training forward and backward (`student_scoring`)",
        "",
        "`_compute_loss` + backward on G rollouts of one prompt (a micro-batch), with activation checkpointing off or on",
        "(both paths alike); the loss and gradient differences compare the two paths (relative L2 norm over all",
        "parameters).",
        "",
        "| Student | checkpointing | P | C | G | P/C | naive (s) | shared (s) | speedup | token ratio | full-image encodings naive / shared | loss diff | gradient rel. diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in student:
        lines.append(
            f"| {r['model']} | {'on' if r['checkpointing'] else 'off'} | {r['P']} | {r['C']} | {r['G']} | "
            f"{r['P_over_C']} | {r['naive_s']:.3f} | "
            f"{r['shared_s']:.3f} | **{r['speedup']:.2f}x** | {r['token_ratio']:.2f}x | "
            f"{r['full_image_encodings_naive']} / {r['full_image_encodings_shared']} | {r['loss_abs_diff']:.1e} | "
            f"{r['grad_rel_diff']:.1e} |"
        )
    lines += [
        "",
        "## (c) Log-probability memory at T = 2,048, V = 248,320",
        "",
        f"Sampled-token log-probabilities with gradients to the hidden states and the `lm_head` (hidden size {memory['H']},",
        f"float32; the fp32 logits alone are {memory['fp32_logits_mib']:,} MiB). Peak RSS above the inputs, one process each.",
        "",
        "| Path | Peak (MiB) | Time (s) |",
        "| --- | --- | --- |",
        f"| full logits (`log_softmax(h @ W.T)` + gather) | {memory['full']['peak_mib']:,} | {memory['full']['seconds']} |",
        f"| chunked (`vzero_trl.scoring.completion_logps`) | {memory['chunked']['peak_mib']:,} | "
        f"{memory['chunked']['seconds']} |",
        "",
        f"Chunked / full: **{memory['memory_ratio']:.3f}** (target <= 0.25); max abs log-prob difference "
        f"{memory['max_abs_logp_diff']:.1e}, relative `lm_head` gradient difference {memory['grad_weight_rel_diff']:.1e}.",
        "",
    ]
    return "\n".join(lines) + "\n" + gpu_report()


def gpu_report() -> str:
    """The GPU section, from `results/gpu_scale.json` (written by `gpu_scale.py` on a GPU machine) when present."""
    path = RESULTS / "gpu_scale.json"
    if not path.is_file():
        return (
            "## GPU\n\nNot measured yet: run `python benchmarks/gpu_scale.py` on a GPU machine, which writes "
            "`benchmarks/results/gpu_scale.json`, and this report includes it.\n"
        )
    gpu = json.loads(path.read_text())
    p, settings, step, ideal = gpu["parameters"], gpu["settings"], gpu["step"], gpu["ideal"]
    lines = [
        "## GPU: Qwen3.5-4B-shaped student, 9B-shaped teacher, bf16 (`gpu_scale.py`)",
        "",
        f"Measured {gpu['date']} on one {gpu['device']} ({gpu['software']}). Random weights at the published shapes "
        f"(vocabulary 248,320; 27-block vision tower): student {p['student']['llm'] / 1e9:.2f}B language-model "
        f"parameters that cost FLOPs per token (embedding table excluded, LM head included) + "
        f"{p['student']['vision'] / 1e9:.2f}B vision, teacher {p['teacher']['llm'] / 1e9:.2f}B + "
        f"{p['teacher']['vision'] / 1e9:.2f}B. Activation checkpointing on, AdamW. Notes: "
        + "; ".join(gpu["notes"])
        + ".",
        "",
        "### (b) Teacher scoring, shared prefix vs naive",
        "",
        "| Gated-DeltaNet kernels | P | C | G | P/C | naive (s) | shared (s) | speedup | token ratio | "
        "full-image encodings naive / shared | max abs logp diff (bf16) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [("fla", r) for r in gpu["teacher_scoring_fla"]] + [("PyTorch", r) for r in gpu["teacher_scoring"]]
    for kernels, r in rows:
        lines.append(
            f"| {kernels} | {r['P']} | {r['C']} | {r['G']} | {r['P_over_C']} | {r['naive_s']:.3f} | "
            f"{r['shared_s']:.3f} | **{r['speedup']:.2f}x** | {r['token_ratio']:.2f}x | "
            f"{r['full_image_encodings_naive']} / {r['full_image_encodings_shared']} | {r['max_abs_logp_diff']:.2f} |"
        )
    r = gpu["student_scoring"]
    t32, s32 = gpu["float32_check"]["teacher_scoring"], gpu["float32_check"]["student_scoring"]
    lines += [
        "",
        f"Student training forward and backward on one group (P = {r['P']}, C = {r['C']}, G = {r['G']}, "
        f"checkpointing on, PyTorch kernels): naive {r['naive_s']:.2f} s, shared {r['shared_s']:.2f} s, "
        f"**{r['speedup']:.2f}x** (token ratio {r['token_ratio']:.2f}x; full-image encodings "
        f"{r['full_image_encodings_naive']} / {r['full_image_encodings_shared']}; loss difference "
        f"{r['loss_abs_diff']:.1e}, relative gradient difference {r['grad_rel_diff']:.1e}).",
        "",
        "The differences between the paths in bf16 are rounding (8 mantissa bits: near a log-probability of -12 one step",
        "is 0.06). With float32 weights at the same shapes and setting the paths agree: "
        f"teacher log-probabilities within {t32['max_abs_logp_diff']:.1e} (shared {t32['speedup']:.2f}x faster), "
        f"student loss within {s32['loss_abs_diff']:.1e} and gradients within {s32['grad_rel_diff']:.1e} relative "
        f"(shared {s32['speedup']:.2f}x faster); the float32 CPU tests pin both paths to 1e-5 on the tiny models.",
        "",
        "### (a) Optimizer step",
        "",
        f"{settings['prompts']} prompts x G = {settings['num_generations']}, {settings['completion_length']}-token "
        f"completions, {settings['image_side']} px images (student prompt {gpu['prompt']['student_prompt']} tokens); "
        f"median of {settings['steps'] - 1} steps after the first, each between CUDA synchronisations. Phases are "
        "seconds per step inside `model.generate`, `replay_teacher` and `_compute_loss` (TRL's trainer scores its",
        "teacher inside `_compute_loss`); the rest is backward, the optimizer and data handling.",
        "",
        "| Trainer | Step (s) | generate | teacher views | compute loss | rest | V-Zero / this | step / ideal | "
        "peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    vzero = step["vzero"]["median_step_s"]
    for name, row in step.items():
        phases = row["phase_s"]
        rest = row["median_step_s"] - sum(phases.values())
        lines.append(
            f"| `{name}` | {row['median_step_s']:.1f} | {phases['generate']:.1f} | "
            f"{phases.get('score_teacher_views', 0.0):.1f} | {phases['compute_loss']:.1f} | {rest:.1f} | "
            f"{vzero / row['median_step_s']:.2f} | {row['over_ideal']:.0f}x | {row['peak_memory_gib']} |"
        )
    flops = {key: float(value) for key, value in ideal["flops"].items()}
    trained_ideal_s = (flops["student_train"] + flops["teacher"]) / (ideal["peak_tflops"] * 1e12)
    without_generation = {name: row["median_step_s"] - row["phase_s"]["generate"] for name, row in step.items()}
    lines += [
        "",
        f"FLOP-bound ideal of this step at {ideal['peak_tflops']:.0f} TFLOP/s: **{ideal['ideal_s']:.2f} s** (rollout "
        f"{flops['rollout']:.2e}, student training {flops['student_train']:.2e}, teacher {flops['teacher']:.2e} FLOPs; "
        "2N per forward token and 6N per trained token with the prefix shared, vision tower included, quadratic "
        "attention left out; performance.md section 4.2).",
        f"Generation through transformers' `generate` (no vLLM, PyTorch Gated-DeltaNet code) is "
        f"{step['vzero']['phase_s']['generate']:.1f} s of V-Zero's {vzero:.1f} s; without it the step takes "
        f"{without_generation['vzero']:.1f} s against an ideal of {trained_ideal_s:.2f} s for its student training "
        f"and teacher scoring ({without_generation['vzero'] / trained_ideal_s:.0f}x), and "
        f"{without_generation['trl_distillation']:.1f} s for TRL's trainer, "
        f"{without_generation['vzero_naive']:.1f} s for V-Zero without prefix sharing.",
        f"V-Zero / plain OPD: **{gpu['vzero_over_opd_crop']:.2f}** against the same trainer with the gate off "
        f"({without_generation['vzero'] / without_generation['opd_crop']:.2f} without generation, whose time varies "
        f"by seconds between runs), **{gpu['vzero_over_trl_distillation']:.2f}** against TRL's trainer.",
        "",
    ]
    return "\n".join(lines)


def learning_report() -> str:
    """The learning benchmark: the miniature reproduction's paired table over cells, when present."""
    path = RESULTS / "mini" / "results.json"
    if not path.is_file():
        return "## (d) Learning\n\nNot measured yet: run `make reproduce` and copy its results into `results/mini/`.\n"
    results = json.loads(path.read_text())
    machine = results["machine"]
    intro = (
        "## (d) Learning: the miniature reproduction (`scripts/reproduce_mini.py --full`, `vzero_trl.mini`)\n\n"
        "Cells are (trained pair, run seed); every variant of a cell starts from the same student with the same\n"
        "prompts and sampling seed. p(gold) (held-out probability of the reference answer) and greedy accuracy in %,\n"
        "mean ± 95% Student-t interval over cells, and each variant minus plain OPD in the same cell. Measured on\n"
        f"{machine['cpu']} ({machine['cores']} cores, torch {machine['torch']}). Settings, pilot and pictures:\n"
        "`results/mini/` and the README's miniature reproduction.\n\n"
    )
    return intro + pairs_table(results["summary"]) + "\n" + markdown_table(results["summary"])


def main():
    parser = argparse.ArgumentParser(description="Run the CPU benchmarks and write benchmarks/RESULTS.md.")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="Rerun these parts; reuse the others' JSON."
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    # When and where each part was measured (file times do not survive a git checkout).
    measured_path = RESULTS / "measured.json"
    measured = json.loads(measured_path.read_text()) if measured_path.is_file() else {}
    results = {}
    for part in PARTS:
        if part in args.only:
            results[part] = run(part)
            measured[part] = {"date": str(date.today()), "machine": machine()}
        else:
            results[part] = json.loads((RESULTS / f"{part}.json").read_text())
    measured_path.write_text(json.dumps(measured, indent=2) + "\n")
    when = "; ".join(
        f"{part}: {measured.get(part, {}).get('date', 'an earlier run')} on "
        f"{measured.get(part, {}).get('machine', 'an unrecorded machine')}"
        for part in PARTS
    )
    text = report(*(results[part] for part in PARTS))
    text = text.replace("Reproduce with `make bench`.", f"Parts measured: {when}.\nReproduce with `make bench`.", 1)
    (HERE / "RESULTS.md").write_text(text + "\n" + learning_report())
    print((HERE / "RESULTS.md").read_text())


PARTS = ("step_time", "teacher_scoring", "student_scoring", "logprob_memory")


if __name__ == "__main__":
    main()
