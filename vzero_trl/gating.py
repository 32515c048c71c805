"""Contrastive evidence gating, V-Zero eqs. 17-20, as pure torch functions.

The teacher replays every student rollout twice: once with the positive crop (question-relevant evidence) and once with
the negative crop (an equal-size region away from the target). Per token, the evidence gap is `d = pos - neg` (eq. 17);
per rollout, the score is the mean gap over completion tokens (eq. 18); within each prompt's group of `G` sibling
rollouts the scores are standardised (eq. 19) and mapped to a detached gate `w = clip(1 + alpha * a, w_min, w_max)`
(eq. 20, with the official code's `alpha` knob). Groups are contiguous rows: rows `[k * G, (k + 1) * G)` are the `G`
rollouts of prompt `k`, which is how the trainer's sampler lays them out.

Nothing here knows about models, ranks or configs: the trainer gathers scores across processes before calling
[`evidence_weights`] so that a group split over ranks is still normalised as one group.
"""

from typing import Literal

import torch


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
