"""Pins the gated sampled-token surrogate (eq. 24) and its aggregation. Moving these numbers changes the objective."""

import random

import pytest
import torch

from vzero_trl.losses import divergence_metric, loss_normalizer, sampled_token_loss, weighted_aggregate


# Two rollouts: the first has two valid tokens, the second one (its second position is padding).
LP_S = [[-1.0, -2.0], [-0.5, 0.0]]
LP_T = [[-1.5, -1.0], [-1.0, 0.0]]
MASK = torch.tensor([[1, 1], [1, 0]])
WEIGHTS = torch.tensor([2.0, 0.5])
# log-ratios d = lp_s - lp_t: row 0 [0.5, -1.0], row 1 [0.5]
# surrogate terms d * lp_s: row 0 [-0.5, 2.0], row 1 [-0.25]


def test_sampled_token_loss_sequence_hand_computed():
    # row means: 0.75 and -0.25; gated: 2 * 0.75 = 1.5 and 0.5 * -0.25 = -0.125; mean over rows = 0.6875
    loss = sampled_token_loss(torch.tensor(LP_S), torch.tensor(LP_T), MASK, WEIGHTS)
    assert loss.item() == pytest.approx(0.6875)


def test_sampled_token_loss_token_hand_computed():
    # (2 * (-0.5 + 2.0) + 0.5 * -0.25) / 3 tokens = 2.875 / 3
    loss = sampled_token_loss(torch.tensor(LP_S), torch.tensor(LP_T), MASK, WEIGHTS, aggregation="token")
    assert loss.item() == pytest.approx(2.875 / 3)


def test_log_ratio_clip_hand_computed():
    # clip 0.75: row 0 ratios [0.5, -0.75] -> terms [-0.5, 1.5], mean 0.5, gated 1.0; row 1 unchanged -0.125
    loss = sampled_token_loss(torch.tensor(LP_S), torch.tensor(LP_T), MASK, WEIGHTS, log_ratio_clip=0.75)
    assert loss.item() == pytest.approx((1.0 - 0.125) / 2)


def test_normalizer_replaces_the_local_denominator():
    lp_s, lp_t = torch.tensor(LP_S), torch.tensor(LP_T)
    # sums: sequence 1.5 - 0.125 = 1.375; token 2.875
    assert sampled_token_loss(lp_s, lp_t, MASK, WEIGHTS, normalizer=5).item() == pytest.approx(1.375 / 5)
    loss = sampled_token_loss(lp_s, lp_t, MASK, WEIGHTS, aggregation="token", normalizer=torch.tensor(10.0))
    assert loss.item() == pytest.approx(2.875 / 10)


def test_gradient_hand_computed():
    lp_s = torch.tensor(LP_S, requires_grad=True)
    sampled_token_loss(lp_s, torch.tensor(LP_T), MASK, WEIGHTS).backward()
    # d loss / d lp_s[i, k] = w_i * d_ik / (T_i * B): [2 * 0.5 / 4, 2 * -1 / 4], [0.5 * 0.5 / 2, 0 (padding)]
    torch.testing.assert_close(lp_s.grad, torch.tensor([[0.25, -0.5], [0.125, 0.0]]))

    lp_s.grad = None
    sampled_token_loss(lp_s, torch.tensor(LP_T), MASK, WEIGHTS, aggregation="token").backward()
    # d loss / d lp_s[i, k] = w_i * d_ik / 3 tokens
    torch.testing.assert_close(lp_s.grad, torch.tensor([[1.0 / 3, -2.0 / 3], [0.25 / 3, 0.0]]))


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_gradient_equals_gated_log_ratio_times_score_function(aggregation):
    """Through a real softmax policy: grad = sum_ik w_i (lp_s - lp_t)_ik grad(lp_s_ik) / normaliser."""
    torch.manual_seed(0)
    batch, length, vocab = 4, 5, 7
    theta = torch.randn(batch, length, vocab, requires_grad=True)
    tokens = torch.randint(vocab, (batch, length))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    teacher = torch.randn(batch, length, vocab).log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    weights = torch.tensor([0.0, 0.5, 1.5, 2.0])

    def student_logps():
        return theta.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    loss = sampled_token_loss(student_logps(), teacher, mask, weights, aggregation=aggregation)
    (grad,) = torch.autograd.grad(loss, theta)

    expected = torch.zeros_like(theta)
    lengths = mask.sum(-1)
    for i in range(batch):
        for k in range(int(lengths[i])):
            lp = student_logps()[i, k]
            (score,) = torch.autograd.grad(lp, theta)
            scale = batch * lengths[i] if aggregation == "sequence" else lengths.sum()
            expected += weights[i] * (lp.detach() - teacher[i, k]) * score / scale
    torch.testing.assert_close(grad, expected)


def test_masked_non_finite_values_do_not_poison_the_gradient():
    lp_s = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    lp_t = torch.tensor([[-1.5, -float("inf")]])
    loss = sampled_token_loss(lp_s, lp_t, torch.tensor([[1, 0]]), torch.ones(1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp_s.grad).all()
    assert lp_s.grad.tolist() == [[0.5, 0.0]]


def test_weights_receive_no_gradient():
    weights = torch.tensor([1.0, 1.0], requires_grad=True)
    lp_s = torch.tensor(LP_S, requires_grad=True)
    sampled_token_loss(lp_s, torch.tensor(LP_T), MASK, weights).backward()
    assert weights.grad is None


def test_unit_gates_give_plain_on_policy_distillation():
    """With w = 1, eq. 24 is the OPD surrogate of eqs. 3 and 7: (1/G) sum_g (1/T_g) sum_k sg[d] * lp_s."""
    rng = random.Random(0)
    rows, width = 6, 9
    lengths = [rng.randint(1, width) for _ in range(rows)]
    lp_s = [[rng.uniform(-5, 0) for _ in range(width)] for _ in range(rows)]
    lp_t = [[rng.uniform(-5, 0) for _ in range(width)] for _ in range(rows)]
    reference = sum(
        sum((lp_s[g][k] - lp_t[g][k]) * lp_s[g][k] for k in range(lengths[g])) / lengths[g] for g in range(rows)
    )
    reference /= rows
    mask = torch.tensor([[1 if k < n else 0 for k in range(width)] for n in lengths])
    loss = sampled_token_loss(
        torch.tensor(lp_s, dtype=torch.float64), torch.tensor(lp_t, dtype=torch.float64), mask, torch.ones(rows)
    )
    assert loss.item() == pytest.approx(reference, rel=1e-12)


def test_weighted_aggregate_rejects_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        weighted_aggregate(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1), aggregation="batch")


def test_the_normalizer_is_the_generation_batch_count_per_process():
    # 2 processes; the generation batch holds 12 rollouts and 30 valid tokens, which the base class passes as 30 / 2.
    tokens, sequences = torch.tensor(15.0), torch.tensor(12)
    assert loss_normalizer("token", tokens, sequences, 2) is tokens
    assert loss_normalizer("sequence", tokens, sequences, 2).item() == 6.0
    assert loss_normalizer("sequence", None, sequences, 2) is None  # no count from the base class: local means


def test_a_micro_batch_sum_over_the_normalizer_gives_the_generation_batch_mean():
    # Two micro-batches of one rollout each (per-token loss 1 and 3, 2 tokens each, gate 1): the "sequence" mean of
    # the whole batch is (1 + 3) / 2 = 2, and so is the sum of the two micro-batch losses.
    mask, weights = torch.ones(1, 2), torch.ones(1)
    normalizer = loss_normalizer("sequence", torch.tensor(4.0), torch.tensor(2), 1)
    parts = [weighted_aggregate(torch.full((1, 2), v), mask, weights, "sequence", normalizer) for v in (1.0, 3.0)]
    assert sum(parts).item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "beta,top_k,name",
    [
        (1.0, None, "distillation/reverse_kl"),
        (0.5, None, "distillation/divergence"),
        (1.0, 100, "distillation/divergence"),
    ],
)
def test_the_divergence_metric_is_named_after_what_the_loss_distils(beta, top_k, name):
    assert divergence_metric(beta, top_k) == name
