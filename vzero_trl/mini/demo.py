"""What `make demo` shows: a trained tiny student before and after V-Zero, and whether the gate found the right rollouts.

The launcher (`scripts/vzero.py` with `build_demo_assets`) builds the trained pair of the letter world
([`build_demo_pair`]) and the unlabelled prompts ([`build_demo_data`]), and trains with [`RecordingTrainer`], which
trains exactly as [`VZeroTrainer`] and keeps each rollout's gate and correctness. [`demo_report`] then measures the
student on held-out rows, prints p(gold) and accuracy before and after with the gate's within-group AUC beside what
the reproduction measured for the same setting over many cells (`reference.json`, from `make reproduce --full`), and
draws `demo.png`. The demo's own numbers are one cell: on another CPU the pair and the run are other random draws, so
a different number is expected; the reproduction's interval says how different.
"""

import json
import os
import shutil
from pathlib import Path

from .measure import evaluate_view, gate_diagnostics
from .pictures import draw_gate_histogram
from .pretrain import WORLD_PAIRS, ensure_pair
from .stats import plus_minus
from .world import make_dataset, make_rows


DEMO_PAIR = WORLD_PAIRS["letter"]
DATA_RECORD = "vzero_demo.json"
# The reproduction's letter-world V-Zero cells (`reproduce.demo_reference` of the committed full grid).
REFERENCE = Path(__file__).with_name("reference.json")


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
        "eval_rows": len(rows),
        "seed": trainer.args.seed,
    }
    output_dir = Path(output_dir)
    (output_dir / "demo_results.json").write_text(json.dumps(report, indent=2))
    _draw(report, rollouts, output_dir / "demo.png")
    print(demo_text(report, json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None))
    return report


def demo_text(report: dict, reference: dict | None) -> str:
    """The demo's report as printed: its own run, then the reproduction's interval for the same setting."""
    before, after, gates = report["before"], report["after"], report["gates"]
    teacher = report["teacher"]
    lines = [
        f"This run (pair seed {DEMO_PAIR.seed}, run seed {report['seed']}), {report['eval_rows']} held-out rows: "
        f"p(gold) {before['p_gold']:.3f} -> {after['p_gold']:.3f} ({after['p_gold'] - before['p_gold']:+.3f}); "
        f"greedy accuracy {100 * before['accuracy']:.1f}% -> {100 * after['accuracy']:.1f}%.",
        f"Gate on {report['rollouts']} training rollouts: {gates['gate_correct']:.2f} on correct ones, "
        f"{gates['gate_wrong']:.2f} on wrong ones; within-group AUC of gate vs correctness {gates['gate_auc']:.2f} "
        "(0.5 = no better than chance), with no answer labels.",
        f"Teacher: {100 * teacher['crop']['accuracy']:.1f}% with the positive crop, "
        f"{100 * teacher['negative_crop']['accuracy']:.1f}% with the negative.",
    ]
    if reference is None:
        lines.append("No reproduction reference is installed (vzero_trl/mini/reference.json).")
        return "\n".join(lines)
    gain = reference["p_gold_gain"]
    lines += [
        f"The reproduction, same setting, {reference['cells']} cells ({reference['pairs']} trained pairs x run seeds; "
        f"{reference['machine']['cpu']}), mean ± 95% interval: p(gold) gain {plus_minus(gain, sign=True)}, accuracy gain "
        f"{plus_minus(reference['accuracy_gain'], 100, 1, True)} points, gate AUC {plus_minus(reference['gate_auc'], digits=2)}; "
        f"V-Zero minus plain OPD in p(gold) {plus_minus(reference['p_gold_vs_baseline'], sign=True)}.",
        f"Cells spread with sd {gain['sd']:.3f} in p(gold) gain (pairs and run seeds). The shipped pair is the same "
        "everywhere, but the run diverges with the CPU's floating point: a gain off the cells' mean by up to about two "
        "sd is expected on another machine.",
    ]
    return "\n".join(lines)


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
