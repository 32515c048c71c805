"""Rollout importance correction: vLLM samples the rollouts, the trainer scores them, and the two disagree slightly.

vLLM's kernels, precision and (between weight syncs) weights differ from the trainer's, so a rollout is drawn from
`pi_sampler`, not from the `pi_train` the loss assumes. The token-level truncated importance weight
`min(pi_train / pi_sampler, C)` (Vision-OPD clips at `C = 2.0`), detached, reweights each token of the loss back
towards `pi_train`. [`sampler_token_logps`] reads `pi_sampler` from what vLLM returns, [`padded_sampler_logps`] lines
it up with the completions; [`truncated_importance_weights`] is the weight, [`importance_sums`] what is logged of it.
"""

import math

import torch


def sampler_token_logps(
    completions: list[list[int]],
    logprobs: list[list[list[float | None]]],
    logprob_token_ids: list[list[list[int]]],
) -> list[list[float]]:
    """
    The sampler's log-probability of each sampled token, as `trl`'s `VLLMGeneration.generate` returns them.

    Args:
        completions (`list[list[int]]`):
            The completions, possibly cut shorter than vLLM sampled them (e.g. at a vision token by
            [`~vzero_trl.views.truncate_at_tokens`]); a position whose token vLLM did not sample (the fill token of a
            cut that left nothing) gets `nan`.
        logprobs (`list[list[list[float | None]]]`):
            Per completion and position, the log-probabilities vLLM returned, ranked (the sampled token among them).
        logprob_token_ids (`list[list[list[int]]]`):
            The token ids of `logprobs`, same shape.

    Returns:
        `list[list[float]]`: one log-probability per completion token (`nan` where unknown).
    """
    result = []
    for tokens, row_logps, row_ids in zip(completions, logprobs, logprob_token_ids, strict=True):
        values = []
        for k, token in enumerate(tokens):
            ranked = dict(zip(row_ids[k], row_logps[k], strict=True)) if k < len(row_ids) else {}
            value = ranked.get(token)
            values.append(math.nan if value is None else value)
        result.append(values)
    return result


def truncated_importance_weights(
    train_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Token-level truncated importance weights `min(exp(lp_train - lp_sampler), clip)`, detached.

    Args:
        train_logps (`torch.Tensor`):
            The trainer's log-probabilities of the sampled tokens, `(B, C)`.
        sampler_logps (`torch.Tensor`):
            The sampler's, `(B, C)`; `nan` where unknown (the weight is then `1`).
        mask (`torch.Tensor`):
            Completion mask `(B, C)`; masked positions get weight `1`.
        clip (`float`):
            The truncation `C`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the weights `(B, C)` (no gradient), and the untruncated ratios `(B, C)`
        (`1` at masked or unknown positions), for logging.
    """
    known = mask.bool() & ~sampler_logps.isnan()
    log_ratio = torch.where(known, train_logps.detach().float() - sampler_logps.float(), 0.0)
    ratio = log_ratio.exp()
    return ratio.clamp(max=clip), ratio


def padded_sampler_logps(values: list[list[float]], shape: torch.Size, device: torch.device) -> torch.Tensor:
    """
    [`sampler_token_logps`] as a tensor right-padded like the completions.

    Args:
        values (`list[list[float]]`):
            One log-probability per completion token (`nan` where unknown), `B` rows of at most `C` values.
        shape (`torch.Size`):
            The completions' shape `(B, C)`.
        device (`torch.device`):
            Where the tensor goes.

    Returns:
        `torch.Tensor`: `(B, C)`, `0` past each completion's end (masked by the completion mask).
    """
    sampler_logps = torch.zeros(shape, device=device)
    for row, row_values in enumerate(values):
        sampler_logps[row, : len(row_values)] = torch.tensor(row_values)
    return sampler_logps


def importance_sums(ratio: torch.Tensor, mask: torch.Tensor, clip: float) -> torch.Tensor:
    """
    The logged sums of a micro-batch's importance ratios, to reduce over processes before dividing by the tokens.

    Args:
        ratio (`torch.Tensor`):
            Untruncated ratios `(B, C)` from [`truncated_importance_weights`].
        mask (`torch.Tensor`):
            Completion mask `(B, C)`.
        clip (`float`):
            The truncation `C`.

    Returns:
        `torch.Tensor`: `(2,)`, the sum of the ratios and the number of truncated ones over the valid tokens.
    """
    valid = mask.bool()
    return torch.stack([ratio[valid].sum(), (ratio[valid] > clip).sum().float()])


def importance_metrics(sums: torch.Tensor, num_tokens: torch.Tensor) -> dict[str, float]:
    """The logged `rollout_is/*` metrics from [`importance_sums`] `(2,)` and the valid token count, both summed over
    processes: the mean ratio `pi_train / pi_sampler` and the fraction of tokens whose ratio was truncated."""
    total = num_tokens.clamp(min=1)
    return {"rollout_is/ratio_mean": (sums[0] / total).item(), "rollout_is/clipped_frac": (sums[1] / total).item()}
