"""Self-teachers (frozen copy, LoRA base with the adapter disabled, EMA) and teacher offload, on the tiny models."""

import pytest
import torch
from helpers import generation_batch, make_args, replay
from peft import LoraConfig

from vzero_trl import VZeroTrainer
from vzero_trl.teachers import EMA_FILE, ema_update, teacher_for_replay
from vzero_trl.toy.synthetic import make_dataset


EVIDENCE_KEYS = ["evidence/score_mean", "evidence/weight_mean", "evidence/delta_mean", "distillation/reverse_kl"]
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "in_proj_qkv"])


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


def self_trainer(tiny_models, tmp_path, dataset, source, peft_config=None, **overrides):
    return VZeroTrainer(
        model=str(tiny_models[0]),
        args=make_args(tmp_path, teacher_source=source, **overrides),
        train_dataset=dataset,
        peft_config=peft_config,
    )


def storages(model):
    return {p.untyped_storage().data_ptr() for p in model.parameters()}


# --- every source trains ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source,lora", [("frozen", False), ("frozen", True), ("ema", False)])
def test_each_self_teacher_trains_several_steps_and_logs_evidence(tiny_models, tmp_path, dataset, source, lora):
    overrides = dict(gradient_checkpointing=True) if lora else {}  # PEFT + checkpointing needs input gradients
    peft_config = LoraConfig(**LORA) if lora else None
    trainer = self_trainer(tiny_models, tmp_path, dataset, source, peft_config, max_steps=3, **overrides)
    trainable = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        for key in EVIDENCE_KEYS:
            assert key in entry and entry[key] == entry[key], key  # present and not NaN
    assert any(not torch.equal(p, trainable[name]) for name, p in trainer.model.named_parameters() if p.requires_grad)


# --- frozen -----------------------------------------------------------------------------------------------------------


def test_frozen_self_teacher_scores_equal_an_external_teacher_of_the_same_weights(tiny_models, tmp_path, dataset):
    frozen = self_trainer(tiny_models, tmp_path / "frozen", dataset, "frozen", max_steps=2)
    external = VZeroTrainer(
        model=str(tiny_models[0]),
        teacher_model=str(tiny_models[0]),
        args=make_args(tmp_path / "ext"),
        train_dataset=dataset,
    )
    frozen.train()  # the student moves away; the frozen teacher must not
    rows = [dataset[0]] * 4
    batch = generation_batch(frozen, rows)
    for strategy in ("shared_prefix", "per_sequence"):
        expected = replay(external, rows, batch, ["crop", "negative_crop"], strategy)
        scored = replay(frozen, rows, batch, ["crop", "negative_crop"], strategy)
        for (got, _), (want, _) in zip(scored, expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["teacher_logps"], expected[0][0], atol=1e-5, rtol=0)
    # a separate copy (a full-parameter student needs one), never trained
    assert not storages(frozen.teacher_model) & storages(frozen.model)
    assert not any(p.requires_grad for p in frozen.teacher_model.parameters())


def test_lora_frozen_teacher_is_the_base_model_with_no_second_copy(tiny_models, tmp_path, dataset):
    trainer = self_trainer(
        tiny_models, tmp_path, dataset, "frozen", LoraConfig(**LORA), max_steps=2, gradient_checkpointing=True
    )
    assert trainer.teacher_model is None
    trainer.train()
    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert any(p.abs().max() > 0 for p in lora_b)  # the adapter now changes the student
    with teacher_for_replay(None, trainer.model) as teacher:
        # every teacher weight is a student weight: the same storage, no copy
        assert storages(teacher) <= storages(trainer.model)
        assert len(storages(teacher)) > 10
    external = VZeroTrainer(
        model=str(tiny_models[0]),
        teacher_model=str(tiny_models[0]),
        args=make_args(tmp_path / "ext"),
        train_dataset=dataset,
    )
    rows = [dataset[3]] * 4
    batch = generation_batch(trainer, rows)
    expected = replay(external, rows, batch, ["crop"], "per_sequence")[0][0]
    torch.testing.assert_close(batch["teacher_logps"], expected, atol=1e-5, rtol=0)
    assert trainer.model.training  # the adapter is back on, the student back in training mode
    trainer.create_model_card()  # a card without a teacher model names the self-teacher
    assert "a frozen copy of the student" in (tmp_path / "out" / "README.md").read_text()
    assert all(module.disable_adapters is False for module in trainer.model.modules() if hasattr(module, "lora_A"))


# --- EMA --------------------------------------------------------------------------------------------------------------


def test_ema_update_is_the_convex_combination():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = {
        name: 0.9 * p.detach() + 0.1 * dict(student.named_parameters())[name].detach()
        for name, p in teacher.named_parameters()
    }
    ema_update(teacher, student, 0.1)
    for name, p in teacher.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], atol=0, rtol=1e-6)


def test_ema_teacher_after_one_step_is_the_hand_computed_average(tiny_models, tmp_path, dataset):
    trainer = self_trainer(tiny_models, tmp_path, dataset, "ema", max_steps=1, teacher_ema_rate=0.25)
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    student = dict(trainer.model.named_parameters())
    changed = 0
    for name, p in trainer.teacher_model.named_parameters():
        torch.testing.assert_close(p, 0.75 * initial[name] + 0.25 * student[name].detach(), atol=1e-7, rtol=1e-6)
        changed += not torch.equal(p, initial[name])
    assert changed > 0


def test_resumed_ema_run_equals_an_uninterrupted_one(tiny_models, tmp_path, dataset):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, teacher_ema_rate=0.5)
    whole = self_trainer(tiny_models, tmp_path / "whole", dataset, "ema", **settings)
    whole.train()
    assert (tmp_path / "whole" / "out" / "checkpoint-2" / EMA_FILE).is_file()
    # "killed" after step 2: a fresh process resumes from the checkpoint
    resumed = self_trainer(tiny_models, tmp_path / "whole", dataset, "ema", **settings)
    resumed.args.output_dir = str(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "out" / "checkpoint-2"))
    for model in ("model", "teacher_model"):
        expected = dict(getattr(whole, model).named_parameters())
        for name, p in getattr(resumed, model).named_parameters():
            torch.testing.assert_close(p, expected[name], atol=1e-6, rtol=1e-5, msg=f"{model}.{name}")
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e and e["step"] > 2] for t in (whole, resumed)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and len(losses[0]) == 2
    # without restoring the EMA teacher the resumed run would differ: the checkpoint's teacher is not the student
    saved = torch.load(tmp_path / "whole" / "out" / "checkpoint-2" / EMA_FILE, weights_only=True)
    assert any(not torch.equal(saved[name], p) for name, p in whole.model.named_parameters())


def test_self_teacher_rejects_a_teacher_model_and_ema_rejects_lora(tiny_models, tmp_path, dataset):
    with pytest.raises(ValueError, match="teacher_model=None"):
        VZeroTrainer(
            model=str(tiny_models[0]),
            teacher_model=str(tiny_models[1]),
            args=make_args(tmp_path, teacher_source="frozen"),
            train_dataset=dataset,
        )
    with pytest.raises(ValueError, match="full-parameter student"):
        self_trainer(tiny_models, tmp_path, dataset, "ema", LoraConfig(**LORA), gradient_checkpointing=True)


# --- offload ----------------------------------------------------------------------------------------------------------


def test_offloaded_teacher_moves_once_per_generation_batch_and_scores_as_resident(tiny_models, tmp_path, dataset):
    """On a CPU-only machine the accelerator is the CPU too, so placement alone proves nothing: the test records the
    teacher's `.to` calls and forwards in order, which shows the move logic (to the accelerator before the replay of a
    generation batch, every teacher forward in between, back to the CPU after), and compares the scores."""
    settings = dict(max_steps=2, gradient_accumulation_steps=2, per_device_train_batch_size=2, num_generations=2)
    offloaded = VZeroTrainer(
        model=str(tiny_models[0]),
        teacher_model=str(tiny_models[1]),
        args=make_args(tmp_path / "off", offload_teacher=True, **settings),
        train_dataset=dataset,
    )
    resident = VZeroTrainer(
        model=str(tiny_models[0]),
        teacher_model=str(tiny_models[1]),
        args=make_args(tmp_path / "res", **settings),
        train_dataset=dataset,
    )
    teacher = offloaded.accelerator.unwrap_model(offloaded.teacher_model)
    assert all(p.device.type == "cpu" for p in teacher.parameters())
    events, move = [], teacher.to

    def recording_to(device, *args, **kwargs):
        events.append(("to", str(device)))
        return move(device, *args, **kwargs)

    teacher.to = recording_to
    hook = teacher.register_forward_pre_hook(lambda module, args: events.append("forward"))
    backbone_hook = teacher.base_model.register_forward_pre_hook(lambda module, args: events.append("forward"))
    try:
        offloaded.train()
    finally:
        hook.remove()
        backbone_hook.remove()
    device = str(offloaded.accelerator.device)
    # two optimizer steps = two generation batches (4 rollouts each, scored in 2 micro-batches): one round trip each
    assert [event for event in events if event != "forward"] == [("to", device), ("to", "cpu")] * 2
    assert events[0] == ("to", device) and events[-1] == ("to", "cpu")
    moves = [i for i, event in enumerate(events) if event != "forward"]
    forwards = [i for i, event in enumerate(events) if event == "forward"]
    # teacher forwards run only between a move to the accelerator and the move back, and in both batches
    assert all(moves[0] < i < moves[1] or moves[2] < i < moves[3] for i in forwards)
    assert any(i < moves[1] for i in forwards) and any(i > moves[2] for i in forwards)
    assert all(p.device.type == "cpu" for p in teacher.parameters())  # between batches the weights sit on the CPU

    rows = [dataset[4]] * 2 + [dataset[5]] * 2
    batch = generation_batch(offloaded, rows)
    expected = replay(resident, rows, batch, ["crop", "negative_crop"], "shared_prefix")
    torch.testing.assert_close(batch["teacher_logps"], expected[0][0], atol=0, rtol=0)
