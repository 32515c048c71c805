"""The paper's Table 2 in miniature, as paired comparisons over cells: V-Zero against plain on-policy distillation.

A **cell** is one `(pair seed, run seed)`: the pair seed draws a trained teacher and student ([`pretrain.ensure_pair`];
on another CPU the same seed draws another pair, so pairs are part of the randomness), the run seed draws one
distillation run (prompt order and sampling). In a cell every variant starts from the same student, with the same
prompts and the same sampling seed, and trains with the unmodified [`VZeroTrainer`]; the variants differ only in the
config fields of `VARIANTS`. Each variant is reported by its mean over cells and by its paired difference against
plain on-policy distillation (`no_gate`), with 95% intervals ([`stats`]). The primary measure is p(gold), the
held-out probability of the reference answer under teacher forcing; greedy accuracy is secondary.

[`RecordingTrainer`] only records each training rollout's gate and correctness (answers are read only to measure), and
a callback measures p(gold) every `eval_every` steps. [`pilot`] chooses each world's learning rate by a stated rule on
pilot cells that the reported table does not use; [`reproduce`] runs the grid in parallel worker processes, keeps each
finished run as a JSON file (a rerun with the same settings reuses it, so the grid can grow across sittings; with other
settings it is refused) and writes `results.json`, `results.md` and the pictures.
"""

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from ..config import VZeroConfig
from ..processing import load_processor
from ..provenance import machine, setting_differences
from ..quiet import silence_unactionable_warnings
from .measure import evaluate_view, gate_diagnostics
from .pretrain import WORLD_PAIRS, PairSpec, ensure_pair, pair_dir
from .recording import RecordingTrainer
from .stats import interval, paired_difference, plus_minus
from .variants import BASELINE, CORE_VARIANTS, LABELS, VARIANTS
from .world import WORLDS, World, make_dataset, make_rows


@dataclass(frozen=True)
class RunSettings:
    """On-policy distillation settings shared by every variant and cell of one world."""

    steps: int = 60
    learning_rate: float = 3e-4
    prompts_per_step: int = 16
    num_generations: int = 4
    max_completion_length: int = 16
    eval_every: int = 20


# Chosen by the pilot rule ([`choose_learning_rate`]) on pilot pairs 100 and 101 (README, "How the settings were
# chosen"; raw pilot numbers in benchmarks/results/mini/pilot/). Steps and batch are fixed by the budget.
WORLD_SETTINGS: dict[World, RunSettings] = {
    "letter": RunSettings(learning_rate=1e-4),
    "drift": RunSettings(learning_rate=1e-4, max_completion_length=24),
    "prior": RunSettings(learning_rate=1e-3),
}
PILOT_PAIRS = (100, 101)
PILOT_LEARNING_RATES = (1e-4, 3e-4, 1e-3)


@dataclass(frozen=True)
class Job:
    world: World
    variant: str
    pair: PairSpec
    run_seed: int
    settings: RunSettings
    teacher: str
    student: str
    before: dict
    output_dir: str


class HeldOutCurve(TrainerCallback):
    """Held-out p(gold) every `every` steps; at the last step also greedy accuracy."""

    def __init__(self, processor, rows: list[dict], world: World, every: int):
        self.processor, self.rows, self.world, self.every = processor, rows, world, every
        self.points: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step == state.max_steps
        if state.global_step % self.every == 0 or last:
            metrics = evaluate_view(model, self.processor, self.rows, "student", self.world, greedy=last)
            self.points.append({"step": state.global_step, **metrics})
            model.train()


def run_one(job: Job) -> dict:
    """Train one (world, variant, cell) from the cell's trained student; return its measurements."""
    torch.set_num_threads(1)
    silence_unactionable_warnings()
    hf_logging.set_verbosity_error()  # worker processes share one terminal: the progress bar over runs reports
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    s = job.settings
    processor = load_processor(job.student, padding_side="left")
    args = VZeroConfig(
        output_dir=job.output_dir,
        max_steps=s.steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        num_generations=s.num_generations,
        per_device_train_batch_size=s.prompts_per_step * s.num_generations,
        max_completion_length=s.max_completion_length,
        **{"loss_type": "sampled_token", "loss_aggregation": "sequence", **VARIANTS[job.variant]},
        seed=job.run_seed,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
        teacher_model_init_kwargs={"dtype": "float32"},
    )
    eval_rows = make_rows(job.pair.num_eval_rows, seed=job.pair.seed, split="eval")
    curve = HeldOutCurve(processor, eval_rows, job.world, s.eval_every)
    curve.points.append({"step": 0, **job.before})
    trainer = RecordingTrainer(
        model=job.student,
        teacher_model=job.teacher if args.teacher_source == "external" else None,
        args=args,
        train_dataset=make_dataset(s.steps * s.prompts_per_step, seed=job.pair.seed, split="opd"),
        processing_class=processor,
        callbacks=[curve],
    )
    trainer.remove_callback(PrinterCallback)  # runs share one terminal: the progress bar over runs reports instead
    trainer.train()
    rollouts = trainer.rollouts
    gates = gate_diagnostics(
        [r["gate"] for r in rollouts], [r["correct"] for r in rollouts], [r["group"] for r in rollouts]
    )
    return {
        "world": job.world,
        "variant": job.variant,
        "pair_seed": job.pair.seed,
        "run_seed": job.run_seed,
        "learning_rate": s.learning_rate,
        "before": job.before,
        "after": curve.points[-1],
        "curve": curve.points,
        "gates": gates,
        "gate_values": {
            "correct": [round(r["gate"], 3) for r in rollouts if r["correct"]],
            "wrong": [round(r["gate"], 3) for r in rollouts if not r["correct"]],
        },
        "seconds": time.perf_counter() - start,
    }


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def world_settings(world: World, settings: RunSettings | None = None) -> dict:
    """What a world's runs depend on besides the cell, flattened to dotted names (JSON types), for reuse checks."""
    pair = asdict(WORLD_PAIRS[world])
    pair.pop("seed")
    record = {"pair": pair, "run": asdict(settings or WORLD_SETTINGS[world])}
    return _flat(json.loads(json.dumps(record)))


def _check_settings(output_dir: Path, worlds, requested: dict, overwrite: bool, runs_dir: str) -> None:
    """Refuse (or with `overwrite` discard) finished runs in `output_dir/runs_dir` made with other settings."""
    path = output_dir / runs_dir / "settings.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    for world in worlds:
        differences = setting_differences(stored.get(world, requested[world]), requested[world])
        if differences and not overwrite:
            raise ValueError(
                f"{output_dir} holds {world}-world runs made with other settings ({'; '.join(differences)}). Use "
                "another output directory, or pass --overwrite to discard them."
            )
        if differences:
            for run in (output_dir / runs_dir / world).rglob("*.json"):
                run.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**stored, **requested}, indent=2))


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _execute(pool, cache_dir: Path, planned: list[tuple[Path, World, str, int, int, RunSettings]], desc: str):
    """Build the pairs that `planned` needs, then run what is not on disk yet; return every planned run."""
    pairs = {(world, pair_seed) for _, world, _, pair_seed, _, _ in planned}
    built = {}
    futures = {}
    for world, pair_seed in sorted(pairs):
        pair = replace(WORLD_PAIRS[world], seed=pair_seed)
        futures[pool.submit(ensure_pair, pair_dir(cache_dir, pair), pair, None)] = (world, pair_seed)
    for future in tqdm(as_completed(futures), total=len(futures), desc="trained pairs (teacher, student)"):
        built[futures[future]] = future.result()
    runs, jobs = {}, {}
    for path, world, variant, pair_seed, run_seed, settings in planned:
        if path.is_file():
            runs[path] = json.loads(path.read_text())
            continue
        teacher, student, record = built[(world, pair_seed)]
        pair = replace(WORLD_PAIRS[world], seed=pair_seed)
        before = record["student"]["student"]
        job = Job(
            world, variant, pair, run_seed, settings, str(teacher), str(student), before, str(path.with_suffix(""))
        )
        jobs[pool.submit(run_one, job)] = path
    for future in tqdm(as_completed(jobs), total=len(jobs), desc=desc):
        runs[jobs[future]] = future.result()
        _write_json(jobs[future], runs[jobs[future]])
    return [runs[path] for path, *_ in planned], {key: value[2] for key, value in built.items()}


def choose_learning_rate(runs: list[dict]) -> dict:
    """
    The pilot rule: plain OPD's learning rate, chosen on pilot cells only, the same for every variant.

    For each learning rate, the mean over pilot cells of plain OPD's held-out p(gold) at each check. Among the rates
    whose mean rises at every check, take the one with the largest lower bound `mean gain - sd of the gain across
    cells` at the last check (a gain that holds across cells, not a lucky one); if none rises at every check, the one
    with the largest mean final gain.

    Returns:
        `dict`: `learning_rate` (chosen), `rising` (the rates whose mean rises at every check) and `by_rate` (per rate:
        the mean curve, the final gains per cell, their mean and sd).
    """
    by_rate = {}
    for lr in sorted({run["learning_rate"] for run in runs}):
        chosen = [run for run in runs if run["learning_rate"] == lr]
        curve = [
            interval([run["curve"][i]["p_gold"] for run in chosen])["mean"] for i in range(len(chosen[0]["curve"]))
        ]
        gains = [run["after"]["p_gold"] - run["before"]["p_gold"] for run in chosen]
        stat = interval(gains)
        by_rate[lr] = {
            "curve": curve,
            "gains": gains,
            "gain_mean": stat["mean"],
            "gain_sd": 0.0 if stat["n"] < 2 else stat["sd"],
            "rises_every_check": all(b > a for a, b in zip(curve[:-1], curve[1:], strict=True)),
        }
    rising = [lr for lr, entry in by_rate.items() if entry["rises_every_check"]]
    if rising:
        lr = max(rising, key=lambda r: by_rate[r]["gain_mean"] - by_rate[r]["gain_sd"])
    else:
        lr = max(by_rate, key=lambda r: by_rate[r]["gain_mean"])
    return {"learning_rate": lr, "rising": rising, "by_rate": {str(k): v for k, v in by_rate.items()}}


def pilot(
    output_dir: str | Path,
    worlds: tuple[World, ...] = WORLDS,
    pair_seeds: tuple[int, ...] = PILOT_PAIRS,
    learning_rates: tuple[float, ...] = PILOT_LEARNING_RATES,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """
    Run plain OPD on the pilot cells `(pair seed, 0)` at each learning rate and apply [`choose_learning_rate`] per
    world. Writes `pilot.json` and `pilot.md` into `output_dir` (runs in `output_dir/pilot/`) and returns, per world,
    the rule's result. The pilot pairs must not be reported cells.
    """
    output_dir = Path(output_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else output_dir / "models"
    requested = {
        world: {k: v for k, v in world_settings(world).items() if k != "run.learning_rate"} for world in worlds
    }
    _check_settings(output_dir, worlds, requested, overwrite, "pilot")
    planned = [
        (
            output_dir / "pilot" / world / f"lr{lr:g}" / f"pair{pair_seed}-seed0.json",
            world,
            BASELINE,
            pair_seed,
            0,
            replace(WORLD_SETTINGS[world], learning_rate=lr),
        )
        for world in worlds
        for lr in learning_rates
        for pair_seed in pair_seeds
    ]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        runs, _ = _execute(pool, cache_dir, planned, "pilot runs")
    result = {world: choose_learning_rate([r for r in runs if r["world"] == world]) for world in worlds}
    result["machine"] = machine()
    (output_dir / "pilot.json").write_text(json.dumps(result, indent=2))
    lines = ["| World | Learning rate | Mean p(gold) at each check | Gain per pilot cell | Rises at every check |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for world in worlds:
        for lr, e in result[world]["by_rate"].items():
            mark = " (chosen)" if float(lr) == result[world]["learning_rate"] else ""
            lines.append(
                f"| {world} | {float(lr):g}{mark} | {' -> '.join(f'{100 * p:.1f}' for p in e['curve'])} | "
                f"{', '.join(f'{100 * g:+.1f}' for g in e['gains'])} | {'yes' if e['rises_every_check'] else 'no'} |"
            )
    (output_dir / "pilot.md").write_text("\n".join(lines) + "\n")
    return result


def plan(
    worlds: tuple[World, ...], variants: tuple[str, ...], pair_seeds: tuple[int, ...], run_seeds: tuple[int, ...]
) -> list[tuple[World, str, int, int]]:
    """The (world, variant, pair seed, run seed) runs of a grid: core variants in every cell, the others in the cells
    of the first run seed."""
    return [
        (world, variant, pair_seed, run_seed)
        for world in worlds
        for pair_seed in pair_seeds
        for run_seed in run_seeds
        for variant in variants
        if variant in CORE_VARIANTS or run_seed == run_seeds[0]
    ]


def summarize(runs: list[dict], pairs: dict[tuple[str, int], dict]) -> dict:
    """
    Per world: the pairs (teacher and student accuracies, the world's condition, over pair seeds) and per variant its
    means over cells and its paired differences against `BASELINE`, for p(gold), log p(gold) and greedy accuracy.
    """
    summary: dict[str, Any] = {}
    for world in dict.fromkeys(run["world"] for run in runs):
        records = [record for (w, _), record in sorted(pairs.items()) if w == world]
        entry: dict[str, Any] = {"pairs": len(records)}
        for view in ("crop", "negative_crop", "random_crop"):
            entry[f"teacher_{view}_accuracy"] = interval([r["teacher"][view]["accuracy"] for r in records])
        for metric in ("accuracy", "p_gold"):
            entry[f"student_{metric}"] = interval([r["student"]["student"][metric] for r in records])
        if "condition" in records[0]:
            entry["condition"] = {k: interval([r["condition"][k] for r in records]) for k in records[0]["condition"]}
        in_world = [run for run in runs if run["world"] == world]
        measured = {
            variant: {(r["pair_seed"], r["run_seed"]): r for r in in_world if r["variant"] == variant}
            for variant in dict.fromkeys(run["variant"] for run in in_world)
        }
        base = measured.get(BASELINE, {})
        for variant, cells in measured.items():
            e: dict[str, Any] = {"cells": [f"{p}/{s}" for p, s in cells]}
            for metric in ("p_gold", "log_p_gold", "accuracy"):
                after = {cell: run["after"][metric] for cell, run in cells.items()}
                gain = {cell: run["after"][metric] - run["before"][metric] for cell, run in cells.items()}
                e[metric] = interval(list(after.values()))
                e[f"{metric}_gain"] = interval(list(gain.values()))
                if variant != BASELINE and base:
                    e[f"{metric}_vs_baseline"] = paired_difference(
                        after, {cell: run["after"][metric] for cell, run in base.items()}
                    )
            for metric in ("gate_correct", "gate_wrong", "gate_auc", "mixed_group_frac", "rollout_accuracy"):
                e[metric] = interval([run["gates"][metric] for run in cells.values()])
            e["gate_gap"] = interval(
                [run["gates"]["gate_correct"] - run["gates"]["gate_wrong"] for run in cells.values()]
            )
            first = next(iter(cells.values()))
            e["curve_p_gold"] = {
                point["step"]: interval([run["curve"][i]["p_gold"] for run in cells.values()])["mean"]
                for i, point in enumerate(first["curve"])
            }
            e["minutes_per_run"] = sum(run["seconds"] for run in cells.values()) / len(cells) / 60
            entry[variant] = e
        summary[world] = entry
    return summary


def _points(stat: dict, scale: float = 100, digits: int = 1, sign: bool = False) -> str:
    return plus_minus(stat, scale, digits, sign)  # the tables' default: percentage points, one decimal


def markdown_table(summary: dict) -> str:
    """
    The paired table: per world and variant, p(gold) and greedy accuracy after training (mean ± 95% interval over
    cells) and each one's paired difference against plain OPD (over cells, and over pairs), with the gate's AUC.
    """
    lines = [
        "| World | Variant | Cells | p(gold) after | p(gold) gain | Δ p(gold) vs plain OPD (cells) | Δ p(gold) (pairs) "
        "| Accuracy after | Δ accuracy vs plain OPD | Gate AUC (within group) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for world, entry in summary.items():
        for variant in VARIANTS:
            if variant not in entry:
                continue
            e = entry[variant]
            vs = e.get("p_gold_vs_baseline")
            acc_vs = e.get("accuracy_vs_baseline")
            gated = VARIANTS[variant]["evidence_alpha"] > 0
            lines.append(
                f"| {world} | {LABELS[variant]} | {len(e['cells'])} | {_points(e['p_gold'])} | "
                f"{_points(e['p_gold_gain'], sign=True)} | "
                + (
                    f"{_points(vs, sign=True)} | {_points(vs['by_pair'], sign=True)} (n={vs['by_pair']['n']}) | "
                    if vs
                    else "— | — | "
                )
                + f"{_points(e['accuracy'])} | "
                + (f"{_points(acc_vs, sign=True)} | " if acc_vs else "— | ")
                + (f"{_points(e['gate_auc'], 1, 2)} |" if gated else "n/a (no gate) |")
            )
    return "\n".join(lines) + "\n"


def pairs_table(summary: dict) -> str:
    """The trained pairs per world, mean ± 95% interval over pair seeds: what the teacher and the student start from."""
    lines = [
        "| World | Pairs | Teacher, positive crop | Teacher, negative crop | Teacher, random crop | Student accuracy | "
        "Student p(gold) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for world, e in summary.items():
        lines.append(
            f"| {world} | {e['pairs']} | {_points(e['teacher_crop_accuracy'])} | {_points(e['teacher_negative_crop_accuracy'])} "
            f"| {_points(e['teacher_random_crop_accuracy'])} | {_points(e['student_accuracy'])} | {_points(e['student_p_gold'])} |"
        )
    return "\n".join(lines) + "\n"


def condition_table(summary: dict) -> str:
    """The drift and prior worlds' conditions (see `measure.drift_condition`, `measure.prior_condition`)."""
    lines = ["| World | Measure | Mean ± 95% interval over pairs |", "| --- | --- | --- |"]
    for world, e in summary.items():
        for name, stat in e.get("condition", {}).items():
            lines.append(f"| {world} | {name} | {_points(stat, 1, 3)} |")
    return "\n".join(lines) + "\n"


def demo_reference(results: dict) -> dict:
    """
    What `make demo` prints beside its own run: the letter world's V-Zero cells of a reproduction's `results.json`
    (the same pair settings, run settings and variant as the demo), with the machine they were measured on.
    """
    entry = results["summary"]["letter"]
    vzero = entry["vzero"]
    return {
        "machine": results["machine"],
        "settings": results["settings"]["letter"],
        "cells": len(vzero["cells"]),
        "pairs": entry["pairs"],
        "student_p_gold": entry["student_p_gold"],
        "student_accuracy": entry["student_accuracy"],
        "p_gold": vzero["p_gold"],
        "p_gold_gain": vzero["p_gold_gain"],
        "accuracy": vzero["accuracy"],
        "accuracy_gain": vzero["accuracy_gain"],
        "gate_auc": vzero["gate_auc"],
        "p_gold_vs_baseline": {k: v for k, v in vzero["p_gold_vs_baseline"].items() if k != "cells"},
        "gate_gap": vzero["gate_gap"],
        "learning_check": learning_check_thresholds(vzero),
    }


# How far below the cells' mean the learning check's thresholds sit, in standard deviations over cells.
CHECK_SDS = 3.0


def learning_check_thresholds(entry: dict) -> dict:
    """
    The learning check's thresholds from the spread of one variant's cells (`summarize`'s entry): for the p(gold)
    gain, the gate's within-group AUC and the gate gap (mean gate of correct minus wrong rollouts), the cells' mean
    minus `CHECK_SDS` standard deviations. A run on a pair drawn by another CPU is one more cell, so it falls below
    with a probability of about 0.1% per measure if cells are roughly normal; a broken gate or teacher falls far below.
    """
    return {
        f"min_{name}": entry[name]["mean"] - CHECK_SDS * entry[name]["sd"]
        for name in ("p_gold_gain", "gate_auc", "gate_gap")
    }


def reproduce(
    output_dir: str | Path,
    worlds: tuple[World, ...] = ("letter",),
    variants: tuple[str, ...] = CORE_VARIANTS,
    pair_seeds: tuple[int, ...] = (0, 1),
    run_seeds: tuple[int, ...] = (0,),
    workers: int = 2,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    run_missing: bool = True,
    learning_rate: float | None = None,
) -> dict:
    """
    Run the grid of cells `pair_seeds x run_seeds` and write `results.json`, `results.md` and the pictures.

    Args:
        output_dir: Folder of the results; finished runs are kept in `output_dir/runs/<world>/pair<P>-seed<S>/` and
            reused by a rerun with the same settings, so a grid can grow across sittings. A rerun whose world
            settings differ is refused (or, with `overwrite`, discards them).
        worlds: Toy worlds (`letter`, `drift`, `prior`).
        variants: Keys of `VARIANTS`; those in `CORE_VARIANTS` run in every cell, the others in the cells of the first
            run seed. `no_gate` is the baseline of the paired differences.
        pair_seeds: Seeds of the trained pairs (the pilot's pairs, `PILOT_PAIRS`, are refused).
        run_seeds: Seeds of the distillation runs.
        workers: Parallel worker processes, one CPU thread each.
        cache_dir: Where trained pairs are kept (default `output_dir/models`).
        run_missing: With `False`, report the grid's finished runs only and list the missing ones in `results.json`
            (`missing`) and `results.md`: a grid that grows across sittings is reported as it stands.
        learning_rate: Replaces the rule's learning rate of every world (a sensitivity run: keep it in its own
            `output_dir`, which then refuses runs at another rate); no `reference.json` is written.
    """
    output_dir = Path(output_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else output_dir / "models"
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown variant(s) {unknown}; choose from {list(VARIANTS)}.")
    reused = sorted(set(pair_seeds) & set(PILOT_PAIRS))
    if reused:
        raise ValueError(f"Pair seeds {reused} chose the learning rate (the pilot); report other pair seeds.")
    run_settings = {world: WORLD_SETTINGS[world] for world in worlds}
    if learning_rate is not None:
        run_settings = {
            world: replace(settings, learning_rate=learning_rate) for world, settings in run_settings.items()
        }
    requested = {world: world_settings(world, run_settings[world]) for world in worlds}
    _check_settings(output_dir, worlds, requested, overwrite, "runs")
    planned = [
        (
            output_dir / "runs" / world / f"pair{pair_seed}-seed{run_seed}" / f"{variant}.json",
            world,
            variant,
            pair_seed,
            run_seed,
            run_settings[world],
        )
        for world, variant, pair_seed, run_seed in plan(worlds, variants, pair_seeds, run_seeds)
    ]
    missing = (
        [] if run_missing else [f"{w}/pair{p}-seed{r}/{v}" for path, w, v, p, r, _ in planned if not path.is_file()]
    )
    planned = [entry for entry in planned if run_missing or entry[0].is_file()]
    if not planned:
        raise ValueError(f"No finished run of this grid in {output_dir / 'runs'}; run it first (without --report).")
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        runs, pairs = _execute(pool, cache_dir, planned, "distillation runs")
    summary = summarize(runs, pairs)
    results = {"machine": machine(), "settings": requested, "summary": summary, "missing": missing}
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    if learning_rate is None and "vzero" in summary.get("letter", {}) and BASELINE in summary["letter"]:
        (output_dir / "reference.json").write_text(json.dumps(demo_reference(results), indent=2))
    (output_dir / "results.md").write_text(
        "Trained pairs (held-out greedy accuracy, %):\n\n"
        + pairs_table(summary)
        + "\nConditions:\n\n"
        + condition_table(summary)
        + "\nPaired table (%; mean ± 95% t-interval):\n\n"
        + markdown_table(summary)
        + (f"\nNot run yet ({len(missing)}): {', '.join(missing)}\n" if missing else "")
    )
    from .pictures import draw_pictures

    draw_pictures(summary, runs, output_dir)
    return summary
