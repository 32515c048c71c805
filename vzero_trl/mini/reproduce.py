"""The paper's Table 2 in miniature: V-Zero, no gate and random evidence, from one trained student, over seeds.

Every run starts from the same trained student and teacher of its world ([`pretrain.ensure_pair`]) and trains with the
unmodified [`VZeroTrainer`] on fresh, unlabelled prompts of the toy world; the variants differ only in the config fields
the paper's ablation changes. [`RecordingTrainer`] adds nothing to training: it keeps each rollout's gate and whether
its parsed answer is correct (the answers are read only here, never by training), for the gate's diagnostics. A
callback measures held-out greedy accuracy and the probability of the reference answer along the way.

[`reproduce`] runs every (world, variant, seed) in parallel worker processes, one thread each, keeps each finished run
as a JSON file (a rerun with the same settings skips it; with other settings it is refused), and writes `results.json`,
`results.md` and three pictures.
"""

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from ..config import VZeroConfig
from ..processing import load_processor
from ..quiet import silence_unactionable_warnings
from ..trainer import VZeroTrainer
from .measure import evaluate_view, gate_diagnostics
from .pretrain import PairSpec, ensure_pair, pair_dir
from .world import WORLDS, World, make_dataset, make_rows, parse_answer


# The paper's Table 2 variants as VZeroConfig overrides (the paper: alpha = 1, w in [0, 2]).
VARIANTS: dict[str, dict[str, Any]] = {
    "vzero": {"evidence_alpha": 1.0},
    "no_gate": {"evidence_alpha": 0.0},
    "random_evidence": {"evidence_alpha": 1.0, "crop_column": "random_crop"},
    # Siblings (README, "Choosing a teacher source and view"); not in the default run, which fits 25 minutes.
    "self_frozen": {"evidence_alpha": 1.0, "teacher_source": "frozen"},
    "vision_opd": {
        "evidence_alpha": 0.0,
        "teacher_source": "ema",
        "teacher_ema_rate": 0.05,
        "teacher_view": "crop_only",
        "loss_type": "full_reverse_kl",
        "beta": 0.5,
        "loss_top_k": 100,
        "loss_aggregation": "token",
    },
}
TABLE2_VARIANTS = ("vzero", "no_gate", "random_evidence")
LABELS = {
    "vzero": "V-Zero (alpha 1)",
    "no_gate": "No gate (alpha 0)",
    "random_evidence": "Random evidence",
    "self_frozen": "V-Zero, frozen self-teacher",
    "vision_opd": "Vision-OPD (EMA, crop only, JSD top-100)",
}
# Two-sided 95% Student-t quantiles by degrees of freedom, for intervals over a handful of seeds.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


@dataclass(frozen=True)
class RunSettings:
    """On-policy distillation settings shared by every variant of one world (what `make reproduce` runs)."""

    steps: int = 120
    learning_rate: float = 3e-4
    prompts_per_step: int = 16
    num_generations: int = 4
    max_completion_length: int = 16
    eval_every: int = 40
    num_eval_rows: int = 400


# Chosen per world with the same budget for every variant (see the README's miniature reproduction).
WORLD_SETTINGS: dict[World, RunSettings] = {
    "letter": RunSettings(),
    "chain": RunSettings(max_completion_length=24),
}


@dataclass(frozen=True)
class Job:
    world: World
    variant: str
    seed: int
    settings: RunSettings
    pair: PairSpec
    teacher: str
    student: str
    output_dir: str


class RecordingTrainer(VZeroTrainer):
    """[`VZeroTrainer`] that also keeps, per training rollout, its step, group, gate and answer correctness."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollouts: list[dict] = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
            gates = output["evidence_weights"].tolist()
            groups = output["group_index"].tolist()
            step = self.state.global_step
            for row, text, gate, group in zip(inputs, texts, gates, groups, strict=True):
                self.rollouts.append(
                    {
                        "step": step,
                        "group": step * 1000 + group,
                        "gate": gate,
                        "correct": parse_answer(text) == row["answer"],
                    }
                )
        return output


class HeldOutCurve(TrainerCallback):
    """Held-out greedy accuracy and reference probability every `every` steps (and at the last step)."""

    def __init__(self, processor, rows: list[dict], world: World, every: int):
        self.processor, self.rows, self.world, self.every = processor, rows, world, every
        self.points: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            metrics = evaluate_view(model, self.processor, self.rows, "student", self.world)
            self.points.append({"step": state.global_step, **metrics})
            model.train()


def run_one(job: Job) -> dict:
    """Train one (world, variant, seed) from the trained student; return its measurements."""
    torch.set_num_threads(1)
    silence_unactionable_warnings()
    hf_logging.set_verbosity_error()  # worker processes share one terminal: the progress bar over runs reports
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    s = job.settings
    processor = load_processor(job.student, padding_side="left")
    eval_rows = make_rows(s.num_eval_rows, seed=job.pair.seed, split="eval")
    before = evaluate_view(
        AutoModelForImageTextToText.from_pretrained(job.student, dtype=torch.float32),
        processor,
        eval_rows,
        "student",
        job.world,
    )
    args = VZeroConfig(
        output_dir=job.output_dir,
        max_steps=s.steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        num_generations=s.num_generations,
        per_device_train_batch_size=s.prompts_per_step * s.num_generations,
        max_completion_length=s.max_completion_length,
        **{"loss_type": "sampled_token", "loss_aggregation": "sequence", **VARIANTS[job.variant]},
        seed=job.seed,
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
    curve = HeldOutCurve(processor, eval_rows, job.world, s.eval_every)
    curve.points.append({"step": 0, **before})
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
        "seed": job.seed,
        "before": before,
        "after": curve.points[-1],
        "curve": curve.points,
        "gates": gates,
        "gate_values": {
            "correct": [round(r["gate"], 4) for r in rollouts if r["correct"]],
            "wrong": [round(r["gate"], 4) for r in rollouts if not r["correct"]],
        },
        "seconds": time.perf_counter() - start,
    }


def interval(values: list[float]) -> dict:
    """Mean and 95% Student-t interval half-width over seeds (`nan` half-width for one value)."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "ci95": math.nan, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "ci95": math.nan, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": T_975.get(n - 1, 1.96) * sd / math.sqrt(n), "n": n}


def summarize(runs: list[dict], pairs: dict[str, dict]) -> dict:
    """Per world and variant: before/after accuracy and reference probability, and gate diagnostics, over seeds."""
    summary: dict[str, Any] = {}
    for world in dict.fromkeys(run["world"] for run in runs):
        summary[world] = {"teacher": pairs[world]["teacher"], "student": pairs[world]["student"]["student"]}
        for variant in dict.fromkeys(run["variant"] for run in runs if run["world"] == world):
            chosen = [run for run in runs if run["world"] == world and run["variant"] == variant]
            entry = {"seeds": [run["seed"] for run in chosen]}
            for when in ("before", "after"):
                for metric in ("accuracy", "p_gold", "format"):
                    entry[f"{metric}_{when}"] = interval([run[when][metric] for run in chosen])
            for metric in ("gate_correct", "gate_wrong", "gate_auc", "mixed_group_frac", "rollout_accuracy"):
                entry[metric] = interval([run["gates"][metric] for run in chosen])
            for metric, key in (("accuracy", "curve"), ("p_gold", "curve_p_gold")):
                entry[key] = {
                    point["step"]: interval([run["curve"][i][metric] for run in chosen])
                    for i, point in enumerate(chosen[0]["curve"])
                }
            entry["minutes_per_run"] = sum(run["seconds"] for run in chosen) / len(chosen) / 60
            summary[world][variant] = entry
    return summary


def _cell(stat: dict, percent: bool = True) -> str:
    scale = 100 if percent else 1
    if math.isnan(stat["mean"]):
        return "n/a"
    if math.isnan(stat["ci95"]) or stat["ci95"] == 0:  # one seed, or the same value for every seed
        return f"{scale * stat['mean']:.1f}" if percent else f"{stat['mean']:.2f}"
    if percent:
        return f"{scale * stat['mean']:.1f} ± {scale * stat['ci95']:.1f}"
    return f"{stat['mean']:.2f} ± {stat['ci95']:.2f}"


def markdown_table(summary: dict) -> str:
    """The results as a markdown table: accuracy and p(gold) in percent, mean ± 95% interval over seeds."""
    lines = [
        "| World | Variant | Accuracy before | Accuracy after | p(gold) before | p(gold) after | Gate, correct "
        "rollouts | Gate, wrong rollouts | Gate AUC (within group) | Mixed groups | Seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for world, entries in summary.items():
        for variant, e in entries.items():
            if variant in ("teacher", "student"):
                continue
            gated = VARIANTS[variant]["evidence_alpha"] > 0
            lines.append(
                f"| {world} | {LABELS[variant]} | {_cell(e['accuracy_before'])} | {_cell(e['accuracy_after'])} | "
                f"{_cell(e['p_gold_before'])} | {_cell(e['p_gold_after'])} | "
                + (
                    f"{_cell(e['gate_correct'], False)} | {_cell(e['gate_wrong'], False)} | "
                    f"{_cell(e['gate_auc'], False)} | "
                    if gated
                    else "1 | 1 | n/a (no gate) | "
                )
                + f"{_cell(e['mixed_group_frac'])} | {len(e['seeds'])} |"
            )
    return "\n".join(lines) + "\n"


def draw_pictures(summary: dict, runs: list[dict], output_dir: Path) -> list[Path]:
    """`accuracy.png` (after accuracy per variant with 95% intervals and seeds), `curves.png` (held-out accuracy over
    training steps) and `gates.png` (gates of correct and wrong rollouts, V-Zero, all seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(summary)
    colors = {
        "vzero": "tab:blue",
        "no_gate": "tab:orange",
        "random_evidence": "tab:gray",
        "self_frozen": "tab:purple",
        "vision_opd": "tab:green",
    }
    paths = []

    fig, axes = plt.subplots(1, len(worlds), figsize=(5.2 * len(worlds), 4), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        variants = [v for v in summary[world] if v in VARIANTS]
        for i, variant in enumerate(variants):
            e = summary[world][variant]
            ci = 0 if math.isnan(e["accuracy_after"]["ci95"]) else 100 * e["accuracy_after"]["ci95"]
            ax.bar(i, 100 * e["accuracy_after"]["mean"], yerr=ci, capsize=6, color=colors[variant], alpha=0.8)
            seeds = [100 * r["after"]["accuracy"] for r in runs if r["world"] == world and r["variant"] == variant]
            ax.scatter([i] * len(seeds), seeds, color="black", s=12, zorder=3)
        before = 100 * summary[world]["student"]["accuracy"]
        ax.axhline(before, color="black", linestyle="--", linewidth=1, label=f"student before ({before:.1f})")
        ax.axhline(25, color="red", linestyle=":", linewidth=1, label="chance (25)")
        ax.set_xticks(range(len(variants)), [LABELS[v].replace(" (", "\n(") for v in variants])
        ax.set_ylim(0, 100)
        ax.set_ylabel("held-out greedy accuracy after training (%)")
        ax.set_title(f"{world} world: mean and 95% interval over seeds")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    paths.append(output_dir / "accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(worlds), figsize=(5.2 * len(worlds), 7.5), squeeze=False)
    for row, (key, label) in enumerate((("curve", "greedy accuracy"), ("curve_p_gold", "p(gold)"))):
        for ax, world in zip(axes[row], worlds, strict=True):
            for variant in [v for v in summary[world] if v in VARIANTS]:
                curve = summary[world][variant][key]
                steps = [int(step) for step in curve]
                mean = [100 * curve[step]["mean"] for step in curve]
                ci = [0 if math.isnan(curve[step]["ci95"]) else 100 * curve[step]["ci95"] for step in curve]
                ax.plot(steps, mean, marker="o", color=colors[variant], label=LABELS[variant])
                low = [m - c for m, c in zip(mean, ci, strict=True)]
                high = [m + c for m, c in zip(mean, ci, strict=True)]
                ax.fill_between(steps, low, high, color=colors[variant], alpha=0.15)
            ax.set_ylim(0, 100)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(f"held-out {label} (%)")
            ax.set_title(f"{world} world: mean and 95% interval over seeds")
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(output_dir / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(worlds), figsize=(5.2 * len(worlds), 3.6), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        chosen = [r for r in runs if r["world"] == world and r["variant"] == "vzero"]
        right = [g for r in chosen for g in r["gate_values"]["correct"]]
        wrong = [g for r in chosen for g in r["gate_values"]["wrong"]]
        auc = summary[world].get("vzero", {}).get("gate_auc", {"mean": math.nan})["mean"]
        draw_gate_histogram(ax, right, wrong, f"{world} world, V-Zero: within-group AUC {auc:.2f}")
    fig.tight_layout()
    paths.append(output_dir / "gates.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def draw_gate_histogram(ax, correct: list[float], wrong: list[float], title: str) -> None:
    """Densities of the gates of correct and of wrong rollouts on one matplotlib axis (gates lie in [0, 2])."""
    bins = [i / 10 for i in range(21)]
    ax.hist(correct, bins=bins, alpha=0.6, density=True, color="tab:green", label=f"correct ({len(correct)})")
    ax.hist(wrong, bins=bins, alpha=0.6, density=True, color="tab:red", label=f"wrong ({len(wrong)})")
    ax.set_xlabel("gate w of a training rollout")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)


def _settings_record(worlds, pairs: dict[str, PairSpec]) -> dict:
    """Each world's pair and run settings, as `settings.json` stores them (JSON types: tuples become lists)."""
    record = {world: {"pair": asdict(pairs[world]), "run": asdict(WORLD_SETTINGS[world])} for world in worlds}
    return json.loads(json.dumps(record))


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for key in sorted(set(old) | set(new))
            for d in _differences(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))
        ]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def reproduce(
    output_dir: str | Path,
    worlds: tuple[World, ...] = WORLDS,
    variants: tuple[str, ...] = TABLE2_VARIANTS,
    seeds: tuple[int, ...] = (0, 1, 2),
    workers: int = 2,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    pair_seed: int = 0,
) -> dict:
    """
    Run the miniature reproduction and write `results.json`, `results.md`, `accuracy.png`, `curves.png` and
    `gates.png` into `output_dir`.

    Args:
        output_dir: Folder of the results; finished runs are kept in `output_dir/runs/` and reused by a rerun with the
            same settings. A rerun whose world settings differ is refused.
        worlds: Toy worlds to run (`letter`, `chain`).
        variants: Keys of `VARIANTS`.
        seeds: Training seeds per variant (sampling and data order); every seed starts from the same trained pair.
        workers: Parallel worker processes, one CPU thread each.
        cache_dir: Where trained pairs are kept (default `output_dir/models`).
        overwrite: Discard finished runs made with other settings instead of refusing.
        pair_seed: Seed of the world and of the trained pair.
    """
    output_dir = Path(output_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else output_dir / "models"
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown variant(s) {unknown}; choose from {list(VARIANTS)}.")
    pairs = {world: PairSpec(world=world, seed=pair_seed) for world in worlds}
    record = _settings_record(worlds, pairs)
    settings_path = output_dir / "settings.json"
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        differences = [d for world in worlds if world in old for d in _differences(old[world], record[world], world)]
        if differences and not overwrite:
            raise ValueError(
                f"{output_dir} holds runs made with other settings: {'; '.join(differences)}. Use another output "
                "directory, or pass --overwrite to discard them."
            )
        if differences:
            for world in worlds:
                for path in (output_dir / "runs" / world).glob("*.json"):
                    path.unlink()
        record = {**old, **record}
    output_dir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(record, indent=2))

    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        built = {}
        futures = {
            pool.submit(ensure_pair, pair_dir(cache_dir, pairs[world]), pairs[world], None): world for world in worlds
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="trained pairs (teacher, student)"):
            teacher, student, pair_record = future.result()
            built[futures[future]] = (teacher, student, pair_record)
        for world in worlds:
            r = built[world][2]
            print(
                f"{world} world: teacher accuracy {100 * r['teacher']['crop']['accuracy']:.1f}% with the positive crop, "
                f"{100 * r['teacher']['negative_crop']['accuracy']:.1f}% with the negative; student "
                f"{100 * r['student']['student']['accuracy']:.1f}% from the full image"
            )

        jobs, runs = [], []
        for world in worlds:
            for variant in variants:
                for seed in seeds:
                    path = output_dir / "runs" / world / f"{variant}-seed{seed}.json"
                    if path.is_file():
                        runs.append(json.loads(path.read_text()))
                        continue
                    teacher, student, _ = built[world]
                    job = Job(
                        world,
                        variant,
                        seed,
                        WORLD_SETTINGS[world],
                        pairs[world],
                        str(teacher),
                        str(student),
                        str(output_dir / "runs" / world / f"{variant}-seed{seed}"),
                    )
                    jobs.append(job)
        futures = {pool.submit(run_one, job): job for job in jobs}
        for future in tqdm(as_completed(futures), total=len(futures), desc="distillation runs"):
            job, run = futures[future], future.result()
            path = output_dir / "runs" / job.world / f"{job.variant}-seed{job.seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(run))
            os.replace(tmp, path)
            runs.append(run)

    order = {(w, v, s): i for i, (w, v, s) in enumerate((w, v, s) for w in worlds for v in variants for s in seeds)}
    runs = sorted(
        (r for r in runs if (r["world"], r["variant"], r["seed"]) in order),
        key=lambda r: order[(r["world"], r["variant"], r["seed"])],
    )
    summary = summarize(runs, {world: built[world][2] for world in worlds})
    (output_dir / "results.json").write_text(json.dumps({"settings": record, "summary": summary}, indent=2))
    table = markdown_table(summary)
    (output_dir / "results.md").write_text(table)
    draw_pictures(summary, runs, output_dir)
    return summary
