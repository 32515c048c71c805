"""Rollout importance correction: weights from known sampler log-probabilities, through a stand-in vLLM engine."""

import math

import pytest
import torch
from helpers import (
    full_distribution,
    generation_batch,
    load,
    make_trainer,
    reference_logps,
    student_view,
    teacher_view,
)

from vzero_trl.importance import sampler_token_logps, truncated_importance_weights
from vzero_trl.toy.synthetic import make_dataset


# log(pi_train / pi_sampler) per completion token, chosen so that the first ratio (e ~ 2.72) is clipped at 2.
OFFSETS = [1.0, -0.2, -1.5, 0.5]
CLIP = 2.0


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(8, seed=1)


def test_sampler_token_logps_picks_the_sampled_token_among_the_ranked_ones():
    completions = [[7, 3], [5], [2]]  # the third was cut to the fill token 2, which vLLM did not sample
    logprobs = [[[-0.1, -2.5], [-0.3]], [[-0.7, -1.2]], [[-0.4]]]
    token_ids = [[[4, 7], [3]], [[5, 9]], [[8]]]
    assert sampler_token_logps(completions, logprobs, token_ids) == [
        [-2.5, -0.3],
        [-0.7],
        [pytest.approx(math.nan, nan_ok=True)],
    ]


def test_truncated_importance_weights_hand_computed():
    train = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, 0.0, 0.0]])
    sampler = torch.tensor([[-1.5, -1.0, math.nan], [-3.0, 0.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    weights, ratios = truncated_importance_weights(train, sampler, mask, clip=1.5)
    # ratios e^0.5 = 1.6487 (clipped to 1.5), e^-1 = 0.3679, unknown -> 1; row 1: e^0 = 1, masked -> 1
    torch.testing.assert_close(ratios, torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(weights, torch.tensor([[1.5, math.exp(-1.0), 1.0], [1.0, 1.0, 1.0]]))
    train.requires_grad_(True)
    assert not truncated_importance_weights(train, sampler, mask, clip=1.5)[0].requires_grad


class KnownLogprobsVLLM:
    """Stands in for trl's VLLMGeneration (vLLM needs a GPU): every row gets the same completion, and log-probabilities
    ranked as vLLM returns them with `logprobs=1` (a distractor token ranked above the sampled one)."""

    def __init__(self, completion, sampler_logps):
        self.completion, self.sampler_logps, self.requests = completion, sampler_logps, []

    def sync_weights(self):
        pass

    def generate(self, prompts, images, num_generations, profiler):
        self.requests.append(num_generations)
        logprobs = [[[0.0, value] for value in self.sampler_logps] for _ in prompts]
        token_ids = [[[token + 1, token] for token in self.completion] for _ in prompts]
        return None, [list(self.completion) for _ in prompts], logprobs, token_ids


@pytest.mark.parametrize("loss_type", ["sampled_token", "full_reverse_kl"])
def test_importance_weights_from_known_sampler_logprobs_enter_the_loss(tiny_models, tmp_path, dataset, loss_type):
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=4)
    eos = trainer._tokenizer.eos_token_id
    completion = [11, 12, 13, eos]
    row = dataset[0]
    student, processor = load(tiny_models[0])
    train_logps = reference_logps(student, processor, student_view(row), completion)
    sampler = [lp - offset for lp, offset in zip(train_logps, OFFSETS, strict=True)]
    trainer.use_vllm, trainer.vllm_mode, trainer._last_loaded_step = True, "server", -1
    trainer.vllm_generation = KnownLogprobsVLLM(completion, sampler)
    trainer.args.rollout_importance_clip, trainer.args.loss_type = CLIP, loss_type

    batch = generation_batch(trainer, [row] * 4)
    torch.testing.assert_close(batch["sampler_logps"], torch.tensor([sampler] * 4), atol=1e-6, rtol=0)
    batch["evidence_weights"] = torch.tensor([1.0, 2.0, 0.0, 0.5])
    loss = trainer.compute_loss(trainer.model, batch)

    rho = [min(math.exp(offset), CLIP) for offset in OFFSETS]  # [2, e^-0.2, e^-1.5, e^0.5]
    assert rho[0] == CLIP and rho[3] == pytest.approx(1.6487, abs=1e-4)
    if loss_type == "sampled_token":  # rho * (lp_s - lp_t) * lp_s per token
        per_token = [
            r * (lp - t) * lp for r, lp, t in zip(rho, train_logps, batch["teacher_logps"][0].tolist(), strict=True)
        ]
    else:  # rho * KL(pi_s || pi_t) per token (eq. 21), from full-logits references
        teacher, t_proc = load(tiny_models[1])
        per_token = []
        for k, r in enumerate(rho):
            p_s = full_distribution(student, processor, student_view(row), completion[:k])
            p_t = full_distribution(teacher, t_proc, teacher_view(row, "crop"), completion[:k])
            per_token.append(r * (p_s.exp() * (p_s - p_t)).sum().item())
    expected = sum(w * sum(per_token) / len(per_token) for w in (1.0, 2.0, 0.0, 0.5)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["rollout_is/ratio_mean"][-1] == pytest.approx(sum(math.exp(o) for o in OFFSETS) / 4, abs=1e-4)
    assert metrics["rollout_is/clipped_frac"][-1] == pytest.approx(1 / 4)


def test_importance_correction_trains_and_logs(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=4)
    eos = trainer._tokenizer.eos_token_id
    trainer.use_vllm, trainer.vllm_mode, trainer._last_loaded_step = True, "colocate", -1
    trainer.vllm_generation = KnownLogprobsVLLM([11, 12, eos], [-9.0, -9.0, -9.0])
    trainer.args.rollout_importance_clip = CLIP
    trainer.train()
    assert trainer.vllm_generation.requests == [1, 1]  # colocated: one completion per repeated row
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["rollout_is/ratio_mean"] > 0 and 0 <= entry["rollout_is/clipped_frac"] <= 1
