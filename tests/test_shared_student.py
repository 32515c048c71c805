"""The student's shared-prefix training forward equals the per-sequence one: hidden states, loss, gradients, training steps."""

import ast
import inspect

import pytest
import torch
import transformers.models.qwen3_5.modeling_qwen3_5 as qwen3_5
from accelerate.utils import is_peft_model
from helpers import generation_batch, make_args, make_trainer, ragged, rows_with_two_image_sizes
from peft import LoraConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.testing_utils import CaptureLogger

import vzero_trl.shared_prefix
import vzero_trl.trainer
from vzero_trl import VZeroTrainer
from vzero_trl.gating import group_slices
from vzero_trl.losses import sampled_token_loss
from vzero_trl.replay import MULTIMODAL_KEYS
from vzero_trl.scoring import completion_logps
from vzero_trl.shared_prefix import student_hidden_grouped
from vzero_trl.toy.synthetic import make_dataset


# Parameters of the Gated-DeltaNet decay, whose gradients the reference kernel computes with float32 rounding that
# depends on where the sequence is split (see `float64_delta_rule`).
DECAY_PARAMETERS = ("linear_attn.A_log", "linear_attn.dt_bias", "linear_attn.in_proj_a")


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(8, seed=4)


@pytest.fixture
def float64_delta_rule(monkeypatch):
    """
    Transformers' reference Gated-DeltaNet kernel casts to float32 whatever the model's dtype; this swaps in a copy that
    computes in float64, so that the comparison below measures the method and not the kernel's rounding.
    """
    # Read from the module's source: from transformers 5.25 the hub decorator turns the function into an `nn.Module`,
    # which `inspect.getsource` cannot read.
    (function,) = [
        node
        for node in ast.parse(inspect.getsource(qwen3_5)).body
        if isinstance(node, ast.FunctionDef) and node.name == "torch_chunk_gated_delta_rule"
    ]
    function.decorator_list = []  # drop the hub decorator
    source = ast.unparse(function)
    assert "torch.float32" in source
    namespace = {}
    exec(source.replace("torch.float32", "torch.float64"), vars(qwen3_5), namespace)
    monkeypatch.setattr(qwen3_5, "torch_chunk_gated_delta_rule", namespace["torch_chunk_gated_delta_rule"])


def student_hidden(trainer, student, inputs, strategy):
    """The student's hidden states at the completion positions, by `strategy`, as `VZeroTrainer._compute_loss` runs
    them: grouped over shared prefixes, or every row alone through TRL's `_get_last_hidden_state`."""
    if strategy == "shared_prefix":
        model = student.base_model.model if is_peft_model(student) else student
        groups = group_slices(inputs["group_index"])
        return student_hidden_grouped(model.base_model, inputs, groups, model.config.image_token_id)
    return trainer._get_last_hidden_state(
        student,
        torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
        torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1),
        inputs["completion_ids"].size(1),
        **{key: inputs[key] for key in MULTIMODAL_KEYS if key in inputs},
    )


def loss_and_gradients(trainer, inputs, strategy):
    student = trainer.accelerator.unwrap_model(trainer.model)
    student.train()
    student.zero_grad()
    hidden = student_hidden(trainer, student, inputs, strategy)
    mask = inputs["completion_mask"]
    logps, _ = completion_logps(hidden, student.get_output_embeddings(), inputs["completion_ids"], mask)
    loss = sampled_token_loss(
        logps, inputs["teacher_logps"], mask, inputs["evidence_weights"], normalizer=inputs["num_sequences_in_batch"]
    )
    loss.backward()
    grads = {name: p.grad.clone() for name, p in student.named_parameters() if p.grad is not None}
    return hidden.detach(), loss.detach(), grads


def compare(trainer, inputs, decay_rtol):
    reference = loss_and_gradients(trainer, inputs, "per_sequence")
    shared = loss_and_gradients(trainer, inputs, "shared_prefix")
    valid = inputs["completion_mask"].bool()
    assert (reference[0] - shared[0])[valid].abs().max() <= 1e-5
    torch.testing.assert_close(shared[1], reference[1], atol=1e-6, rtol=1e-6)
    assert reference[2].keys() == shared[2].keys() and len(reference[2]) > 20  # the vision tower's too
    for name, grad in reference[2].items():
        scale = grad.abs().max()
        rtol = decay_rtol if any(part in name for part in DECAY_PARAMETERS) else 1e-4
        assert (shared[2][name] - grad).abs().max() <= rtol * scale + 1e-7, name


def batch_for(trainer, dataset):
    rows = rows_with_two_image_sizes(dataset)  # two prompts of G = 4, different image sizes: left padding
    return ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)  # ragged completions


def test_shared_student_forward_matches_per_sequence_with_float64_delta_rule(
    tiny_models, tmp_path, dataset, float64_delta_rule
):
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8, max_completion_length=12
    )
    compare(trainer, batch_for(trainer, dataset), decay_rtol=1e-4)


def test_shared_student_forward_matches_per_sequence_with_the_stock_kernel(tiny_models, tmp_path, dataset):
    # Every gradient but the linear-attention decay's agrees as tightly; the decay's carries the kernel's float32
    # rounding (the test above shows that it is only that).
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8, max_completion_length=12
    )
    compare(trainer, batch_for(trainer, dataset), decay_rtol=5e-2)


def test_shared_student_under_activation_checkpointing_matches_per_sequence(
    tiny_models, tmp_path, dataset, float64_delta_rule, monkeypatch
):
    # Checkpointed layers replay in the backward against the cache as it was when they ran; without that the replay
    # would see the completion pass's states (and fail on shapes, or compute something else).
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=12,
        gradient_checkpointing=True,
        student_scoring="shared_prefix",
    )
    assert trainer._student_shared
    student = trainer.accelerator.unwrap_model(trainer.model)
    student.activation_checkpointing_enable(
        activation_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs
    )
    replays = []
    set_state = vzero_trl.shared_prefix._set_cache_state
    monkeypatch.setattr(
        vzero_trl.shared_prefix, "_set_cache_state", lambda cache, state: replays.append(1) or set_state(cache, state)
    )
    compare(trainer, batch_for(trainer, dataset), decay_rtol=1e-4)
    assert len(replays) >= 2 * 2 * 2  # both passes through both decoder layers, each replay swapped in and back out
    layers = [m for m in student.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert all(m.gradient_checkpointing and "_can_checkpoint_with_cache" not in vars(m) for m in layers)


def test_the_student_encodes_each_prompt_image_once(tiny_models, tmp_path, dataset):
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=4,
        per_device_train_batch_size=8,
        student_scoring="shared_prefix",
    )
    inputs = batch_for(trainer, dataset)
    student = trainer.accelerator.unwrap_model(trainer.model)
    grids = []
    hook = student.base_model.visual.register_forward_hook(
        lambda module, args, kwargs, output: grids.extend(kwargs["grid_thw"].tolist()), with_kwargs=True
    )
    try:
        for strategy, expected in (("shared_prefix", 2), ("per_sequence", 8)):
            grids.clear()
            student_hidden(trainer, student, inputs, strategy)
            assert len(grids) == expected  # one per prompt, or one per rollout
    finally:
        hook.remove()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_steps_match_the_per_sequence_path(tiny_models, tmp_path, dataset, checkpointing):
    # One step of plain SGD, so parameters move by exactly lr x gradient (a second step would sample other rollouts:
    # the per-sequence path's shuffle draws from the generator). Four micro-batches, each prompt split across two of them
    # (G = 4, micro-batch 2): the shared path keeps rows in order, the per-sequence one shuffles them.
    params = {}
    for mode in ("per_sequence", "shared_prefix"):
        trainer = make_trainer(
            tiny_models,
            tmp_path / mode,
            dataset,
            num_generations=4,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=4,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            student_scoring=mode,
            gradient_checkpointing=checkpointing,
        )
        assert trainer._student_shared == (mode == "shared_prefix")
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        trainer.train()
        params[mode] = {name: p.detach() for name, p in trainer.model.named_parameters()}
        moved = sum(not torch.equal(before[name], p) for name, p in params[mode].items())
        assert moved > 20
        if mode == "shared_prefix":  # the micro-batches hold the generation batch's rows in order: whole prompts
            prompt_ids = [batch["prompt_ids"] for batch in trainer._buffered_inputs]
            assert torch.equal(prompt_ids[0][0], prompt_ids[0][1]) and torch.equal(prompt_ids[1][1], prompt_ids[0][0])
            groups = [batch["group_index"].tolist() for batch in trainer._buffered_inputs]
            assert groups == [[0, 0], [0, 0], [1, 1], [1, 1]]  # the sampler's groups, travelling with the rows
    for name, p in params["per_sequence"].items():
        tolerance = 5e-2 if any(part in name for part in DECAY_PARAMETERS) else 1e-4
        scale = (p - before[name]).abs().max()
        assert (params["shared_prefix"][name] - p).abs().max() <= tolerance * scale + 1e-6, name


def test_lora_student_shares_the_prefix(tiny_models, tmp_path, dataset):
    student, teacher = tiny_models
    trainer = VZeroTrainer(
        model=str(student),
        teacher_model=str(teacher),
        args=make_args(tmp_path, num_generations=4, per_device_train_batch_size=8, student_scoring="shared_prefix"),
        train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "in_proj_qkv"]),
    )
    assert trainer._student_shared
    inputs = batch_for(trainer, dataset)
    reference = loss_and_gradients(trainer, inputs, "per_sequence")
    shared = loss_and_gradients(trainer, inputs, "shared_prefix")
    torch.testing.assert_close(shared[1], reference[1], atol=1e-6, rtol=1e-6)
    assert reference[2].keys() == shared[2].keys() and all("lora_" in name for name in reference[2])
    for name, grad in reference[2].items():
        assert (shared[2][name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-7, name


@pytest.mark.parametrize("reason", ["reentrant_checkpointing", "model_type"])
def test_shared_student_falls_back_with_a_warning(tiny_models, tmp_path, dataset, monkeypatch, reason):
    overrides = {"student_scoring": "shared_prefix"}
    if reason == "reentrant_checkpointing":
        overrides["gradient_checkpointing"] = True
        overrides["gradient_checkpointing_kwargs"] = {"use_reentrant": True}
        expected = "use_reentrant: false"
    else:
        monkeypatch.setattr("vzero_trl.shared_prefix.SUPPORTED_MODEL_TYPES", ("llava",))
        overrides["teacher_scoring"] = "per_sequence"
        expected = "not 'qwen3_5'"
    with CaptureLogger(vzero_trl.trainer.logger) as captured:
        trainer = make_trainer(tiny_models, tmp_path, dataset, **overrides)
    assert not trainer._student_shared
    assert "falls back to 'per_sequence'" in captured.out and expected in captured.out


def test_evaluation_loss_matches_the_per_sequence_path(tiny_models, tmp_path, dataset):
    losses = {}
    for mode in ("per_sequence", "shared_prefix"):
        trainer = make_trainer(
            tiny_models,
            tmp_path / mode,
            dataset,
            eval_dataset=dataset.select(range(2)),
            num_generations=4,
            per_device_eval_batch_size=8,
            student_scoring=mode,
        )
        losses[mode] = trainer.evaluate()["eval_loss"]
    assert losses["per_sequence"] != 0 and abs(losses["shared_prefix"] - losses["per_sequence"]) <= 1e-5
