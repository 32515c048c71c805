"""Intervals over cells for the miniature reproduction: a mean, a paired difference, each with a 95% t-interval.

A cell is one (pair seed, run seed): a trained teacher and student drawn from the pair seed, one distillation run from
the run seed. Every variant of a cell starts from the same student with the same prompts and sampling seed, so the
difference between two variants within a cell cancels the pair's and the prompts' share of the noise.
"""

import math
from collections.abc import Sequence


# Two-sided 95% Student-t quantiles by degrees of freedom (1-30); beyond, the normal 1.96.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The two-sided 95% Student-t quantile for `df >= 1` degrees of freedom."""
    return T_975[df - 1] if df <= len(T_975) else 1.96


def interval(values: Sequence[float]) -> dict:
    """
    Mean, standard deviation and 95% Student-t half-width of `values` (NaNs dropped).

    Returns:
        `dict`: `mean`, `sd`, `ci95` and `n`; `sd` and `ci95` are `nan` for fewer than two values.

    >>> round(interval([1.0, 2.0, 3.0])["ci95"], 3)  # 4.303 * 1 / sqrt(3)
    2.484
    """
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "ci95": math.nan, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "sd": math.nan, "ci95": math.nan, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "sd": sd, "ci95": t_quantile(n - 1) * sd / math.sqrt(n), "n": n}


def paired_difference(values: dict[tuple[int, int], float], baseline: dict[tuple[int, int], float]) -> dict:
    """
    The difference `values - baseline` over the cells both have, with two intervals.

    Args:
        values, baseline (`dict[tuple[int, int], float]`): A measurement per cell `(pair seed, run seed)`.

    Returns:
        `dict`: the [`interval`] of the per-cell differences (`mean`, `sd`, `ci95`, `n` cells) plus `by_pair`, the
        interval over pairs of each pair's mean difference (cells of one pair share their teacher and student, so this
        one does not treat them as independent), and `cells`, the differences themselves keyed `"pair/seed"`.
    """
    cells = sorted(values.keys() & baseline.keys())
    diffs = {cell: values[cell] - baseline[cell] for cell in cells}
    by_pair: dict[int, list[float]] = {}
    for (pair, _), diff in diffs.items():
        by_pair.setdefault(pair, []).append(diff)
    return {
        **interval(list(diffs.values())),
        "by_pair": interval([sum(d) / len(d) for d in by_pair.values()]),
        "cells": {f"{pair}/{seed}": diff for (pair, seed), diff in diffs.items()},
    }


def plus_minus(stat: dict, scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    """An [`interval`] as text, `"mean ± ci95"` times `scale` with `digits` decimals (`sign`: `+` on positive means);
    the mean alone for one value, `"n/a"` for none."""
    if stat["n"] == 0:
        return "n/a"
    mean = f"{scale * stat['mean']:{'+' if sign else ''}.{digits}f}"
    return mean if stat["n"] < 2 else f"{mean} ± {scale * stat['ci95']:.{digits}f}"
