"""The gated distillation objective, V-Zero eqs. 22-24, as pure torch functions.

Sampled-token mode (eq. 24) is the surrogate `w_i * sg[clip(lp_s - lp_t)] * lp_s` per completion token, whose gradient
is the gated sampled reverse-KL gradient `w_i * (lp_s - lp_t) * grad(lp_s)` against the positive teacher view. The full
reverse-KL mode (eq. 22) weights each token's exact `KL(pi_s || pi_t)` by the same per-rollout gate. Both reduce through
[`weighted_aggregate`], the single place where gates meet the loss:

- `"sequence"`: mean over rollouts of each rollout's token mean, `(1 / N) sum_i w_i (1 / T_i) sum_k l_ik` (eqs. 22, 24,
  Algorithm 1 line 21);
- `"token"`: one mean over every valid token of the batch, `sum_ik w_i l_ik / sum_i T_i` (the official verl code), so
  longer rollouts weigh more.

`normalizer` replaces the local denominator (`N` rollouts or `sum_i T_i` tokens) by a global one, which is how the
trainer keeps the update identical under gradient accumulation and data parallelism: each micro-batch divides its sum
by the count over the whole generation batch (divided by the number of processes, whose gradients DDP averages).
"""

import math
from typing import Literal

import torch


Aggregation = Literal["sequence", "token"]


def weighted_aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    aggregation: Aggregation = "sequence",
    normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """
    Reduce a per-token loss to a scalar, each rollout scaled by its gate.

    Args:
        per_token (`torch.Tensor`):
            Per-token loss of shape `(B, C)`. Values at masked positions are ignored, even if they are not finite.
        mask (`torch.Tensor`):
            Completion mask of shape `(B, C)`; nonzero marks a token that counts.
        weights (`torch.Tensor`):
            Per-rollout gates of shape `(B,)`, used as constants (no gradient flows into them).
        aggregation (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"` or `"token"`, see the module docstring.
        normalizer (`torch.Tensor` or `float`, *optional*):
            Denominator to use instead of the local one: a number of rollouts for `"sequence"`, a number of tokens for
            `"token"`. A rollout without valid tokens contributes zero but is still counted by `"sequence"`.

    Returns:
        `torch.Tensor`: scalar loss.
    """
    valid = mask.bool()
    weighted = weights.detach().to(per_token.dtype).unsqueeze(-1) * per_token
    weighted = torch.where(valid, weighted, torch.zeros_like(weighted))
    if aggregation == "sequence":
        total = (weighted.sum(-1) / valid.sum(-1).clamp(min=1)).sum()
        denominator = per_token.size(0) if normalizer is None else normalizer
    elif aggregation == "token":
        total = weighted.sum()
        denominator = valid.sum().clamp(min=1) if normalizer is None else normalizer
    else:
        raise ValueError(f"`aggregation` must be 'sequence' or 'token', got {aggregation!r}.")
    return total / denominator


def sampled_token_loss(
    student_logps: torch.Tensor,
    teacher_logps: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    aggregation: Aggregation = "sequence",
    log_ratio_clip: float | None = None,
    normalizer: torch.Tensor | float | None = None,
    token_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Gated sampled-token reverse-KL surrogate (eq. 24): per token `w_i * sg[clip(lp_s - lp_t)] * lp_s`, times a detached
    per-token weight `rho_ik` if given (the rollout importance correction, [`vzero_trl.importance`]).

    Its value is not a KL (it is `~ -w * d * H` in size); its gradient with respect to the student is
    `w_i * clip(lp_s - lp_t) * grad(lp_s)`, normalised as [`weighted_aggregate`] documents.

    Args:
        student_logps (`torch.Tensor`):
            Student log-probabilities of the sampled tokens, shape `(B, C)`, carrying the gradient.
        teacher_logps (`torch.Tensor`):
            Positive-view teacher log-probabilities of the same tokens, shape `(B, C)`.
        mask (`torch.Tensor`):
            Completion mask of shape `(B, C)`.
        weights (`torch.Tensor`):
            Evidence gates of shape `(B,)` (all ones for plain on-policy distillation).
        aggregation (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"` (eq. 24) or `"token"` (official code).
        log_ratio_clip (`float`, *optional*):
            If set, the detached log-ratio is clamped to `[-log_ratio_clip, log_ratio_clip]` (the official code uses
            `10`).
        normalizer (`torch.Tensor` or `float`, *optional*):
            See [`weighted_aggregate`].
        token_weights (`torch.Tensor`, *optional*):
            Per-token weights `(B, C)`, used as constants.

    Returns:
        `torch.Tensor`: scalar surrogate loss.
    """
    log_ratio = (student_logps - teacher_logps).detach()
    # Zeroed where masked: a non-finite ratio there would turn the zero gradient of the product into NaN.
    log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    if log_ratio_clip is not None:
        log_ratio = log_ratio.clamp(min=-log_ratio_clip, max=log_ratio_clip)
    per_token = log_ratio * student_logps
    if token_weights is not None:
        per_token = token_weights.detach().to(per_token.dtype) * per_token
    return weighted_aggregate(per_token, mask, weights, aggregation, normalizer)


def generalized_jsd(student_logps: torch.Tensor, teacher_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """
    Generalized Jensen-Shannon divergence between two distributions over the last axis, in TRL's `beta` convention
    (`trl.DistillationTrainer`, TRL 1.16): with the mixture `m = (1 - beta) * p_s + beta * p_t`,
    `JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`. `beta = 1` is defined as the reverse KL
    `KL(p_s || p_t)` (the limit of the formula is 0 there, so TRL special-cases it, and so do we); `beta = 0.5` is the
    symmetric JSD of Vision-OPD (its "alpha 0.5").

    Args:
        student_logps (`torch.Tensor`):
            Normalised student log-probabilities `(..., V)`, carrying the gradient.
        teacher_logps (`torch.Tensor`):
            Normalised teacher log-probabilities `(..., V)` (treated as constants by the caller).
        beta (`float`):
            In `(0, 1]`.

    Returns:
        `torch.Tensor`: the divergence per position, shape `(...)`.
    """
    student_probs = student_logps.exp()
    if beta == 1.0:
        return (student_probs * (student_logps - teacher_logps)).sum(-1)
    mixture = torch.logaddexp(student_logps + math.log(1 - beta), teacher_logps + math.log(beta))
    teacher_term = (teacher_logps.exp() * (teacher_logps - mixture)).sum(-1)
    student_term = (student_probs * (student_logps - mixture)).sum(-1)
    return beta * teacher_term + (1 - beta) * student_term
