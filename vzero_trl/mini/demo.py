"""What `make demo` shows: a trained tiny student before and after V-Zero, and whether the gate found the right rollouts.

The launcher (`scripts/vzero.py` with `build_demo_assets`) builds the trained pair of the letter world
([`build_demo_pair`]) and the unlabelled prompts ([`build_demo_data`]), and trains with [`RecordingTrainer`], which
trains exactly as [`VZeroTrainer`] and keeps each rollout's gate and correctness. [`demo_report`] then measures the
student on held-out rows, prints accuracy before and after with the gate's within-group AUC, and draws `demo.png`.
"""

import json
import os
import shutil
from pathlib import Path

from .measure import evaluate_view, gate_diagnostics
from .pretrain import PairSpec, ensure_pair
from .reproduce import draw_gate_histogram
from .world import make_dataset, make_rows


DEMO_PAIR = PairSpec(world="letter", seed=0)
DATA_RECORD = "vzero_demo.json"


def build_demo_data(data_dir: str | Path, num_examples: int) -> None:
    """
    The demo's unlabelled training prompts (toy-world rows, split `opd`), saved with `save_to_disk` at `data_dir`
    unless already there. Built in a temporary folder and renamed into place, so a killed build leaves nothing behind
    that a later run would take for finished; a folder built for other settings is refused.
    """
    data_dir = Path(data_dir)
    wanted = {"world": DEMO_PAIR.world, "seed": DEMO_PAIR.seed, "split": "opd", "num_examples": num_examples}
    if data_dir.exists():
        record = data_dir / DATA_RECORD
        built = json.loads(record.read_text()) if record.is_file() else None
        if built != wanted:
            raise ValueError(
                f"{data_dir} holds {built or 'data not built by this demo'}, but the demo asks for {wanted}. Delete "
                "the folder to rebuild it, or point `dataset_name` elsewhere."
            )
        return
    tmp = data_dir.with_name(f".{data_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    make_dataset(num_examples, seed=DEMO_PAIR.seed, split="opd").save_to_disk(str(tmp))
    (tmp / DATA_RECORD).write_text(json.dumps(wanted))
    os.replace(tmp, data_dir)


def build_demo_pair(student_dir: str | Path, teacher_dir: str | Path) -> dict:
    """The demo's trained pair, which must sit side by side as `<root>/student` and `<root>/teacher`."""
    student_dir, teacher_dir = Path(student_dir), Path(teacher_dir)
    if student_dir.name != "student" or teacher_dir != student_dir.with_name("teacher"):
        raise ValueError(
            f"The trained demo pair is built as <folder>/student and <folder>/teacher, got model_name_or_path="
            f"{str(student_dir)!r} and teacher_model_name_or_path={str(teacher_dir)!r}. Point them at one folder's "
            "student/ and teacher/."
        )
    return ensure_pair(student_dir.parent, DEMO_PAIR)[2]


def demo_report(trainer, record: dict, output_dir: str | Path) -> dict:
    """
    Held-out accuracy before and after, gate diagnostics of the training rollouts; printed, saved to
    `output_dir/demo_results.json` and drawn in `output_dir/demo.png`.

    Args:
        trainer ([`RecordingTrainer`]): The trainer after `train()`.
        record (`dict`): The trained pair's build record (from [`build_demo_pair`]).
        output_dir (`str` or `Path`): Where the results and the picture go.
    """
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
    draw_gate_histogram(
        right,
        [r["gate"] for r in rollouts if r["correct"]],
        [r["gate"] for r in rollouts if not r["correct"]],
        f"within-group AUC {report['gates']['gate_auc']:.2f}",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
