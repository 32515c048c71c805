"""Grouped sampling: each prompt `num_generations` times in a row, in the samplers and loaders of a TRL trainer.

V-Zero normalises the evidence scores within each prompt's group of rollouts, so the rows `[k * G, (k + 1) * G)` of a
gathered generation batch must be one prompt's `G` rollouts, whichever process generated them
([`vzero_trl.gating.rollout_groups`] reads the groups from this layout once, and they travel with the rows from there).
`trl.DistillationTrainer` (TRL 1.16) repeats each prompt once: its `DistillationConfig` has no `num_generations`, and
its samplers and loaders pass `mini_repeat_count=1` to `RepeatSampler` and `repeat_iterable_dataset`.

[`GroupedSampling`] mirrors the four of them with `mini_repeat_count=num_generations` (`num_generations_eval` when
evaluating). It can be deleted once `DistillationConfig` gains a `num_generations` that its samplers and loaders pass
on, as `trl.GRPOTrainer`'s already do.
"""

from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader, Sampler
from trl.trainer.utils import RepeatSampler, repeat_iterable_dataset


class GroupedSampling:
    """
    Mixin for a subclass of `trl.DistillationTrainer` (placed before it: `class T(GroupedSampling,
    DistillationTrainer)`) whose `args` have `num_generations` and `num_generations_eval`: every sampler and loader
    yields each prompt that many times in a row. Mirrors `trl.DistillationTrainer`'s `_get_train_sampler`,
    `_get_eval_sampler`, `get_train_dataloader` and `get_eval_dataloader` (TRL 1.16).
    """

    def _generation_batch_size(self) -> int:
        """Rows per generation batch over all processes: one optimizer step's worth, generated at once."""
        return (
            self.args.per_device_train_batch_size
            * self.accelerator.num_processes
            * self.args.gradient_accumulation_steps
        )

    def _get_train_sampler(self, dataset: Dataset | None = None) -> Sampler:
        return RepeatSampler(
            data_source=self.train_dataset if dataset is None else dataset,
            mini_repeat_count=self.args.num_generations,
            batch_size=self._generation_batch_size() // self.args.num_generations,
            repeat_count=self.args.gradient_accumulation_steps,
            shuffle=self.shuffle_dataset,
            seed=self.args.seed,
        )

    def _get_eval_sampler(self, eval_dataset) -> Sampler:
        return RepeatSampler(
            data_source=eval_dataset, mini_repeat_count=self.args.num_generations_eval, seed=self.args.seed
        )

    def get_train_dataloader(self) -> DataLoader:
        if not isinstance(self.train_dataset, IterableDataset):
            return super().get_train_dataloader()  # map-style: grouping comes from `_get_train_sampler`
        # A stream cannot take a sampler, so the stream itself is reordered like `_get_train_sampler` orders indices.
        dataset = self.train_dataset.shuffle(seed=self.args.seed) if self.shuffle_dataset else self.train_dataset
        dataset = repeat_iterable_dataset(
            dataset,
            mini_repeat_count=self.args.num_generations,
            batch_size=self._generation_batch_size() // self.args.num_generations,
            repeat_count=self.args.gradient_accumulation_steps,
        )
        return self._get_dataloader(
            dataset=dataset,
            description="Training",
            batch_size=self._train_batch_size * self.args.gradient_accumulation_steps,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def get_eval_dataloader(self, eval_dataset: str | Dataset | IterableDataset | None = None) -> DataLoader:
        dataloader_key = eval_dataset if isinstance(eval_dataset, str) else "eval"
        # With persistent workers, a loader built once is reused (evaluation sets do not change during training);
        # `_get_dataloader` creates `_eval_dataloaders` with the first one it keeps.
        if (
            self.args.dataloader_persistent_workers
            and hasattr(self, "_eval_dataloaders")
            and dataloader_key in self._eval_dataloaders
        ):
            return self._eval_dataloaders[dataloader_key]
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else dataset
        if not isinstance(dataset, IterableDataset):
            return super().get_eval_dataloader(eval_dataset)  # map-style: grouping comes from `_get_eval_sampler`
        if self.args.accelerator_config.dispatch_batches:
            raise ValueError(
                "An iterable evaluation dataset needs `dispatch_batches=False` (the main process cannot collate "
                "`prompt` strings for the others), but `accelerator_config` sets it to True. Set "
                "`accelerator_config={'dispatch_batches': False}`, or pass a map-style `datasets.Dataset`."
            )
        self.accelerator.dataloader_config.dispatch_batches = False
        dataset = repeat_iterable_dataset(
            dataset.shuffle(seed=self.args.seed), mini_repeat_count=self.args.num_generations_eval
        )
        # The main process reads the stream (no workers), which keeps the groups in order, for this loader only. Without
        # workers there are none to keep alive (torch refuses `persistent_workers`, which TRL 1.16 passes on here), so
        # this loader is rebuilt for each evaluation.
        args = self.args
        saved = args.dataloader_num_workers, args.dataloader_persistent_workers
        args.dataloader_num_workers, args.dataloader_persistent_workers = 0, False
        try:
            return self._get_dataloader(
                dataset=dataset,
                description="Evaluation",
                batch_size=args.eval_batch_size,
                sampler_fn=self._get_eval_sampler,
                dataloader_key=dataloader_key,
            )
        finally:
            args.dataloader_num_workers, args.dataloader_persistent_workers = saved
