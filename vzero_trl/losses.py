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
by the count over the whole generation batch (divided by the number of processes, whose gradients DDP averages);
[`loss_normalizer`] picks it.

[`gated_distillation_loss`] is the trainer's whole objective for one micro-batch: from the student's hidden states it
scores the completion tokens ([`vzero_trl.scoring`]), applies the rollout importance correction when asked
([`vzero_trl.importance`]) and reduces with the gates. [`divergence_metric`] names what it distils in the logs.
"""

from typing import Literal

import torch

from .importance import importance_sums, truncated_importance_weights
from .scoring import completion_logps, completion_reverse_kl


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


def loss_normalizer(
    aggregation: Aggregation,
    num_items_in_batch: torch.Tensor | None,
    num_sequences_in_batch: torch.Tensor,
    num_processes: int,
) -> torch.Tensor | None:
    """
    The global denominator of a training micro-batch's loss (the `normalizer` of [`weighted_aggregate`]).

    Args:
        aggregation (`str`):
            `"token"` or `"sequence"`.
        num_items_in_batch (`torch.Tensor` or `None`):
            What the base `compute_loss` passes: the generation batch's valid completion tokens over all processes,
            divided by the number of processes; `None` when it passes none (then so is the result: local counts).
        num_sequences_in_batch (`torch.Tensor`):
            Rollouts in the generation batch over all processes.
        num_processes (`int`):
            Data-parallel processes, whose gradients DDP averages.

    Returns:
        `torch.Tensor` or `None`: tokens (`"token"`) or rollouts (`"sequence"`) per process of the whole generation
        batch, so that a micro-batch's sum divided by it, accumulated and averaged over processes, is the global mean.
    """
    if num_items_in_batch is None:
        return None
    return num_items_in_batch if aggregation == "token" else num_sequences_in_batch / num_processes


def check_top_k(top_k: int | None, vocab_size: int) -> None:
    """Refuse a `loss_top_k` larger than the vocabulary `vocab_size` (the smaller of the student's and teacher's)."""
    if top_k is not None and top_k > vocab_size:
        raise ValueError(
            f"`loss_top_k` ({top_k}) is larger than the vocabulary of the models ({vocab_size} tokens). "
            f"Set it to at most {vocab_size} (Vision-OPD uses 100), or unset it for the whole vocabulary."
        )


def divergence_metric(beta: float, top_k: int | None) -> str:
    """The logged name of the per-token divergence the loss distils: `"distillation/reverse_kl"` for the reverse KL,
    `"distillation/divergence"` when a generalized JSD (`beta < 1`) or a top-k support (`top_k`) replaces it."""
    return "distillation/reverse_kl" if beta == 1.0 and top_k is None else "distillation/divergence"


def gated_distillation_loss(
    hidden_states: torch.Tensor,
    lm_head: torch.nn.Module,
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    evidence_weights: torch.Tensor,
    *,
    loss_type: str,
    aggregation: str,
    temperature: float,
    normalizer: torch.Tensor | float | None = None,
    teacher_logps: torch.Tensor | None = None,
    log_ratio_clip: float | None = None,
    teacher_hidden_states: torch.Tensor | None = None,
    teacher_lm_head: torch.nn.Module | None = None,
    beta: float = 1.0,
    top_k: int | None = None,
    sampler_logps: torch.Tensor | None = None,
    importance_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """
    The gated distillation loss of one micro-batch from the student's hidden states: the sampled-token surrogate
    ([`sampled_token_loss`], eq. 24) against the positive-view teacher log-probabilities, or the
    full-vocabulary divergence ([`~vzero_trl.scoring.completion_reverse_kl`], eq. 22) against the teacher's hidden states, each token
    optionally reweighted by the rollout importance correction ([`vzero_trl.importance`]).

    Args:
        hidden_states (`torch.Tensor`):
            Student backbone output aligned with the completion, shape `(B, C, H)`.
        lm_head (`torch.nn.Module`):
            Student output projection, weight `(V, H)`.
        completion_ids (`torch.Tensor`):
            Sampled tokens `(B, C)`.
        mask (`torch.Tensor`):
            Completion mask `(B, C)`.
        evidence_weights (`torch.Tensor`):
            Gates `(B,)`.
        loss_type (`str`):
            `"sampled_token"` or `"full_reverse_kl"`.
        aggregation (`str`):
            `"sequence"` or `"token"`, see [`weighted_aggregate`].
        temperature (`float`):
            Softmax temperature.
        normalizer (`torch.Tensor` or `float`, *optional*):
            Global denominator, see [`weighted_aggregate`].
        teacher_logps (`torch.Tensor`, *optional*):
            Positive-view teacher log-probabilities `(B, C)`; needed by `"sampled_token"`.
        log_ratio_clip (`float`, *optional*):
            See [`sampled_token_loss`].
        teacher_hidden_states (`torch.Tensor`, *optional*), teacher_lm_head (`torch.nn.Module`, *optional*):
            Positive-view teacher hidden states `(B, C, H_t)` and output projection; needed by `"full_reverse_kl"`.
        beta (`float`, *optional*, defaults to `1.0`), top_k (`int`, *optional*):
            See [`~vzero_trl.scoring.completion_reverse_kl`].
        sampler_logps (`torch.Tensor`, *optional*):
            The sampler's log-probabilities `(B, C)` (`nan` where unknown); with `importance_clip`, turns on the
            importance correction.
        importance_clip (`float`, *optional*):
            The truncation `C` of the importance weights.

    Returns:
        `tuple`: the scalar loss; the per-token divergence `(B, C)` that the loss distils, detached (the sampled
        estimate `lp_s - lp_t` for `"sampled_token"`); the student's per-token entropy `(B, C)`, no gradient; and the
        [`~vzero_trl.importance.importance_sums`] `(2,)`, or `None` without importance correction.
    """
    student_logps, token_weights, importance = None, None, None
    if sampler_logps is not None:  # rollout importance correction, min(pi_train / pi_sampler, C) per token
        student_logps, entropy = completion_logps(
            hidden_states, lm_head, completion_ids, mask, temperature, with_entropy=True
        )
        token_weights, ratio = truncated_importance_weights(student_logps, sampler_logps, mask, importance_clip)
        importance = importance_sums(ratio, mask, importance_clip)

    if loss_type == "sampled_token":
        if student_logps is None:
            student_logps, entropy = completion_logps(
                hidden_states, lm_head, completion_ids, mask, temperature, with_entropy=True
            )
        loss = sampled_token_loss(
            student_logps,
            teacher_logps,
            mask,
            evidence_weights,
            aggregation=aggregation,
            log_ratio_clip=log_ratio_clip,
            normalizer=normalizer,
            token_weights=token_weights,
        )
        return loss, (student_logps - teacher_logps).detach(), entropy, importance  # sampled estimate of KL(s || t)
    per_token_kl, entropy = completion_reverse_kl(
        hidden_states,
        lm_head,
        teacher_hidden_states,
        teacher_lm_head,
        mask,
        temperature,
        beta=beta,
        top_k=top_k,
    )
    weighted = per_token_kl if token_weights is None else token_weights * per_token_kl
    loss = weighted_aggregate(weighted, mask, evidence_weights, aggregation, normalizer)
    return loss, per_token_kl.detach(), entropy, importance
