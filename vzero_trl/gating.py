"""Contrastive evidence gating, V-Zero eqs. 17-20, as pure torch functions.

The teacher replays every student rollout twice: once with the positive crop (question-relevant evidence) and once with
the negative crop (an equal-size region away from the target). Per token, the evidence gap is `d = pos - neg` (eq. 17);
per rollout, the score is the mean gap over completion tokens (eq. 18); within each prompt's group of `G` sibling
rollouts the scores are standardised (eq. 19) and mapped to a detached gate `w = clip(1 + alpha * a, w_min, w_max)`
(eq. 20, with the official code's `alpha` knob). Groups are contiguous rows: rows `[k * G, (k + 1) * G)` are the `G`
rollouts of prompt `k`, which is how the trainer's sampler lays them out. [`rollout_groups`] states that layout once as
data, a group index per row, which the trainer hands to the teacher replay and the student's shared-prefix forward; no
code finds groups by comparing ids, prompts or pixels.

Nothing here knows about models, ranks or configs: the trainer gathers scores across processes before calling
[`evidence_weights`] so that a group split over ranks is still normalised as one group, and sums the per-process
[`evidence_token_sums`] before [`evidence_metrics`] turns them into the logged `evidence/*` values.
"""

from typing import Literal

import torch


def rollout_groups(num_rows: int, num_generations: int, first_row: int = 0, device=None) -> torch.Tensor:
    """
    Group index of each row, from the sampler's layout: row `r` of the gathered generation batch is a rollout of prompt
    `r // num_generations`.

    Args:
        num_rows (`int`):
            Number of rows `B` (this process's rows).
        num_generations (`int`):
            Group size `G`.
        first_row (`int`, *optional*, defaults to `0`):
            Position of the first row in the gathered batch (`process_index * B`): a group may straddle processes.
        device (*optional*):
            Device of the result.

    Returns:
        `torch.Tensor`: long tensor of shape `(B,)`, non-decreasing.
    """
    rows = torch.arange(first_row, first_row + num_rows, device=device)
    return torch.div(rows, num_generations, rounding_mode="floor")


def group_slices(group_index: torch.Tensor) -> list[slice]:
    """
    The runs of equal group index `(B,)` as slices, in order: `[4, 4, 5, 5, 5]` gives `[slice(0, 2), slice(2, 5)]`.
    """
    slices, start = [], 0
    for count in torch.unique_consecutive(group_index, return_counts=True)[1].tolist():
        slices.append(slice(start, start + count))
        start += count
    return slices


def evidence_scores(
    pos_logps: torch.Tensor, neg_logps: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """
    Trajectory-level evidence score (eq. 18): masked mean over completion tokens of `relu(d) - gamma * relu(-d)`, with
    `d = pos_logps - neg_logps` (eq. 17). `gamma = 1` gives the plain mean gap of the paper; `gamma > 1` penalises
    tokens that the negative view supports better (the official code's asymmetric knob).

    Args:
        pos_logps (`torch.Tensor`):
            Teacher log-probabilities of the sampled tokens under the positive view, shape `(B, C)`.
        neg_logps (`torch.Tensor`):
            Teacher log-probabilities of the same tokens under the negative view, shape `(B, C)`.
        mask (`torch.Tensor`):
            Completion mask of shape `(B, C)`; nonzero marks a real completion token. Values at masked positions are
            ignored, even if they are infinite.
        gamma (`float`, *optional*, defaults to `1.0`):
            Weight of the negative part of the gap.

    Returns:
        `torch.Tensor`: scores of shape `(B,)` in float32. A row without any valid token scores `0`.
    """
    valid = mask.bool()
    gap = pos_logps.float() - neg_logps.float()
    token_scores = torch.relu(gap) - gamma * torch.relu(-gap)
    token_scores = torch.where(valid, token_scores, torch.zeros_like(token_scores))
    return token_scores.sum(-1) / valid.sum(-1).clamp(min=1)


def constant_groups(values: torch.Tensor, num_generations: int) -> torch.Tensor:
    """
    Which groups of `num_generations` contiguous values are constant (zero spread), so carry no ranking signal.

    Args:
        values (`torch.Tensor`):
            Values of shape `(B,)`, `B` a multiple of `num_generations`.
        num_generations (`int`):
            Group size `G`.

    Returns:
        `torch.Tensor`: boolean tensor of shape `(B // G,)`.
    """
    grouped = _grouped(values, num_generations)
    return grouped.amax(-1) == grouped.amin(-1)


def group_standardize(
    values: torch.Tensor,
    num_generations: int,
    eps: float = 1e-6,
    std: Literal["population", "sample"] = "population",
) -> torch.Tensor:
    """
    Standardise values within contiguous groups (eq. 19): `a = (p - mean_group) / (std_group + eps)`.

    Args:
        values (`torch.Tensor`):
            Values of shape `(B,)`; rows `[k * G, (k + 1) * G)` form group `k`.
        num_generations (`int`):
            Group size `G`. `B` must be a multiple of it.
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to the standard deviation (not the variance), as in eq. 19.
        std (`str`, *optional*, defaults to `"population"`):
            `"population"` divides the squared deviations by `G` (the official code); `"sample"` by `G - 1` (Bessel's
            correction).

    Returns:
        `torch.Tensor`: standardised values of shape `(B,)` in float32. A group whose values are all identical
        (including every group when `G = 1`) gives exactly `0`, not the rounding noise of `(p - mean) / eps`.
    """
    if std not in ("population", "sample"):
        raise ValueError(f"`std` must be 'population' or 'sample', got {std!r}.")
    grouped = _grouped(values, num_generations).float()
    mean = grouped.mean(-1, keepdim=True)
    correction = 1 if std == "sample" and num_generations > 1 else 0
    spread = grouped.std(-1, keepdim=True, correction=correction)
    standardized = (grouped - mean) / (spread + eps)
    constant = constant_groups(values, num_generations).unsqueeze(-1)
    return torch.where(constant, torch.zeros_like(standardized), standardized).reshape(-1)


def evidence_weights(
    scores: torch.Tensor,
    num_generations: int,
    alpha: float = 1.0,
    w_min: float = 0.0,
    w_max: float = 2.0,
    eps: float = 1e-6,
    std: Literal["population", "sample"] = "population",
) -> torch.Tensor:
    """
    Contrastive evidence gate (eq. 20, generalised): `w = sg[clip(1 + alpha * a, w_min, w_max)]` with `a` the
    group-standardised score of [`group_standardize`]. `alpha = 1` is the paper, `alpha = 0.5` the official code and
    `alpha = 0` turns gating off (every weight is `clip(1, w_min, w_max)`).

    Args:
        scores (`torch.Tensor`):
            Evidence scores of shape `(B,)` from [`evidence_scores`], grouped contiguously by prompt.
        num_generations (`int`):
            Group size `G`.
        alpha (`float`, *optional*, defaults to `1.0`):
            Gain applied to the standardised score.
        w_min (`float`, *optional*, defaults to `0.0`):
            Lower clip bound.
        w_max (`float`, *optional*, defaults to `2.0`):
            Upper clip bound.
        eps (`float`, *optional*, defaults to `1e-6`):
            See [`group_standardize`].
        std (`str`, *optional*, defaults to `"population"`):
            See [`group_standardize`].

    Returns:
        `torch.Tensor`: detached weights of shape `(B,)` in float32.
    """
    advantages = group_standardize(scores.detach(), num_generations, eps=eps, std=std)
    return (1.0 + alpha * advantages).clamp(min=w_min, max=w_max)


def _grouped(values: torch.Tensor, num_generations: int) -> torch.Tensor:
    # (B,) -> (B // G, G), refusing a batch that does not hold whole groups.
    if values.ndim != 1:
        raise ValueError(f"Expected a 1-D tensor of per-rollout values, got shape {tuple(values.shape)}.")
    if num_generations < 1 or values.numel() % num_generations != 0:
        raise ValueError(
            f"{values.numel()} values cannot be split into groups of num_generations={num_generations}: every prompt "
            "must contribute exactly `num_generations` contiguous rollouts."
        )
    return values.reshape(-1, num_generations)


def evidence_token_sums(pos_logps: torch.Tensor, neg_logps: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """
    Token-level sums behind the `evidence/*` metrics: `[number of valid tokens, sum of pos_logps, sum of neg_logps, sum
    of the gap pos - neg, number of positive gaps]` over the valid tokens. Summed over processes, they give the means of
    the whole generation batch.

    Args:
        pos_logps (`torch.Tensor`):
            Positive-view teacher log-probabilities `(B, C)`.
        neg_logps (`torch.Tensor`, *optional*):
            Negative-view teacher log-probabilities `(B, C)`; `None` when gating is off (its sums are then 0).
        mask (`torch.Tensor`):
            Completion mask `(B, C)`.

    Returns:
        `torch.Tensor`: float32 tensor of shape `(5,)`.
    """
    valid = mask.bool()
    pos = pos_logps[valid].float()
    neg = neg_logps[valid].float() if neg_logps is not None else torch.zeros_like(pos)
    gap = pos - neg
    sums = [valid.sum(), pos.sum(), neg.sum(), gap.sum(), (gap > 0).sum()]
    return torch.stack([value.float() for value in sums])


def evidence_metrics(
    token_sums: torch.Tensor,
    weights: torch.Tensor,
    scores: torch.Tensor | None,
    num_generations: int,
    w_min: float,
    w_max: float,
) -> dict[str, float]:
    """
    The logged `evidence/*` metrics of one generation batch.

    Args:
        token_sums (`torch.Tensor`):
            [`evidence_token_sums`] of the whole batch (summed over processes), shape `(5,)`.
        weights (`torch.Tensor`):
            Gates of every rollout of the batch `(N,)`.
        scores (`torch.Tensor`, *optional*):
            Evidence scores of every rollout `(N,)`, grouped contiguously; `None` when gating is off, which leaves out
            the metrics of the negative view.
        num_generations (`int`):
            Group size `G`.
        w_min (`float`), w_max (`float`):
            The gate's clip bounds.

    Returns:
        `dict[str, float]`: metric name to value.
    """
    num_tokens, pos_sum, neg_sum, gap_sum, num_positive = token_sums.unbind()
    num_tokens = num_tokens.clamp(min=1)
    metrics = {
        "evidence/teacher_pos_logp_mean": pos_sum / num_tokens,
        "evidence/weight_mean": weights.mean(),
        "evidence/weight_min": weights.min(),
        "evidence/weight_max": weights.max(),
        "evidence/weight_at_min_frac": (weights <= w_min).float().mean(),
        "evidence/weight_at_max_frac": (weights >= w_max).float().mean(),
    }
    if scores is not None:
        metrics |= {
            "evidence/teacher_neg_logp_mean": neg_sum / num_tokens,
            "evidence/delta_mean": gap_sum / num_tokens,
            "evidence/delta_pos_frac": num_positive / num_tokens,
            "evidence/score_mean": scores.mean(),
            "evidence/score_std": scores.std(correction=0),
            "evidence/zero_std_group_frac": constant_groups(scores, num_generations).float().mean(),
        }
    return {key: value.item() for key, value in metrics.items()}
