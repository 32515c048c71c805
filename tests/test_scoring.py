"""The chunked completion log-probabilities and divergences of `vzero_trl.scoring`, pinned against full-logits references
(and the generalized JSD against hand-computed values).

The references project every position to the whole vocabulary with a plain matmul and `log_softmax`, one token at a
time in Python loops, sharing no code with the tiled kernels. The vocabulary (20,000) is wider than two tiles of
`VOCAB_CHUNK_SIZE`, so the tiling itself is exercised.
"""

import math

import pytest
import torch

from vzero_trl.scoring import (
    VOCAB_CHUNK_SIZE,
    completion_logps,
    completion_reverse_kl,
    generalized_jsd,
    lm_head_params,
)


VOCAB = 20_000
HIDDEN = 16


def lm_head(seed: int, bias: bool = False, hidden: int = HIDDEN) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, VOCAB, bias=bias, dtype=torch.float64)
    head.weight.data.normal_(std=0.5)
    if bias:
        head.bias.data.normal_(std=0.5)
    return head


def batch(seed: int, hidden: int = HIDDEN):
    """Two rollouts of 5 tokens, the second with 2 tokens of padding (whose ids would be out of range if projected)."""
    generator = torch.Generator().manual_seed(seed)
    hidden_states = torch.randn(2, 5, hidden, generator=generator, dtype=torch.float64)
    ids = torch.randint(0, VOCAB, (2, 5), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids[1, 3:] = -100  # padding: never gathered
    return hidden_states, ids, mask


def reference_logps(hidden_states, head, ids, mask, temperature=1.0):
    rows = []
    for b in range(ids.size(0)):
        row = []
        for k in range(ids.size(1)):
            if not mask[b, k]:
                row.append(0.0)
                continue
            logits = head(hidden_states[b, k]) / temperature
            row.append(logits.log_softmax(-1)[ids[b, k]].item())
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_vocabulary_spans_several_tiles():
    assert VOCAB > 2 * VOCAB_CHUNK_SIZE


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_completion_logps_match_full_logits(temperature, bias):
    head = lm_head(0, bias=bias)
    hidden_states, ids, mask = batch(1)
    logps, entropy = completion_logps(hidden_states, head, ids, mask, temperature)
    assert entropy is None and logps.dtype == torch.float32 and logps.shape == (2, 5)
    expected = reference_logps(hidden_states, head, ids, mask, temperature)
    torch.testing.assert_close(logps.double(), expected, atol=1e-5, rtol=0)
    assert (logps[1, 3:] == 0).all()


def test_completion_entropy_matches_full_logits():
    head = lm_head(2)
    hidden_states, ids, mask = batch(3)
    _, entropy = completion_logps(hidden_states, head, ids, mask, with_entropy=True)
    for b in range(2):
        for k in range(5):
            if not mask[b, k]:
                assert entropy[b, k] == 0
                continue
            logps = head(hidden_states[b, k]).log_softmax(-1)
            expected = -(logps.exp() * logps).sum().item()  # Shannon entropy in nats
            assert entropy[b, k].item() == pytest.approx(expected, abs=1e-4)
    assert not entropy.requires_grad


def test_completion_logps_gradients_match_full_logits():
    head = lm_head(4, bias=True)
    hidden_states, ids, mask = batch(5)
    hidden_states.requires_grad_(True)
    logps, _ = completion_logps(hidden_states, head, ids, mask)
    weights = torch.arange(10, dtype=torch.float32).view(2, 5)  # a different gradient per token
    (logps * weights).sum().backward()
    got = (hidden_states.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())

    hidden_states.grad = head.weight.grad = head.bias.grad = None
    total = 0
    for b in range(2):
        for k in range(5):
            if mask[b, k]:
                total = total + weights[b, k] * head(hidden_states[b, k]).log_softmax(-1)[ids[b, k]]
    total.backward()
    for value, expected in zip(got, (hidden_states.grad, head.weight.grad, head.bias.grad), strict=True):
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-4)
    assert (got[0][1, 3:] == 0).all()  # padding gets no gradient


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_reverse_kl_matches_full_logits(temperature):
    student, teacher = lm_head(6), lm_head(7, hidden=24)
    student_hidden, ids, mask = batch(8)
    teacher_hidden, _, _ = batch(9, hidden=24)
    student_hidden.requires_grad_(True)
    kl, entropy = completion_reverse_kl(student_hidden, student, teacher_hidden, teacher, mask, temperature)
    (kl * torch.arange(10).view(2, 5)).sum().backward()
    got = (student_hidden.grad.clone(), student.weight.grad.clone())
    assert teacher.weight.grad is None  # the gradient flows to the student only

    student_hidden.grad = student.weight.grad = None
    total = 0
    for b in range(2):
        for k in range(5):
            if not mask[b, k]:
                assert kl[b, k] == 0 and entropy[b, k] == 0
                continue
            s = (student(student_hidden[b, k]) / temperature).log_softmax(-1)
            t = (teacher(teacher_hidden[b, k]) / temperature).log_softmax(-1)
            expected = (s.exp() * (s - t)).sum()  # KL(pi_s || pi_t), eq. 21
            assert kl[b, k].item() == pytest.approx(expected.item(), abs=1e-5)
            assert entropy[b, k].item() == pytest.approx(-(s.exp() * s).sum().item(), abs=1e-4)
            total = total + (5 * b + k) * expected
    total.backward()
    torch.testing.assert_close(got[0], student_hidden.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(got[1], student.weight.grad, atol=1e-6, rtol=1e-4)


def test_lm_head_params_are_the_plain_tensors():
    head = lm_head(10, bias=True)
    weight, bias = lm_head_params(head)
    assert weight is head.weight and bias is head.bias
    assert lm_head_params(lm_head(11))[1] is None


def test_fully_masked_batch_scores_zero():
    head = lm_head(12)
    hidden_states, ids, _ = batch(13)
    logps, entropy = completion_logps(hidden_states, head, ids, torch.zeros(2, 5), with_entropy=True)
    assert logps.abs().sum() == 0 and entropy.abs().sum() == 0 and not math.isnan(logps.sum().item())


def reference_divergence(s_logits, t_logits, beta, top_k):
    """One position, written from the definition: optionally restrict both to the teacher's top-k tokens and
    renormalise, then JSD_beta = beta KL(t || m) + (1 - beta) KL(s || m), m = (1 - beta) s + beta t; beta = 1: KL(s || t)."""
    if top_k is not None:
        keep = sorted(range(VOCAB), key=lambda v: -t_logits[v].item())[:top_k]
        s_logits, t_logits = s_logits[keep], t_logits[keep]
    s, t = s_logits.softmax(-1), t_logits.softmax(-1)
    if beta == 1.0:
        return (s * (s.log() - t.log())).sum()
    m = (1 - beta) * s + beta * t
    return beta * (t * (t.log() - m.log())).sum() + (1 - beta) * (s * (s.log() - m.log())).sum()


@pytest.mark.parametrize("beta,top_k", [(0.5, None), (0.2, None), (0.5, 100), (1.0, 7), (0.9, 3)])
def test_generalized_jsd_and_top_k_match_the_definition_value_and_gradient(beta, top_k):
    student, teacher = lm_head(16, bias=True), lm_head(17, hidden=24)
    student_hidden, ids, mask = batch(18)
    teacher_hidden, _, _ = batch(19, hidden=24)
    student_hidden.requires_grad_(True)
    divergence, entropy = completion_reverse_kl(
        student_hidden, student, teacher_hidden, teacher, mask, 0.8, beta=beta, top_k=top_k
    )
    gates = torch.tensor([[2.0], [0.5]])  # per-rollout gates, as the trainer applies them
    (divergence * gates).sum().backward()
    got = (student_hidden.grad.clone(), student.weight.grad.clone(), student.bias.grad.clone())
    assert teacher.weight.grad is None

    student_hidden.grad = student.weight.grad = student.bias.grad = None
    total = 0
    for b in range(2):
        for k in range(5):
            if not mask[b, k]:
                assert divergence[b, k] == 0 and entropy[b, k] == 0
                continue
            s_logits = student(student_hidden[b, k]) / 0.8
            t_logits = (teacher(teacher_hidden[b, k]) / 0.8).detach()
            expected = reference_divergence(s_logits, t_logits, beta, top_k)
            assert divergence[b, k].item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)
            s = s_logits.log_softmax(-1)
            assert entropy[b, k].item() == pytest.approx(-(s.exp() * s).sum().item(), abs=1e-4)
            total = total + gates[b, 0] * expected
    total.backward()
    for value, expected in zip(got, (student_hidden.grad, student.weight.grad, student.bias.grad), strict=True):
        torch.testing.assert_close(value, expected, atol=1e-7, rtol=1e-5)
    assert got[0].abs().sum() > 0


def test_top_k_one_is_zero_and_full_top_k_is_the_full_divergence():
    """Hand-checkable ends: one token renormalises to probability 1 on both sides; all tokens is the full vocabulary."""
    student, teacher = lm_head(20), lm_head(21)
    hidden, _, mask = batch(22)
    other, _, _ = batch(23)
    one, _ = completion_reverse_kl(hidden, student, other, teacher, mask, beta=0.5, top_k=1)
    assert one.abs().max() < 1e-12
    everything, _ = completion_reverse_kl(hidden, student, other, teacher, mask, beta=0.5, top_k=VOCAB)
    full, _ = completion_reverse_kl(hidden, student, other, teacher, mask, beta=0.5)
    torch.testing.assert_close(everything, full, atol=1e-7, rtol=1e-6)


def test_fully_masked_batch_has_zero_top_k_divergence_and_gradient():
    student, teacher = lm_head(24), lm_head(25)
    hidden, _, _ = batch(26)
    other, _, _ = batch(27)
    hidden.requires_grad_(True)
    divergence, entropy = completion_reverse_kl(hidden, student, other, teacher, torch.zeros(2, 5), beta=0.5, top_k=5)
    divergence.sum().backward()
    assert divergence.abs().sum() == 0 and entropy.abs().sum() == 0 and hidden.grad.abs().sum() == 0


def test_generalized_jsd_hand_computed():
    # p_s = [0.5, 0.5], p_t = [0.8, 0.2]; beta = 0.5: m = 0.5 s + 0.5 t = [0.65, 0.35], JSD = the mean of the two KLs.
    s = torch.tensor([0.5, 0.5]).log()
    t = torch.tensor([0.8, 0.2]).log()
    m = [0.65, 0.35]
    kl_t = 0.8 * math.log(0.8 / m[0]) + 0.2 * math.log(0.2 / m[1])
    kl_s = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    assert generalized_jsd(s, t, 0.5).item() == pytest.approx(0.5 * kl_t + 0.5 * kl_s)
    # beta = 0.25: m = 0.75 s + 0.25 t = [0.575, 0.425]
    m = [0.575, 0.425]
    kl_t = 0.8 * math.log(0.8 / m[0]) + 0.2 * math.log(0.2 / m[1])
    kl_s = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    assert generalized_jsd(s, t, 0.25).item() == pytest.approx(0.25 * kl_t + 0.75 * kl_s)
    # beta = 1: the reverse KL(s || t)
    assert generalized_jsd(s, t, 1.0).item() == pytest.approx(0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2))
