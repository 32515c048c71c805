"""Per-token log-probabilities of completions, from a model's hidden states and its `lm_head`.

V-Zero needs log-probabilities of the sampled tokens only: the student's (with gradient) and the teacher's under each
evidence view. Projecting the hidden states at the completion positions in vocabulary tiles with
`trl.kernels.ChunkedLogProbFunction` never materialises the `(tokens x vocabulary)` logits, which for Qwen3.5's 248k
vocabulary and 2,048-token completions would cost gigabytes per rollout.
"""

import torch
from torch.distributed.tensor import DTensor
from trl.kernels import ChunkedLogProbFunction
from trl.kernels.chunked_divergence import ChunkedDivergenceFunction  # not exported by `trl.kernels`; trl is pinned
from trl.trainer.utils import maybe_gather_lm_head_ctx


# Vocabulary tile width: a (4096 tokens x 8192) tile is 64 MiB in bf16.
VOCAB_CHUNK_SIZE = 8192


def lm_head_params(lm_head: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    The `lm_head` weight `(V, H)` and bias `(V,)` as plain tensors: an FSDP2 `DTensor` is gathered once here (with a
    gradient path back to the shards) instead of once per vocabulary tile.
    """
    weight, bias = lm_head.weight, lm_head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    return weight, bias


def completion_logps(
    hidden_states: torch.Tensor,
    lm_head: torch.nn.Module,
    completion_ids: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Log-probabilities of the completion tokens, computed only at the valid positions.

    Args:
        hidden_states (`torch.Tensor`):
            Backbone output aligned with the completion, shape `(B, C, H)`: position `k` predicts `completion_ids[:, k]`.
        lm_head (`torch.nn.Module`):
            The model's output projection (`get_output_embeddings()`), weight `(V, H)`.
        completion_ids (`torch.Tensor`):
            Sampled tokens of shape `(B, C)`.
        mask (`torch.Tensor`):
            Completion mask of shape `(B, C)`; masked positions are not projected and get log-probability `0`.
        temperature (`float`, *optional*, defaults to `1.0`):
            Logits are divided by it before the softmax.
        with_entropy (`bool`, *optional*, defaults to `False`):
            Also return the per-token entropy of the predicted distribution (in nats).

    Returns:
        `tuple[torch.Tensor, torch.Tensor | None]`: log-probabilities `(B, C)` in float32, differentiable with respect
        to `hidden_states` and the `lm_head`; and the entropy `(B, C)` (no gradient) or `None`.
    """
    valid = mask.bool()
    weight, bias = lm_head_params(lm_head)
    outputs = ("entropy",) if with_entropy else ()
    with maybe_gather_lm_head_ctx(weight, bias):
        logps, entropy, *_ = ChunkedLogProbFunction.apply(
            hidden_states[valid],
            weight,
            bias,
            completion_ids[valid],
            temperature=temperature,
            chunk_size=VOCAB_CHUNK_SIZE,
            final_logit_softcapping=None,
            logit_scale=1.0,
            outputs=outputs,
        )
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=hidden_states.device)
    per_token_logps = zeros.masked_scatter(valid, logps.float())
    per_token_entropy = zeros.masked_scatter(valid, entropy.detach().float()) if with_entropy else None
    return per_token_logps, per_token_entropy


def completion_reverse_kl(
    student_hidden_states: torch.Tensor,
    student_lm_head: torch.nn.Module,
    teacher_hidden_states: torch.Tensor,
    teacher_lm_head: torch.nn.Module,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Exact per-token reverse KL `KL(pi_s || pi_t)` over the full vocabulary (eq. 21), at the valid completion positions,
    in vocabulary tiles (`trl`'s chunked divergence kernel, whose backward honours per-token gradient weights).

    Args:
        student_hidden_states (`torch.Tensor`):
            Student backbone output aligned with the completion, shape `(B, C, H_s)`.
        student_lm_head (`torch.nn.Module`):
            Student output projection, weight `(V, H_s)`.
        teacher_hidden_states (`torch.Tensor`):
            Teacher backbone output aligned with the same completion tokens, shape `(B, C, H_t)`.
        teacher_lm_head (`torch.nn.Module`):
            Teacher output projection, weight `(V, H_t)`; the vocabulary must match the student's.
        mask (`torch.Tensor`):
            Completion mask of shape `(B, C)`.
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature of both distributions.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: per-token reverse KL `(B, C)` (gradient to the student only) and the
        student's per-token entropy `(B, C)` (no gradient), both float32 and `0` at masked positions.
    """
    valid = mask.bool()
    student_weight, student_bias = lm_head_params(student_lm_head)
    teacher_weight, teacher_bias = lm_head_params(teacher_lm_head)
    teacher_hidden = teacher_hidden_states[valid].to(device=student_hidden_states.device)
    divergence, entropy = ChunkedDivergenceFunction.apply(
        student_hidden_states[valid],
        student_weight,
        student_bias,
        teacher_hidden,
        teacher_weight,
        teacher_bias,
        beta=1.0,  # selects the reverse KL
        temperature=temperature,
    )
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=student_hidden_states.device)
    return zeros.masked_scatter(valid, divergence.float()), zeros.masked_scatter(valid, entropy.detach().float())
