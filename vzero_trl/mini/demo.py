"""What `make demo` shows: a trained tiny student before and after V-Zero, and whether the gate found the right rollouts.

The demo trains from the trained pair of the letter world ([`pretrain.ensure_pair`]) with [`RecordingTrainer`], which
trains exactly as [`VZeroTrainer`] and keeps each rollout's gate and correctness. [`demo_report`] then measures the
student on held-out rows, prints accuracy before and after with the gate's within-group AUC, and draws `demo.png`.
"""

import json
from pathlib import Path

from .measure import evaluate_view, gate_diagnostics
from .pretrain import PairSpec, ensure_pair
from .world import make_dataset, make_rows


DEMO_PAIR = PairSpec(world="letter", seed=0)


def build_demo_assets(models_dir: str | Path, data_dir: str | Path, num_examples: int) -> tuple[Path, Path]:
    """
    The demo's trained teacher and student (built under `models_dir` unless already there) and its unlabelled training
    prompts, saved with `save_to_disk` at `data_dir` unless present. Both are written atomically.

    Returns:
        `tuple[Path, Path]`: the teacher and student folders.
    """
    teacher, student, _ = ensure_pair(models_dir, DEMO_PAIR)
    data_dir = Path(data_dir)
    if not (data_dir / "dataset_info.json").is_file():
        tmp = data_dir.with_name(f".{data_dir.name}.tmp")
        make_dataset(num_examples, seed=DEMO_PAIR.seed, split="opd").save_to_disk(str(tmp))
        if data_dir.exists():  # a folder left by a killed build of an older demo: replace it whole
            import shutil

            shutil.rmtree(data_dir)
        tmp.rename(data_dir)
    return teacher, student


def demo_report(trainer, models_dir: str | Path, output_dir: str | Path) -> dict:
    """Held-out accuracy before and after, gate diagnostics of the training rollouts; printed, saved and drawn."""
    _, _, record = ensure_pair(models_dir, DEMO_PAIR)
    rows = make_rows(DEMO_PAIR.num_eval_rows, seed=DEMO_PAIR.seed, split="eval")
    before = record["student"]["student"]
    after = evaluate_view(trainer.model, trainer.processing_class, rows, "student", DEMO_PAIR.world)
    rollouts = trainer.rollouts
    gates = gate_diagnostics(
        [r["gate"] for r in rollouts], [r["correct"] for r in rollouts], [r["group"] for r in rollouts]
    )
    report = {
        "before": before,
        "after": after,
        "gates": gates,
        "teacher": record["teacher"],
        "rollouts": len(rollouts),
    }
    output_dir = Path(output_dir)
    (output_dir / "demo_results.json").write_text(json.dumps(report, indent=2))
    _draw(report, rollouts, output_dir / "demo.png")
    print(
        f"Held-out accuracy of the student ({len(rows)} rows, greedy): {100 * before['accuracy']:.1f}% before, "
        f"{100 * after['accuracy']:.1f}% after; probability of the right answer {before['p_gold']:.3f} -> "
        f"{after['p_gold']:.3f}.\n"
        f"Gate on {len(rollouts)} training rollouts: {gates['gate_correct']:.2f} on correct ones, "
        f"{gates['gate_wrong']:.2f} on wrong ones; within-group AUC of gate vs correctness {gates['gate_auc']:.2f} "
        f"(0.5 = no better than chance), with no answer labels. Teacher: "
        f"{100 * record['teacher']['crop']['accuracy']:.1f}% with the positive crop, "
        f"{100 * record['teacher']['negative_crop']['accuracy']:.1f}% with the negative."
    )
    return report


def _draw(report: dict, rollouts: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    values = [100 * report["before"]["accuracy"], 100 * report["after"]["accuracy"]]
    left.bar(["student before", "after V-Zero"], values, color=["tab:gray", "tab:blue"])
    left.axhline(
        100 * report["teacher"]["crop"]["accuracy"], color="tab:green", linestyle="--", label="teacher + crop"
    )
    left.axhline(25, color="red", linestyle=":", label="chance")
    for i, value in enumerate(values):
        left.text(i, value + 1, f"{value:.1f}", ha="center")
    left.set_ylim(0, 105)
    left.set_ylabel("held-out greedy accuracy (%)")
    left.legend(fontsize=8, loc="lower right")
    bins = [i / 10 for i in range(21)]
    right.hist(
        [r["gate"] for r in rollouts if r["correct"]],
        bins=bins,
        alpha=0.6,
        density=True,
        color="tab:green",
        label="correct rollouts",
    )
    right.hist(
        [r["gate"] for r in rollouts if not r["correct"]],
        bins=bins,
        alpha=0.6,
        density=True,
        color="tab:red",
        label="wrong rollouts",
    )
    right.set_xlabel("gate w")
    right.set_title(f"within-group AUC {report['gates']['gate_auc']:.2f}")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
