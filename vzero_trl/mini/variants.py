"""The variants of the miniature reproduction: what each changes in `VZeroConfig`, which run in every cell, and how the
tables and pictures name and colour them. Plain OPD (`no_gate`) is the baseline of every paired difference."""

from typing import Any


# VZeroConfig overrides per variant (the paper: alpha = 1, w in [0, 2]).
VARIANTS: dict[str, dict[str, Any]] = {
    "vzero": {"evidence_alpha": 1.0},
    "no_gate": {"evidence_alpha": 0.0},
    # Only up-weights: the wrong rollouts keep their full correction, the right ones gain weight.
    "wmin1": {"evidence_alpha": 1.0, "evidence_weight_min": 1.0},
    "random_evidence": {"evidence_alpha": 1.0, "crop_column": "random_crop"},
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
BASELINE = "no_gate"
CORE_VARIANTS = ("vzero", "no_gate", "wmin1")  # run in every cell
OTHER_VARIANTS = ("random_evidence", "self_frozen", "vision_opd")  # run in the cells of the first run seed
LABELS = {
    "vzero": "V-Zero (alpha 1, w in [0, 2])",
    "no_gate": "Plain OPD (no gate)",
    "wmin1": "V-Zero, w_min = 1",
    "random_evidence": "Random evidence",
    "self_frozen": "V-Zero, frozen self-teacher",
    "vision_opd": "Vision-OPD (EMA, crop only, JSD top-100)",
}
# Each variant's colour in the pictures.
COLORS = {
    "vzero": "tab:blue",
    "no_gate": "tab:orange",
    "wmin1": "tab:cyan",
    "random_evidence": "tab:gray",
    "self_frozen": "tab:purple",
    "vision_opd": "tab:green",
}
