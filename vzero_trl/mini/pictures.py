"""Pictures of the miniature reproduction: paired differences against plain OPD, p(gold) over training, gates."""

import math
from pathlib import Path

from .variants import BASELINE, COLORS, LABELS, VARIANTS


def draw_gate_histogram(ax, correct: list[float], wrong: list[float], title: str) -> None:
    """Densities of the gates of correct and of wrong rollouts on one matplotlib axis (gates lie in [0, 2])."""
    bins = [i / 10 for i in range(21)]
    ax.hist(correct, bins=bins, alpha=0.6, density=True, color="tab:green", label=f"correct ({len(correct)})")
    ax.hist(wrong, bins=bins, alpha=0.6, density=True, color="tab:red", label=f"wrong ({len(wrong)})")
    ax.set_xlabel("gate w of a training rollout")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)


def draw_pictures(summary: dict, runs: list[dict], output_dir: Path) -> list[Path]:
    """
    `paired.png` (each variant's p(gold) minus plain OPD's in the same cell: mean, 95% interval over cells, one dot per
    cell), `curves.png` (held-out p(gold) over training, mean over cells) and `gates.png` (gates of correct and wrong
    training rollouts under V-Zero, all cells).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(summary)
    paths = []

    fig, axes = plt.subplots(1, len(worlds), figsize=(5.6 * len(worlds), 3.8), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        variants = [v for v in VARIANTS if v in summary[world] and v != BASELINE]
        for i, variant in enumerate(variants):
            vs = summary[world][variant].get("p_gold_vs_baseline")
            if vs is None or vs["n"] == 0:
                continue
            ci = 0 if math.isnan(vs["ci95"]) else 100 * vs["ci95"]
            ax.errorbar(100 * vs["mean"], i, xerr=ci, fmt="o", color=COLORS[variant], capsize=5, markersize=7)
            cells = [100 * d for d in vs["cells"].values()]
            ax.scatter(cells, [i + 0.18] * len(cells), color=COLORS[variant], s=10, alpha=0.6)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(len(variants)), [LABELS[v] for v in variants], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("p(gold) after training minus plain OPD's, same cell (points)")
        ax.set_title(f"{world} world: paired difference, 95% interval over cells", fontsize=9)
    paths.append(_save(fig, output_dir / "paired.png"))

    fig, axes = plt.subplots(1, len(worlds), figsize=(5.2 * len(worlds), 3.8), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        for variant in [v for v in VARIANTS if v in summary[world]]:
            curve = summary[world][variant]["curve_p_gold"]
            steps = [int(step) for step in curve]
            ax.plot(
                steps, [100 * curve[step] for step in curve], marker="o", color=COLORS[variant], label=LABELS[variant]
            )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("held-out p(gold) (%), mean over cells")
        ax.set_title(f"{world} world")
        ax.legend(fontsize=7)
    paths.append(_save(fig, output_dir / "curves.png"))

    fig, axes = plt.subplots(1, len(worlds), figsize=(5.2 * len(worlds), 3.6), squeeze=False)
    for ax, world in zip(axes[0], worlds, strict=True):
        chosen = [r for r in runs if r["world"] == world and r["variant"] == "vzero"]
        right = [g for r in chosen for g in r["gate_values"]["correct"]]
        wrong = [g for r in chosen for g in r["gate_values"]["wrong"]]
        auc = summary[world].get("vzero", {}).get("gate_auc", {"mean": math.nan})["mean"]
        draw_gate_histogram(ax, right, wrong, f"{world} world, V-Zero: within-group AUC {auc:.2f}")
    paths.append(_save(fig, output_dir / "gates.png"))
    return paths


def _save(fig, path: Path) -> Path:
    """Lay out, write and close one figure; its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long titles stay inside the picture
    plt.close(fig)
    return path
