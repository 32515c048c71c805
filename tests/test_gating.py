"""Pins V-Zero's contrastive evidence gate (eqs. 17-20). Moving these numbers changes the objective."""

import math
import random
import statistics

import pytest
import torch

from vzero_trl.gating import (
    constant_groups,
    evidence_metrics,
    evidence_scores,
    evidence_token_sums,
    evidence_weights,
    group_slices,
    group_standardize,
    rollout_groups,
)


def test_evidence_scores_hand_computed():
    # d = pos - neg = [-1 - (-2), -0.5 - (-0.25)] = [1.0, -0.25]; the third token is masked (and infinite).
    pos = torch.tensor([[-1.0, -0.5, -math.inf]])
    neg = torch.tensor([[-2.0, -0.25, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # gamma = 1: mean(1.0, -0.25) = 0.375 (eq. 18)
    assert evidence_scores(pos, neg, mask).tolist() == [0.375]
    # gamma = 2: token scores [1.0, -2 * 0.25] = [1.0, -0.5] -> mean 0.25
    assert evidence_scores(pos, neg, mask, gamma=2.0).tolist() == [0.25]
    # gamma = 0: only positive gaps count -> mean(1.0, 0) = 0.5
    assert evidence_scores(pos, neg, mask, gamma=0.0).tolist() == [0.5]


def test_evidence_scores_fully_masked_row_is_zero():
    pos = torch.tensor([[-1.0, -2.0], [float("nan"), -math.inf]])
    neg = torch.tensor([[-3.0, -2.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    # row 0: gaps [2, 0] -> 1.0; row 1 has no valid token
    assert evidence_scores(pos, neg, mask).tolist() == [1.0, 0.0]


def test_group_standardize_population_and_sample_hand_computed():
    # group [0.25, -0.25]: mean 0, population std 0.25 -> +-0.25 / (0.25 + 1e-6)
    a = group_standardize(torch.tensor([0.25, -0.25]), num_generations=2)
    expected = 0.25 / (0.25 + 1e-6)
    torch.testing.assert_close(a, torch.tensor([expected, -expected]))
    # sample std with Bessel: sqrt((0.0625 + 0.0625) / 1) = 0.353553 -> +-0.707105
    a = group_standardize(torch.tensor([0.25, -0.25]), num_generations=2, std="sample")
    expected = 0.25 / (math.sqrt(0.125) + 1e-6)
    torch.testing.assert_close(a, torch.tensor([expected, -expected]))


def test_group_standardize_groups_are_contiguous():
    # groups [1, 2, 3, 4] and [10, 10, 10, 40]; population std of the first is sqrt(1.25) = 1.118034
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 40.0])
    a = group_standardize(values, num_generations=4, eps=0.0)
    first = [-1.5 / math.sqrt(1.25), -0.5 / math.sqrt(1.25), 0.5 / math.sqrt(1.25), 1.5 / math.sqrt(1.25)]
    # second: mean 17.5, deviations [-7.5, -7.5, -7.5, 22.5], population std sqrt(675 / 4) = 12.990381
    second = [-7.5 / math.sqrt(168.75)] * 3 + [22.5 / math.sqrt(168.75)]
    torch.testing.assert_close(a, torch.tensor(first + second))


def test_group_standardize_constant_groups_and_singletons_give_exact_zero():
    # In float32 the mean of eight 0.7s is not exactly 0.7: a naive (p - mean) / (std + eps) gives 0.0563 per rollout.
    values = torch.tensor([0.7] * 8 + [0.5, 0.6, 0.7, 0.8, 0.5, 0.6, 0.7, 0.8])
    a = group_standardize(values, num_generations=8)
    assert a[:8].tolist() == [0.0] * 8
    assert a[8] < 0 < a[11]
    assert constant_groups(values, 8).tolist() == [True, False]
    assert group_standardize(torch.tensor([3.0, -1.0]), num_generations=1).tolist() == [0.0, 0.0]
    assert group_standardize(torch.tensor([3.0, -1.0]), num_generations=1, std="sample").tolist() == [0.0, 0.0]


def test_group_standardize_rejects_partial_groups_and_bad_std():
    with pytest.raises(ValueError, match="num_generations=4"):
        group_standardize(torch.zeros(6), num_generations=4)
    with pytest.raises(ValueError, match="std"):
        group_standardize(torch.zeros(4), num_generations=2, std="unbiased")
    with pytest.raises(ValueError, match="1-D"):
        group_standardize(torch.zeros(2, 2), num_generations=2)


def test_evidence_weights_hand_computed():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a = [-1.5 / math.sqrt(1.25), -0.5 / math.sqrt(1.25), 0.5 / math.sqrt(1.25), 1.5 / math.sqrt(1.25)]
    # alpha = 1 (paper): 1 + a = [-0.3416, 0.5528, 1.4472, 2.3416] -> clipped to [0, 2]
    w = evidence_weights(scores, num_generations=4, eps=0.0)
    torch.testing.assert_close(w, torch.tensor([0.0, 1 + a[1], 1 + a[2], 2.0]))
    # alpha = 0.5 (official code): [0.3292, 0.7764, 1.2236, 1.6708], nothing clipped
    w = evidence_weights(scores, num_generations=4, alpha=0.5, eps=0.0)
    torch.testing.assert_close(w, torch.tensor([1 + 0.5 * x for x in a]))
    # alpha = 0 switches gating off
    assert evidence_weights(scores, num_generations=4, alpha=0.0).tolist() == [1.0] * 4
    # tighter bounds clip both ends
    w = evidence_weights(scores, num_generations=4, alpha=0.5, w_min=0.5, w_max=1.5, eps=0.0)
    torch.testing.assert_close(w, torch.tensor([0.5, 1 + 0.5 * a[1], 1 + 0.5 * a[2], 1.5]))


def test_evidence_weights_are_detached():
    scores = torch.tensor([0.3, -0.2, 0.9, 0.1], requires_grad=True)
    w = evidence_weights(scores, num_generations=2)
    assert not w.requires_grad


def _paper_reference(pos, neg, lengths, num_generations, alpha, w_min, w_max, eps):
    """Eqs. 17-20 and Algorithm 1 lines 11-17, one rollout and one token at a time."""
    scores = []
    for i, length in enumerate(lengths):
        gaps = [pos[i][k] - neg[i][k] for k in range(length)]  # eq. 17
        scores.append(sum(gaps) / length)  # eq. 18
    weights = []
    for start in range(0, len(scores), num_generations):
        group = scores[start : start + num_generations]
        mu, sigma = statistics.fmean(group), statistics.pstdev(group)  # MeanStd, eq. 19
        for p in group:
            a = (p - mu) / (sigma + eps) if sigma > 0 else 0.0
            weights.append(min(max(1 + alpha * a, w_min), w_max))  # eq. 20
    return scores, weights


@pytest.mark.parametrize("num_generations,alpha", [(4, 1.0), (8, 0.5), (2, 2.0)])
def test_gate_matches_naive_loop_from_the_paper(num_generations, alpha):
    rng = random.Random(num_generations)
    batch, width = 4 * num_generations, 11
    lengths = [rng.randint(1, width) for _ in range(batch)]
    pos = [[rng.uniform(-6, 0) for _ in range(width)] for _ in range(batch)]
    neg = [[rng.uniform(-6, 0) for _ in range(width)] for _ in range(batch)]
    mask = torch.tensor([[1 if k < n else 0 for k in range(width)] for n in lengths])

    ref_scores, ref_weights = _paper_reference(pos, neg, lengths, num_generations, alpha, 0.0, 2.0, 1e-6)
    scores = evidence_scores(torch.tensor(pos, dtype=torch.float64), torch.tensor(neg, dtype=torch.float64), mask)
    weights = evidence_weights(scores, num_generations, alpha=alpha)
    torch.testing.assert_close(scores, torch.tensor(ref_scores, dtype=torch.float32))
    torch.testing.assert_close(weights, torch.tensor(ref_weights, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_rollout_groups_follow_the_sampler_layout():
    # G = 4, 2 rows per process: process 1 holds rows 2-3 of group 0, process 2 rows 4-5, the start of group 1.
    assert rollout_groups(8, 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert rollout_groups(2, 4, first_row=2).tolist() == [0, 0]
    assert rollout_groups(3, 2, first_row=3).tolist() == [1, 2, 2]


def test_group_slices_are_the_runs_of_one_group():
    assert group_slices(torch.tensor([4, 4, 5, 5, 5])) == [slice(0, 2), slice(2, 5)]
    assert group_slices(torch.tensor([1, 2, 2])) == [slice(0, 1), slice(1, 3)]
    assert group_slices(torch.tensor([7])) == [slice(0, 1)]


def test_evidence_metrics_hand_computed():
    # Two rollouts of one group, the second with one masked (and infinite) token. Valid gaps: [1.0, -0.25, 0.5].
    pos = torch.tensor([[-1.0, -0.5], [-2.0, -math.inf]])
    neg = torch.tensor([[-2.0, -0.25], [-2.5, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    sums = evidence_token_sums(pos, neg, mask)
    assert sums.tolist() == [3.0, -3.5, -4.75, 1.25, 2.0]
    scores = evidence_scores(pos, neg, mask)  # [0.375, 0.5]
    weights = torch.tensor([0.0, 2.0])
    metrics = evidence_metrics(sums, weights, scores, num_generations=2, w_min=0.0, w_max=2.0)
    assert metrics == pytest.approx(
        {
            "evidence/teacher_pos_logp_mean": -3.5 / 3,
            "evidence/teacher_neg_logp_mean": -4.75 / 3,
            "evidence/delta_mean": 1.25 / 3,
            "evidence/delta_pos_frac": 2 / 3,
            "evidence/score_mean": 0.4375,
            "evidence/score_std": 0.0625,  # population std
            "evidence/zero_std_group_frac": 0.0,
            "evidence/weight_mean": 1.0,
            "evidence/weight_min": 0.0,
            "evidence/weight_max": 2.0,
            "evidence/weight_at_min_frac": 0.5,
            "evidence/weight_at_max_frac": 0.5,
        }
    )
    # Summed over processes, the sums give the means of the whole batch.
    both = evidence_token_sums(pos[:1], neg[:1], mask[:1]) + evidence_token_sums(pos[1:], neg[1:], mask[1:])
    assert both.tolist() == sums.tolist()


def test_evidence_metrics_without_the_negative_view():
    pos = torch.tensor([[-1.0, -3.0]])
    sums = evidence_token_sums(pos, None, torch.tensor([[1, 1]]))
    metrics = evidence_metrics(sums, torch.ones(4), None, num_generations=2, w_min=0.0, w_max=2.0)
    assert metrics["evidence/teacher_pos_logp_mean"] == -2.0 and metrics["evidence/weight_mean"] == 1.0
    assert not any(key in metrics for key in ("evidence/teacher_neg_logp_mean", "evidence/score_mean"))
