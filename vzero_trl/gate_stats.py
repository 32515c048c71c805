"""How well a gate ranks rollouts, measured against their correctness: one computation for the miniature reproduction
([`vzero_trl.mini`]) and the labelled gate probe of training ([`vzero_trl.gate_probe`]).

Pure Python over per-rollout lists (gate, correct, group), so that any run's recorded rollouts can be measured.
"""

from collections.abc import Sequence


def within_group_auc(gates: Sequence[float], correct: Sequence[bool], groups: Sequence[int]) -> float:
    """
    Probability that a correct rollout's gate exceeds a wrong rollout's gate of the same prompt (ties count half),
    over all such pairs; `nan` when no group mixes correct and wrong rollouts.
    """
    wins = pairs = 0.0
    by_group: dict[int, list[tuple[float, bool]]] = {}
    for gate, ok, group in zip(gates, correct, groups, strict=True):
        by_group.setdefault(group, []).append((gate, ok))
    for members in by_group.values():
        right = [gate for gate, ok in members if ok]
        wrong = [gate for gate, ok in members if not ok]
        for a in right:
            for b in wrong:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                pairs += 1
    return wins / pairs if pairs else float("nan")


def gate_diagnostics(gates: Sequence[float], correct: Sequence[bool], groups: Sequence[int]) -> dict:
    """
    Mean gate of correct and of wrong rollouts, the within-group AUC of gate vs correctness, the fraction of groups
    with both correct and wrong rollouts, and the accuracy of the sampled rollouts.
    """
    right = [gate for gate, ok in zip(gates, correct, strict=True) if ok]
    wrong = [gate for gate, ok in zip(gates, correct, strict=True) if not ok]
    outcomes: dict[int, set[bool]] = {}
    for ok, group in zip(correct, groups, strict=True):
        outcomes.setdefault(group, set()).add(bool(ok))
    return {
        "gate_correct": sum(right) / len(right) if right else float("nan"),
        "gate_wrong": sum(wrong) / len(wrong) if wrong else float("nan"),
        "gate_auc": within_group_auc(gates, correct, groups),
        "mixed_group_frac": sum(len(o) == 2 for o in outcomes.values()) / len(outcomes),
        "rollout_accuracy": len(right) / len(correct),
    }
