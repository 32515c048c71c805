"""Shared-prefix teacher scoring equals scoring every rollout alone (the naive path), in float32 on CPU."""

import pytest
import torch
from test_trainer import generation_batch, make_trainer

from vzero_trl.shared_prefix import image_runs
from vzero_trl.synthetic import make_dataset
from vzero_trl.views import student_messages


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(8, seed=4)


def rows_with_two_image_sizes(dataset):
    # Two prompts of G = 4, the second with a smaller full image: different prompt lengths, so the naive batch is left
    # padded, and the shared path sees prompts of different lengths.
    rows = [dataset[0]] * 4 + [dataset[1]] * 4
    small = dict(dataset[1], image=dataset[1]["image"].resize((320, 192)))
    return rows[:4] + [small] * 4


def ragged(batch, pad_id):
    """Cut the rollouts to different lengths (12, 3, 7, 1, ...), as EOS would: the tiny random model never stops early."""
    lengths = [12, 3, 7, 1, 9, 12, 2, 5][: batch["completion_ids"].size(0)]
    for row, length in enumerate(lengths):
        batch["completion_mask"][row, length:] = 0
        batch["completion_ids"][row, length:] = pad_id
    return batch


def test_image_runs():
    ids = torch.tensor([5, 9, 9, 9, 5, 5, 9, 9, 5, 9])
    assert image_runs(ids, 9) == [(1, 4), (6, 8), (9, 10)]
    assert image_runs(torch.tensor([1, 2]), 9) == []


@pytest.mark.parametrize("teacher_batch_size", [None, 3])  # all rollouts in one forward, or chunks across a group
def test_shared_and_naive_scoring_agree_on_both_views(tiny_models, tmp_path, dataset, teacher_batch_size):
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=12,
        teacher_batch_size=teacher_batch_size,
    )
    rows = rows_with_two_image_sizes(dataset)
    batch = ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)
    prompts = [student_messages(row) for row in rows]
    args = (rows, prompts, ["crop", "negative_crop"], batch["completion_ids"], batch["completion_mask"], True)

    trainer.args.teacher_scoring = "shared_prefix"
    shared = trainer._score_teacher_views(*args)
    trainer.args.teacher_scoring = "naive"
    naive = trainer._score_teacher_views(*args)
    for (shared_logps, _), (naive_logps, _) in zip(shared, naive, strict=True):
        torch.testing.assert_close(shared_logps, naive_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[0][1], naive[0][1], atol=1e-5, rtol=1e-5)  # hidden states (full reverse KL)
    assert shared[1][1] is None and not torch.equal(shared[0][0], shared[1][0])


def test_the_full_image_is_encoded_once_per_prompt(tiny_models, tmp_path, dataset):
    trainer = make_trainer(tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8)
    rows = rows_with_two_image_sizes(dataset)
    batch = generation_batch(trainer, rows)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    encoded = []
    hook = teacher.base_model.visual.register_forward_hook(
        lambda module, args, kwargs, output: encoded.append(kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]),
        with_kwargs=True,
    )
    prompts = [student_messages(row) for row in rows]
    try:
        for mode in ("shared_prefix", "naive"):
            trainer.args.teacher_scoring = mode
            encoded.clear()
            trainer._score_teacher_views(
                rows, prompts, ["crop", "negative_crop"], batch["completion_ids"], batch["completion_mask"], False
            )
            images = torch.cat(encoded).tolist()  # one (t, h, w) grid per encoded image
            full = [grid for grid in images if grid in ([1, 8, 8], [1, 6, 10])]  # 448x448 and 320x192 at 128^2 px
            counts = (len(full), len(images))
            if mode == "shared_prefix":
                assert counts == (2, 2 + 2 * 2)  # per prompt: the full image once, each crop once
            else:
                assert counts == (2 * 8, 2 * 2 * 8)  # per rollout and view: the full image and the crop
    finally:
        hook.remove()


def test_rows_of_one_example_are_found_without_an_id(tiny_models, tmp_path, dataset):
    trainer = make_trainer(
        tiny_models, tmp_path, dataset.remove_columns("id"), num_generations=2, per_device_train_batch_size=4
    )
    rows = [dataset[2], dataset[2], dataset[3], dataset[3]]
    rows = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    batch = ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)
    prompts = [student_messages(row) for row in rows]
    args = (rows, prompts, ["crop"], batch["completion_ids"], batch["completion_mask"], False)
    shared = trainer._score_teacher_views(*args)
    trainer.args.teacher_scoring = "naive"
    torch.testing.assert_close(shared[0][0], trainer._score_teacher_views(*args)[0][0], atol=1e-5, rtol=0)


def test_unverified_teacher_types_must_use_the_naive_path(tiny_models, tmp_path, dataset, monkeypatch):
    monkeypatch.setattr("vzero_trl.trainer.SUPPORTED_MODEL_TYPES", ("llava",))
    with pytest.raises(ValueError, match="teacher_scoring='naive'"):
        make_trainer(tiny_models, tmp_path, dataset)
    make_trainer(tiny_models, tmp_path, dataset, teacher_scoring="naive")
