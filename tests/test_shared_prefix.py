"""Shared-prefix teacher scoring equals scoring every rollout alone (the per-sequence path), in float32 on CPU."""

import pytest
import torch
from helpers import (
    completions_of,
    generation_batch,
    load,
    make_trainer,
    ragged,
    reference_logps,
    replay,
    rows_with_two_image_sizes,
)

from vzero_trl.shared_prefix import image_runs
from vzero_trl.toy.synthetic import make_dataset


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(8, seed=4)


def test_image_runs():
    ids = torch.tensor([5, 9, 9, 9, 5, 5, 9, 9, 5, 9])
    assert image_runs(ids, 9) == [(1, 4), (6, 8), (9, 10)]
    assert image_runs(torch.tensor([1, 2]), 9) == []


@pytest.mark.parametrize("teacher_batch_size", [None, 3])  # all rollouts in one forward, or chunks across a group
def test_shared_and_per_sequence_scoring_agree_on_both_views(tiny_models, tmp_path, dataset, teacher_batch_size):
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=8, max_completion_length=12
    )
    rows = rows_with_two_image_sizes(dataset)
    batch = ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)
    columns = ["crop", "negative_crop"]
    kwargs = dict(rows_per_forward=teacher_batch_size, keep_hidden=True)
    shared = replay(trainer, rows, batch, columns, "shared_prefix", **kwargs)
    per_sequence = replay(trainer, rows, batch, columns, "per_sequence", **kwargs)
    for (shared_logps, _), (alone_logps, _) in zip(shared, per_sequence, strict=True):
        torch.testing.assert_close(shared_logps, alone_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[0][1], per_sequence[0][1], atol=1e-5, rtol=1e-5)  # hidden states (full KL)
    assert shared[1][1] is None and per_sequence[1][1] is None and not torch.equal(shared[0][0], shared[1][0])


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
    try:
        for strategy in ("shared_prefix", "per_sequence"):
            encoded.clear()
            replay(trainer, rows, batch, ["crop", "negative_crop"], strategy, rows_per_forward=8)
            images = torch.cat(encoded).tolist()  # one (t, h, w) grid per encoded image
            full = [grid for grid in images if grid in ([1, 8, 8], [1, 6, 10])]  # 448x448 and 320x192 at 128^2 px
            counts = (len(full), len(images))
            if strategy == "shared_prefix":
                assert counts == (2, 2 + 2 * 2)  # per prompt: the full image once, each crop once
            else:
                assert counts == (2 * 8, 2 * 2 * 8)  # per rollout and view: the full image and the crop
    finally:
        hook.remove()


def test_rows_without_an_id_are_grouped_as_sampled(tiny_models, tmp_path, dataset):
    trainer = make_trainer(
        tiny_models, tmp_path, dataset.remove_columns("id"), num_generations=2, per_device_train_batch_size=4
    )
    rows = [dataset[2], dataset[2], dataset[3], dataset[3]]
    rows = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    batch = ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)
    shared = replay(trainer, rows, batch, ["crop"], "shared_prefix")
    per_sequence = replay(trainer, rows, batch, ["crop"], "per_sequence")
    torch.testing.assert_close(shared[0][0], per_sequence[0][0], atol=1e-5, rtol=0)


def test_unverified_teacher_types_must_use_the_per_sequence_path(tiny_models, tmp_path, dataset, monkeypatch):
    monkeypatch.setattr("vzero_trl.shared_prefix.SUPPORTED_MODEL_TYPES", ("llava",))
    with pytest.raises(ValueError, match="teacher_scoring='per_sequence'"):
        make_trainer(tiny_models, tmp_path, dataset)
    make_trainer(tiny_models, tmp_path, dataset, teacher_scoring="per_sequence")
    make_trainer(tiny_models, tmp_path, dataset, teacher_scoring="naive")  # the old name of "per_sequence"


@pytest.mark.parametrize("texts", [("", ""), ("Region of interest: ", ". Answer from it.")])
def test_crop_only_views_score_shared_as_per_sequence(tiny_models, tmp_path, dataset, texts):
    """Crop-only views differ from their first image on: the shared prefix is the chat template's opening alone."""
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=12,
        teacher_view="crop_only",
        teacher_crop_only_prefix=texts[0],
        teacher_crop_only_suffix=texts[1],
    )
    rows = rows_with_two_image_sizes(dataset)
    batch = ragged(generation_batch(trainer, rows), trainer._tokenizer.pad_token_id)
    columns = ["crop", "negative_crop"]
    shared = replay(trainer, rows, batch, columns, "shared_prefix", keep_hidden=True)
    per_sequence = replay(trainer, rows, batch, columns, "per_sequence", keep_hidden=True)
    for (shared_logps, _), (alone_logps, _) in zip(shared, per_sequence, strict=True):
        torch.testing.assert_close(shared_logps, alone_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[0][1], per_sequence[0][1], atol=1e-5, rtol=1e-5)
    # the trainer's own replay (before `ragged` cut the rollouts, which leaves the earlier tokens' scores unchanged)
    kept = batch["teacher_logps"] * batch["completion_mask"]
    torch.testing.assert_close(kept, shared[0][0], atol=1e-5, rtol=0)
    # and each row equals a full-logits forward of its crop-only prompt alone
    teacher, processor = load(tiny_models[1])
    completions = completions_of(batch)
    for i in (0, 5):
        content = [
            {"type": "image", "image": rows[i]["crop"]},
            {"type": "text", "text": rows[i]["prompt"][0]["content"]},
        ]
        if texts[0]:
            content = [{"type": "text", "text": texts[0]}, content[0], {"type": "text", "text": texts[1]}, content[1]]
        expected = reference_logps(teacher, processor, [{"role": "user", "content": content}], completions[i])
        torch.testing.assert_close(shared[0][0][i, : len(completions[i])], torch.tensor(expected), atol=1e-5, rtol=0)
