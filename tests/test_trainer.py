"""End-to-end tests of VZeroTrainer on tiny random Qwen3.5 VLMs, checked against references written from the paper."""

import copy
import logging
import warnings

import numpy as np
import pytest
import torch
from datasets import Dataset, Image
from helpers import (
    completions_of,
    full_distribution,
    generation_batch,
    load,
    make_args,
    make_trainer,
    reference_logps,
    replay,
    student_view,
    teacher_view,
)
from peft import LoraConfig
from PIL import Image as PILImage
from transformers import AutoConfig

from vzero_trl import VZeroTrainer
from vzero_trl.gating import evidence_scores, evidence_weights
from vzero_trl.images import to_rgb
from vzero_trl.toy.synthetic import make_dataset


EVIDENCE_METRICS = [
    "evidence/score_mean",
    "evidence/score_std",
    "evidence/delta_mean",
    "evidence/delta_pos_frac",
    "evidence/weight_mean",
    "evidence/weight_min",
    "evidence/weight_max",
    "evidence/weight_at_min_frac",
    "evidence/weight_at_max_frac",
    "evidence/zero_std_group_frac",
    "evidence/teacher_pos_logp_mean",
    "evidence/teacher_neg_logp_mean",
]


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


# --- references -------------------------------------------------------------------------------------------------------


def reference_teacher_logps(tiny_models, rows, batch, crop_column):
    """`(B, T)` teacher log-probs of each row's completion, each row scored alone with full logits, zero-padded."""
    teacher, processor = load(tiny_models[1])
    logps = torch.zeros_like(batch["teacher_logps"])
    for i, (row, completion) in enumerate(zip(rows, completions_of(batch), strict=True)):
        logps[i, : len(completion)] = torch.tensor(
            reference_logps(teacher, processor, teacher_view(row, crop_column), completion)
        )
    return logps


def reference_gated_divergence(tiny_models, rows, batch, divergence):
    """The gated full-distribution loss from its definition: each rollout's mean over its tokens of
    `divergence(student_logps, teacher_logps)` (two `(V,)` log-distributions of one position, each row alone), times
    its gate, averaged over rollouts."""
    student, s_proc = load(tiny_models[0])
    teacher, t_proc = load(tiny_models[1])
    total = 0.0
    for i, (row, completion) in enumerate(zip(rows, completions_of(batch), strict=True)):
        values = []
        for k in range(len(completion)):
            p_s = full_distribution(student, s_proc, student_view(row), completion[:k])
            p_t = full_distribution(teacher, t_proc, teacher_view(row, "crop"), completion[:k])
            values.append(divergence(p_s, p_t))
        total += batch["evidence_weights"][i].item() * sum(values) / len(values)
    return total / len(rows)


# --- teacher replay ---------------------------------------------------------------------------------------------------


def test_teacher_replay_matches_each_row_scored_alone(tiny_models, tmp_path, dataset):
    """Left-padded, chunked teacher log-probs equal a full-logits forward of each row alone, token 0 included."""
    # A bias towards the end of sequence makes the random student stop at different lengths.
    eos = load(tiny_models[0])[1].tokenizer.convert_tokens_to_ids("<|im_end|>")
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=2,
        teacher_batch_size=3,
        generation_kwargs={"sequence_bias": [[[eos], 4.0]]},
    )
    rows = [dataset[0], dataset[0], dataset[5], dataset[5]]
    # Different image sizes make the teacher prompts differ in length, so the batch really is left padded.
    rows[2]["image"] = rows[2]["image"].resize((320, 192))
    rows[3]["image"] = rows[3]["image"].resize((320, 192))
    batch = generation_batch(trainer, rows)
    completions = completions_of(batch)
    assert len({len(c) for c in completions}) > 1 and not batch["completion_mask"].all(), "want ragged completions"

    teacher, processor = load(tiny_models[1])
    columns = ["crop", "negative_crop"]
    scored = replay(trainer, rows, batch, columns, "per_sequence", rows_per_forward=3)
    for crop_column, (batched, _) in zip(columns, scored, strict=True):
        for i, row in enumerate(rows):
            expected = reference_logps(teacher, processor, teacher_view(row, crop_column), completions[i])
            torch.testing.assert_close(batched[i, : len(completions[i])], torch.tensor(expected), atol=1e-5, rtol=0)
            assert (batched[i, len(completions[i]) :] == 0).all()
    # the loss distils from the positive view (scored here by the shared-prefix path, the default)
    torch.testing.assert_close(batch["teacher_logps"], scored[0][0], atol=1e-5, rtol=0)
    assert not torch.equal(scored[0][0], scored[1][0])


@pytest.mark.parametrize("teacher_scoring", ["shared_prefix", "per_sequence"])
@pytest.mark.parametrize("ids", ["one id for both", "no id column"])
def test_two_questions_about_one_image_are_replayed_with_their_own_prompts(
    tiny_models, tmp_path, dataset, teacher_scoring, ids
):
    """Groups come from the sampler, not from ids: two questions sharing an id (e.g. an image id) stay apart."""
    first = dict(dataset[0], id="image-0")
    second = dict(first, prompt=[{"role": "user", "content": "How many shapes touch the left edge of the image?"}])
    data = Dataset.from_list([first, second], features=dataset.features)
    if ids == "no id column":
        data = data.remove_columns("id")
    trainer = make_trainer(
        tiny_models, tmp_path, data, num_generations=2, max_steps=1, teacher_scoring=teacher_scoring
    )
    recorded = []
    generate = trainer._generate_and_score_completions

    def record(inputs):
        rows = copy.deepcopy(inputs)
        recorded.append((rows, generate(inputs)))
        return recorded[-1][1]

    trainer._generate_and_score_completions = record
    trainer.train()
    ((rows, batch),) = recorded
    questions = [row["prompt"][0]["content"] for row in rows]
    assert questions[0] == questions[1] != questions[2] == questions[3]  # the two prompts, each G = 2 times

    pos, neg = (reference_teacher_logps(tiny_models, rows, batch, column) for column in ("crop", "negative_crop"))
    torch.testing.assert_close(batch["teacher_logps"], pos, atol=1e-5, rtol=0)
    # the gates, from both views (tolerance as in `test_gates_follow_the_paper_from_both_views`)
    expected = evidence_weights(evidence_scores(pos, neg, batch["completion_mask"]), num_generations=2)
    torch.testing.assert_close(batch["evidence_weights"], expected, atol=2e-3, rtol=0)


def test_first_completion_token_is_scored_after_the_full_teacher_prompt(tiny_models, tmp_path, dataset):
    """Guards the official code's off-by-one: token 0 is predicted by the last teacher-prompt position."""
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=2, per_device_train_batch_size=2)
    rows = [dataset[1], dataset[1]]
    batch = generation_batch(trainer, rows)
    teacher, processor = load(tiny_models[1])
    prompt = processor.apply_chat_template(
        [teacher_view(rows[0], "crop")],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        next_token = teacher(**prompt).logits[0, -1].log_softmax(-1)
    first = batch["completion_ids"][0, 0]
    assert batch["teacher_logps"][0, 0].item() == pytest.approx(next_token[first].item(), abs=1e-5)


# --- gates ------------------------------------------------------------------------------------------------------------


def test_gates_follow_the_paper_from_both_views(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8)
    rows = [dataset[2]] * 4 + [dataset[3]] * 4
    batch = generation_batch(trainer, rows)
    pos, neg = (reference_teacher_logps(tiny_models, rows, batch, column) for column in ("crop", "negative_crop"))
    expected = evidence_weights(evidence_scores(pos, neg, batch["completion_mask"]), num_generations=4)
    # The random teacher's gaps are ~1e-3, so standardising turns the 1e-6 log-prob noise of batched vs single-row
    # scoring into ~5e-4 on the weights; a wrong rule (sample std, wrong groups, wrong alpha) moves them by > 0.05.
    torch.testing.assert_close(batch["evidence_weights"], expected, atol=2e-3, rtol=0)
    assert batch["evidence_weights"].min() < 1 < batch["evidence_weights"].max()


# --- loss -------------------------------------------------------------------------------------------------------------


def reference_student_logps(tiny_models, rows, batch):
    student, processor = load(tiny_models[0])
    return [
        reference_logps(student, processor, student_view(row), c)
        for row, c in zip(rows, completions_of(batch), strict=True)
    ]


def test_alpha_zero_is_plain_on_policy_distillation_without_negative_pass(tiny_models, tmp_path, dataset):
    """With the gate off, the loss is the OPD surrogate of eqs. 3 and 7 and the negative crops are never read."""
    no_negatives = dataset.remove_columns(["negative_crop"])
    trainer = make_trainer(tiny_models, tmp_path, no_negatives, evidence_alpha=0.0)
    rows = [no_negatives[4]] * 4
    batch = generation_batch(trainer, rows)
    assert batch["evidence_weights"].tolist() == [1.0] * 4
    loss = trainer.compute_loss(trainer.model, batch)

    teacher, processor = load(tiny_models[1])
    student_lps = reference_student_logps(tiny_models, rows, batch)
    expected = 0.0
    for row, lp_s, completion in zip(rows, student_lps, completions_of(batch), strict=True):
        lp_t = reference_logps(teacher, processor, teacher_view(row, "crop"), completion)
        expected += sum((s - t) * s for s, t in zip(lp_s, lp_t, strict=True)) / len(completion)
    assert loss.item() == pytest.approx(expected / len(rows), abs=1e-5)

    trainer.train()  # a whole run without a negative_crop column
    assert "evidence/teacher_neg_logp_mean" not in trainer.state.log_history[0]
    assert trainer.state.log_history[0]["evidence/weight_mean"] == 1.0


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_gated_sampled_token_loss_matches_eq_24(tiny_models, tmp_path, dataset, aggregation):
    trainer = make_trainer(tiny_models, tmp_path, dataset, loss_aggregation=aggregation, log_ratio_clip=0.5)
    rows = [dataset[6]] * 4
    batch = generation_batch(trainer, rows)
    batch["evidence_weights"] = torch.tensor([0.0, 0.5, 1.5, 2.0])  # distinct gates make the weighting visible
    loss = trainer.compute_loss(trainer.model, batch)

    completions = completions_of(batch)
    student_lps = reference_student_logps(tiny_models, rows, batch)
    terms = []
    for i, (lp_s, completion) in enumerate(zip(student_lps, completions, strict=True)):
        lp_t = batch["teacher_logps"][i, : len(completion)].tolist()
        row = [
            max(-0.5, min(0.5, s - t)) * s * batch["evidence_weights"][i].item()
            for s, t in zip(lp_s, lp_t, strict=True)
        ]
        terms.append(row)
    if aggregation == "sequence":
        expected = sum(sum(row) / len(row) for row in terms) / len(terms)
    else:
        expected = sum(map(sum, terms)) / sum(map(len, terms))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_full_reverse_kl_matches_eq_22(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset, loss_type="full_reverse_kl")
    rows = [dataset[7]] * 4
    batch = generation_batch(trainer, rows)
    assert batch["teacher_hidden_states"].shape[:2] == batch["completion_ids"].shape
    batch["evidence_weights"] = torch.tensor([2.0, 0.0, 1.0, 0.25])
    loss = trainer.compute_loss(trainer.model, batch)

    def reverse_kl(p_s, p_t):  # eq. 21
        return (p_s.exp() * (p_s - p_t)).sum().item()

    assert loss.item() == pytest.approx(reference_gated_divergence(tiny_models, rows, batch, reverse_kl), abs=1e-5)

    trainer.train()
    kls = [entry["distillation/reverse_kl"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(kls) == 2 and all(kl > 0 for kl in kls)  # the exact KL of two different models is positive


def test_gated_top_k_jsd_matches_its_definition(tiny_models, tmp_path, dataset):
    """Vision-OPD's objective (top-k generalized JSD, beta 0.5) with V-Zero's per-rollout gate, end to end."""
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, loss_type="full_reverse_kl", beta=0.5, loss_top_k=50, max_steps=1
    )
    rows = [dataset[6]] * 4
    batch = generation_batch(trainer, rows)
    batch["evidence_weights"] = torch.tensor([0.5, 2.0, 0.0, 1.0])
    loss = trainer.compute_loss(trainer.model, batch)

    def top_k_jsd(p_s, p_t):
        top = p_t.topk(50).indices
        s, t = p_s[top].softmax(-1), p_t[top].softmax(-1)  # renormalised over the teacher's top 50
        m = 0.5 * s + 0.5 * t
        return (0.5 * (t * (t / m).log()).sum() + 0.5 * (s * (s / m).log()).sum()).item()

    assert loss.item() == pytest.approx(reference_gated_divergence(tiny_models, rows, batch, top_k_jsd), abs=1e-5)

    trainer.train()
    entry = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert entry["distillation/divergence"] > 0 and "distillation/reverse_kl" not in entry


def test_a_top_k_larger_than_the_vocabulary_is_refused_at_construction(tiny_models, tmp_path, dataset):
    # It used to be accepted and to die at the first step inside torch's topk.
    vocab_size = AutoConfig.from_pretrained(tiny_models[0]).get_text_config().vocab_size
    make_trainer(tiny_models, tmp_path, dataset, loss_type="full_reverse_kl", loss_top_k=vocab_size, max_steps=1)
    with pytest.raises(
        ValueError, match=rf"`loss_top_k` \({vocab_size + 1}\) is larger than the vocabulary.*at most {vocab_size}"
    ):
        make_trainer(tiny_models, tmp_path, dataset, loss_type="full_reverse_kl", loss_top_k=vocab_size + 1)


def test_the_teacher_scores_the_crop_as_prepare_data_converts_it(tiny_models, tmp_path, dataset):
    # A 16-bit grey crop: prepare_data maps 0..65535 onto 0..255, the processor's own conversion clipped every value
    # above 255 to white, and the teacher scored another crop than the data holds.
    trainer = make_trainer(tiny_models, tmp_path, dataset, evidence_alpha=0.0)
    grey = np.asarray(dataset[0]["crop"].convert("L"), dtype=np.uint16) * 257
    crop = PILImage.fromarray(grey)  # mode I;16
    scored = []
    for view in (crop, to_rgb(crop)):
        torch.manual_seed(0)
        scored.append(generation_batch(trainer, [{**dataset[0], "crop": view}] * 4))
    assert torch.equal(scored[0]["completion_ids"], scored[1]["completion_ids"])
    torch.testing.assert_close(scored[0]["teacher_logps"], scored[1]["teacher_logps"], rtol=0, atol=0)


def test_rows_that_the_crop_only_view_cannot_use_are_refused_before_training(tiny_models, tmp_path, dataset):
    two = dataset.select(range(4)).map(lambda r: {"images": [r["image"], r["image"]]}, remove_columns=["image"])
    with pytest.raises(ValueError, match=r"train_dataset row id=.*it has 2 images, and `teacher_view: crop_only`"):
        make_trainer(tiny_models, tmp_path, two, teacher_view="crop_only")


# --- training runs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient_checkpointing", [False, True])  # True is TRL's default
def test_training_run_changes_every_parameter_and_logs_evidence_metrics(
    tiny_models, tmp_path, dataset, gradient_checkpointing
):
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=3,
        gradient_checkpointing=gradient_checkpointing,
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    unchanged = [name for name, p in trainer.model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        for key in [*EVIDENCE_METRICS, "distillation/reverse_kl", "entropy", "completions/vision_token_cut_frac"]:
            assert key in entry, key
        assert (
            0.0 <= entry["evidence/weight_min"] <= entry["evidence/weight_mean"] <= entry["evidence/weight_max"] <= 2.0
        )


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_gradient_accumulation_gives_the_update_of_one_large_batch(tiny_models, tmp_path, dataset, aggregation):
    """SGD (not Adam, whose first step hides gradient scale) makes the parameter change proportional to the gradient."""
    settings = dict(
        num_generations=2,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        max_grad_norm=0.0,
        loss_aggregation=aggregation,
        lr_scheduler_type="constant",
        shuffle_dataset=False,
    )
    updates = []
    for per_device, accumulation in ((4, 1), (2, 2), (1, 4)):
        trainer = make_trainer(
            tiny_models,
            tmp_path / f"{per_device}",
            dataset,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            **settings,
        )
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        trainer.train()
        updates.append({name: p.detach() - before[name] for name, p in trainer.model.named_parameters()})
    for other in updates[1:]:
        for name, delta in updates[0].items():
            torch.testing.assert_close(other[name], delta, atol=1e-6, rtol=1e-4, msg=name)
    assert max(delta.abs().max() for delta in updates[0].values()) > 1e-4


def test_lora_student_trains_only_the_adapter(tiny_models, tmp_path, dataset):
    student, teacher = tiny_models
    trainer = VZeroTrainer(
        model=str(student),
        teacher_model=str(teacher),
        args=make_args(tmp_path, gradient_checkpointing=True),  # PEFT + checkpointing needs input gradients
        train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "in_proj_qkv"]),
    )
    params = dict(trainer.model.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    trainer.train()
    trainable = [name for name, p in params.items() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert all(not torch.equal(params[name], before[name]) for name in trainable if "lora_B" in name)
    assert all(torch.equal(p, before[name]) for name, p in params.items() if not p.requires_grad)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_evaluation_uses_groups_and_logs_evidence(tiny_models, tmp_path, dataset):
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        eval_dataset=dataset.select(range(3)),
        num_generations=4,
        num_generations_eval=2,
        per_device_eval_batch_size=4,
        eval_strategy="steps",
        eval_steps=1,
    )
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and "eval_evidence/weight_mean" in metrics
    assert "eval_evidence/score_std" in metrics


# --- generation -------------------------------------------------------------------------------------------------------


def test_vision_tokens_are_never_sampled(tiny_models, tmp_path, dataset):
    _, processor = load(tiny_models[0])
    tokenizer = processor.tokenizer
    vision = [
        tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    ]
    (red,) = tokenizer.encode(" red", add_special_tokens=False)
    # A huge bias on every vision token and on "red": without suppression the vision tokens would dominate.
    bias = [[[token], 30.0] for token in [*vision, red]]
    trainer = make_trainer(tiny_models, tmp_path, dataset, generation_kwargs={"sequence_bias": bias})
    assert set(vision) <= set(trainer.generation_config.suppress_tokens)
    batch = generation_batch(trainer, [dataset[0]] * 4)
    sampled = set(batch["completion_ids"][batch["completion_mask"].bool()].tolist())
    assert not sampled & set(vision)
    assert red in sampled  # the bias works, so only the suppression kept the vision tokens out


# --- model card -------------------------------------------------------------------------------------------------------


def test_model_card_describes_a_v_zero_vision_language_model(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset, evidence_alpha=0.5, loss_aggregation="token")
    trainer.create_model_card(model_name="tiny-vzero", dataset_name="someone/vzero-data", tags=["custom"])
    card = (tmp_path / "out" / "README.md").read_text()
    metadata = card.split("---")[1]
    assert "pipeline_tag: image-text-to-text" in metadata and "library_name: transformers" in metadata
    for tag in ("v-zero", "trl", "distillation", "custom"):
        assert f"- {tag}" in metadata
    assert "- someone/vzero-data" in metadata  # a Hub dataset id goes into the card's metadata
    assert "base_model" not in metadata  # the student is a local folder, not a Hub id
    assert 'pipeline("image-text-to-text", model="tiny-vzero")' in card
    assert f"`{tiny_models[1]}`" in card  # the teacher
    assert "| `evidence_alpha` | 0.5 |" in card and "| `loss_aggregation` | token |" in card
    assert (
        "| `num_generations` | 4 |" in card and "| `prompts per step` | 1 |" in card and "| `max_steps` | 2 |" in card
    )
    assert "@misc{sun2026vzero," in card and "text-generation" not in card


# --- bad input --------------------------------------------------------------------------------------------------------


def test_missing_evidence_column_fails_at_construction(tiny_models, tmp_path, dataset):
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['negative_crop'\]"):
        make_trainer(tiny_models, tmp_path, dataset.remove_columns(["negative_crop"]))
    with pytest.raises(ValueError, match="`crop_column`"):
        make_trainer(tiny_models, tmp_path, dataset, crop_column="zoom")


def test_evidence_column_with_paths_fails_with_cast_hint(tiny_models, tmp_path, dataset):
    paths = dataset.remove_columns(["crop"]).add_column("crop", ["crop.png"] * len(dataset))
    with pytest.raises(ValueError, match=r"cast_column\('crop', datasets.Image\(\)\)"):
        make_trainer(tiny_models, tmp_path, paths)


def test_row_without_a_crop_image_fails_naming_the_row(tiny_models, tmp_path, dataset):
    rows = dataset.select(range(4)).to_list()
    rows[2]["crop"] = None
    broken = Dataset.from_list(rows, features=dataset.features).cast_column("crop", Image())
    trainer = make_trainer(tiny_models, tmp_path, broken, shuffle_dataset=False, num_generations=2)
    with pytest.raises(
        ValueError, match=r"row id='synthetic-0-000002': column 'crop' must hold a PIL image, got NoneType"
    ):
        trainer.train()


def test_non_conversational_prompt_fails_naming_the_row(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset)
    rows = [dict(dataset[0], prompt="What is the color of the star?")] * 4
    with pytest.raises(ValueError, match="row id='synthetic-0-000000': `prompt` must be conversational"):
        generation_batch(trainer, rows)


def test_tokenizer_processor_is_rejected(tiny_models, tmp_path, dataset):
    _, processor = load(tiny_models[0])
    with pytest.raises(ValueError, match="multimodal processor"):
        VZeroTrainer(
            model=str(tiny_models[0]),
            teacher_model=str(tiny_models[1]),
            args=make_args(tmp_path),
            train_dataset=dataset,
            processing_class=processor.tokenizer,
        )


class RecordingVLLM:
    """Stands in for trl's VLLMGeneration (vLLM needs a GPU): records each request, answers like the server does
    (this process's slice of the completions), and samples a vision token in the first completion."""

    def __init__(self, vision_token, eos):
        self.requests, self.syncs, self.vision_token, self.eos = [], 0, vision_token, eos

    def sync_weights(self):
        self.syncs += 1

    def generate(self, prompts, images, num_generations, profiler):
        with profiler:
            self.requests.append({"num_prompts": len(prompts), "num_generations": num_generations, "images": images})
        completions = [[11, 12, self.eos] for _ in prompts]
        completions[0] = [11, self.vision_token, 12, self.eos]
        return None, completions, None, None


@pytest.mark.parametrize("mode,expected_n", [("server", 4), ("colocate", 1)])
def test_vllm_rollouts_are_grouped_in_server_mode_and_vision_tokens_cut(
    tiny_models, tmp_path, dataset, mode, expected_n
):
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8)
    image_pad = trainer._tokenizer.convert_tokens_to_ids("<|image_pad|>")
    fake = RecordingVLLM(image_pad, trainer._tokenizer.eos_token_id)
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_generation, trainer._last_loaded_step = True, mode, fake, -1
    batch = generation_batch(trainer, [dataset[0]] * 4 + [dataset[1]] * 4)
    # Server: one request over the group-ordered rows with n = G (trl sends rows[::G] with n = G). Colocate: n = 1 per row.
    assert fake.requests[0]["num_generations"] == expected_n and fake.requests[0]["num_prompts"] == 8
    assert len(fake.requests[0]["images"]) == 8 and fake.syncs == 1
    completions = completions_of(batch)
    assert completions[0] == [11] and completions[1] == [11, 12, trainer._tokenizer.eos_token_id]
    assert trainer._metrics["train"]["completions/vision_token_cut_frac"][-1] == pytest.approx(1 / 8)
    assert batch["teacher_logps"].shape == batch["completion_ids"].shape  # the teacher replays the cut completions


def test_the_trainer_silences_only_the_warnings_a_user_cannot_act_on(tiny_models, tmp_path):
    # Python-API users get the launcher's quiet output: building a VZeroTrainer installs `vzero_trl.quiet`'s filters.
    kernels = logging.getLogger("transformers.integrations.hub_kernels")
    advice = logging.LogRecord(
        kernels.name, logging.INFO, "", 0, "Install causal_conv1d for the optimized kernel", None, None
    )
    saved_filters = kernels.filters[:]
    kernels.filters.clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated")  # the test recipe's
            make_trainer(tiny_models, tmp_path, make_dataset(2, seed=0))
            with warnings.catch_warnings(record=True) as caught:
                warnings.warn("`is_gradient_checkpointing` is deprecated, use ...", FutureWarning, stacklevel=1)
                warnings.warn("something a user can act on", FutureWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["something a user can act on"]
        assert bool(kernels.filter(advice)) == torch.cuda.is_available()  # the CUDA kernels are only advice on CPU
    finally:
        kernels.filters[:] = saved_filters
