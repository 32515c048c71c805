"""The grouped samplers and loaders of `vzero_trl.grouped_sampling`: each prompt `num_generations` times in a row, for
map-style and streamed datasets, in training and evaluation, with TRL 1.16's eval-loader checks."""

import pytest
from helpers import make_trainer

from vzero_trl.toy.synthetic import make_dataset


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(16, seed=0)


def ids_of(batch):
    return [row["id"] for row in batch]


def assert_grouped(ids, size):
    """`ids` are whole runs of `size` equal ids, each run a different prompt."""
    groups = [ids[k : k + size] for k in range(0, len(ids), size)]
    assert all(group == [group[0]] * size for group in groups), ids
    assert len({group[0] for group in groups}) == len(groups), ids


def test_groups_are_contiguous_in_every_generation_batch(tiny_models, tmp_path, dataset):
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=4
    )
    for batch, _ in zip(trainer.get_train_dataloader(), range(3), strict=False):
        assert len(batch) == 8
        assert_grouped(ids_of(batch), 4)


def test_iterable_dataset_keeps_groups_contiguous_and_trains(tiny_models, tmp_path, dataset):
    stream = dataset.to_iterable_dataset()
    trainer = make_trainer(
        tiny_models, tmp_path, stream, num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    assert_grouped(ids_of(next(iter(trainer.get_train_dataloader()))), 2)
    trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize("streamed", [False, True])
def test_evaluation_batches_hold_whole_groups_of_num_generations_eval(tiny_models, tmp_path, dataset, streamed):
    eval_dataset = dataset.select(range(4))
    eval_dataset = eval_dataset.to_iterable_dataset() if streamed else eval_dataset
    trainer = make_trainer(
        tiny_models, tmp_path, dataset, num_generations=4, num_generations_eval=3, per_device_eval_batch_size=6
    )
    batches = [ids_of(batch) for batch in trainer.get_eval_dataloader(eval_dataset)]
    assert [len(ids) for ids in batches] == [6, 6]
    assert_grouped(batches[0] + batches[1], 3)
    assert sorted({i for ids in batches for i in ids}) == sorted(dataset["id"][:4])


def test_a_streamed_evaluation_set_is_refused_with_dispatch_batches(tiny_models, tmp_path, dataset):
    # TRL 1.16 refuses it in `get_eval_dataloader` too: the main process would have to collate the prompt strings.
    trainer = make_trainer(tiny_models, tmp_path, dataset, accelerator_config={"dispatch_batches": True})
    with pytest.raises(ValueError, match="dispatch_batches=False"):
        trainer.get_eval_dataloader(dataset.select(range(4)).to_iterable_dataset())


def test_with_persistent_workers_an_evaluation_loader_is_built_once(tiny_models, tmp_path, dataset):
    eval_dataset = dataset.select(range(4))
    trainer = make_trainer(
        tiny_models,
        tmp_path,
        dataset,
        eval_dataset={"small": eval_dataset, "streamed": eval_dataset.to_iterable_dataset()},
        dataloader_num_workers=1,
        dataloader_persistent_workers=True,
    )
    assert trainer.get_eval_dataloader("small") is trainer.get_eval_dataloader("small")
    # A stream is read without workers (to keep its groups in order), which cannot persist: rebuilt each time, and
    # built at all (torch refuses `persistent_workers` without workers, which TRL 1.16 would pass on).
    streamed = trainer.get_eval_dataloader("streamed")
    assert streamed is not trainer.get_eval_dataloader("streamed")
    assert_grouped(ids_of(next(iter(streamed))), 4)
