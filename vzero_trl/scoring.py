"""Per-token log-probabilities of completions, from a model's hidden states and its `lm_head`.

V-Zero needs log-probabilities of the sampled tokens only: the student's (with gradient) and the teacher's under each
evidence view. Projecting the hidden states at the completion positions in vocabulary tiles with
`trl.kernels.ChunkedLogProbFunction` never materialises the `(tokens x vocabulary)` logits, which for Qwen3.5's 248k
vocabulary and 2,048-token completions would cost gigabytes per rollout. The full-vocabulary divergences of the
full reverse-KL mode ([`completion_reverse_kl`]: reverse KL, or the generalized JSD [`generalized_jsd`], optionally on
the teacher's top-k tokens) are computed here the same way. "Scoring" means this everywhere in the package (the
`teacher_scoring` and `student_scoring` strategies choose how the hidden states are produced); [`vzero_trl.losses`]
turns the scores into the gated loss.
"""

import math

import torch
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint
from trl.kernels import ChunkedLogProbFunction
from trl.kernels.chunked_divergence import ChunkedDivergenceFunction  # not exported by `trl.kernels`; trl is pinned
from trl.trainer.utils import maybe_gather_lm_head_ctx


# Vocabulary tile width: a (4096 tokens x 8192) tile is 64 MiB in bf16.
VOCAB_CHUNK_SIZE = 8192
# Tokens per full-logits chunk of the top-k divergence: (256 x 248k) float32 logits are 254 MiB per model.
TOKEN_CHUNK_SIZE = 256


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
    beta: float = 1.0,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Exact per-token reverse KL `KL(pi_s || pi_t)` over the full vocabulary (eq. 21), or the generalized JSD for
    `beta < 1` ([`generalized_jsd`]), at the valid completion positions.

    Over the full vocabulary it runs in vocabulary tiles (`trl`'s chunked divergence kernel, whose backward honours
    per-token gradient weights). With `top_k` (Vision-OPD's top-100), both distributions are restricted to the
    teacher's `top_k` most likely tokens at each position and renormalised over them before the divergence; that path
    materialises `(TOKEN_CHUNK_SIZE, V)` logits per chunk and recomputes them in the backward.

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
        beta (`float`, *optional*, defaults to `1.0`):
            In `(0, 1]`: `1` is the reverse KL, below it the generalized JSD in TRL's convention.
        top_k (`int`, *optional*):
            Restrict the divergence to the teacher's `top_k` tokens at each position (renormalised).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: per-token divergence `(B, C)` (gradient to the student only) and the
        student's per-token full-vocabulary entropy `(B, C)` (no gradient), both float32 and `0` at masked positions.
    """
    valid = mask.bool()
    student_weight, student_bias = lm_head_params(student_lm_head)
    teacher_weight, teacher_bias = lm_head_params(teacher_lm_head)
    teacher_hidden = teacher_hidden_states[valid].to(device=student_hidden_states.device)
    if top_k is None:
        divergence, entropy = ChunkedDivergenceFunction.apply(
            student_hidden_states[valid],
            student_weight,
            student_bias,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            beta,  # 1 selects the reverse KL, (0, 1) the generalized JSD, in the convention of `generalized_jsd`
            temperature,
        )
    else:
        divergence, entropy = _top_k_divergence(
            student_hidden_states[valid],
            student_weight,
            student_bias,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            beta,
            top_k,
            temperature,
        )
    zeros = torch.zeros(valid.shape, dtype=torch.float32, device=student_hidden_states.device)
    return zeros.masked_scatter(valid, divergence.float()), zeros.masked_scatter(valid, entropy.detach().float())


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    return torch.nn.functional.linear(hidden, weight, bias).float() / temperature


def _top_k_chunk(student_hidden, student_weight, student_bias, teacher_logits, beta, top_k, temperature):
    student_logits = _logits(student_hidden, student_weight, student_bias, temperature)
    top = teacher_logits.topk(top_k, dim=-1).indices
    student_top = student_logits.gather(-1, top).log_softmax(-1)
    teacher_top = teacher_logits.gather(-1, top).log_softmax(-1)
    full = student_logits.detach().log_softmax(-1)
    return generalized_jsd(student_top, teacher_top, beta), -(full.exp() * full).sum(-1)


def _top_k_divergence(
    student_hidden,
    student_weight,
    student_bias,
    teacher_hidden,
    teacher_weight,
    teacher_bias,
    beta,
    top_k,
    temperature,
):
    """`(N, H)` hidden states -> the top-k divergence and the student's full-vocabulary entropy, both `(N,)`, in
    chunks of `TOKEN_CHUNK_SIZE` tokens whose logits are recomputed in the backward instead of stored."""
    divergences, entropies = [], []
    for start in range(0, student_hidden.size(0), TOKEN_CHUNK_SIZE):
        rows = slice(start, start + TOKEN_CHUNK_SIZE)
        with torch.no_grad():
            teacher_logits = _logits(teacher_hidden[rows], teacher_weight, teacher_bias, temperature)
        divergence, entropy = checkpoint(
            _top_k_chunk,
            student_hidden[rows],
            student_weight,
            student_bias,
            teacher_logits,
            beta,
            top_k,
            temperature,
            use_reentrant=False,
        )
        divergences.append(divergence)
        entropies.append(entropy)
    if not divergences:  # nothing valid: keep the graph connected to the student
        empty = student_hidden.sum() * 0
        return empty.expand(0), empty.detach().expand(0)
    return torch.cat(divergences), torch.cat(entropies)


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
