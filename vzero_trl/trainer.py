"""`VZeroTrainer`: on-policy distillation of a vision-language student with contrastive evidence gating."""

import math
import os
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedModel, ProcessorMixin, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from transformers.utils import logging
from trl import DistillationTrainer
from trl.extras.profiling import profiling_context
from trl.trainer.utils import (
    RepeatSampler,
    get_config_model_id,
    repeat_iterable_dataset,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from .card import PAPER, build_model_card, teacher_description, tracking_urls
from .checkpoints import remove_marker, set_learning_rate, write_marker
from .completions_table import COLUMNS as TABLE_COLUMNS
from .completions_table import IMAGE_COLUMNS, log_completions_table, thumbnail_png
from .config import VZeroConfig
from .evidence_alarm import build_alarm, view_gap_sums
from .gate_probe import GateProbeCallback, load_probe_rows
from .gating import (
    evidence_metrics,
    evidence_scores,
    evidence_token_sums,
    evidence_weights,
    group_slices,
    rollout_groups,
)
from .importance import padded_sampler_logps, sampler_token_logps
from .processing import check_processor, student_processor
from .quiet import silence_unactionable_warnings
from .replay import MULTIMODAL_KEYS, replay_teacher, teacher_views
from .scoring import gated_distillation_loss
from .served_teacher import ServedTeacher, vocabulary_size
from .shared_prefix import check_teacher_scoring, student_hidden_grouped, unsupported_reason
from .teachers import (
    EMACallback,
    check_teacher_model,
    load_ema,
    offloaded,
    save_ema,
    setup_teacher,
    teacher_for_replay,
)
from .views import check_dataset_columns, check_row, truncate_at_tokens, vision_token_ids


logger = logging.get_logger(__name__)


class VZeroTrainer(DistillationTrainer):
    """
    Trainer for V-Zero: answer-label-free on-policy distillation with contrastive evidence gating.

    The student samples `num_generations` rollouts per prompt from the full image. The teacher replays every rollout
    twice, with the positive crop and with the negative crop appended to the prompt; the per-token log-probability gap,
    averaged per rollout and standardised within each prompt's group, becomes a gate `w = clip(1 + alpha * a, w_min,
    w_max)` that weights a sampled-token reverse-KL distillation loss against the positive view (eqs. 14-24).

    Differences from [`~trl.DistillationTrainer`]:

    - samplers and loaders repeat each prompt `num_generations` times, contiguously (train and eval);
    - `_generate_and_score_completions` also replays the rollouts under both teacher views ([`vzero_trl.replay`], or
      on the teacher's vLLM servers with [`vzero_trl.served_teacher`])
      and computes the gates once per generation batch, over whole groups gathered from all processes; each row's
      group comes from the sampler's layout once ([`vzero_trl.gating.rollout_groups`]) and travels with the row
      (`group_index`);
    - `_prepare_inputs` keeps each prompt's rollouts together in the micro-batches for the shared-prefix student;
    - `_compute_loss` computes the gated loss from the student's sampled-token log-probabilities (or the gated full
      reverse KL), normalised so that gradient accumulation and data parallelism give the same update as one batch;
    - `_generate_single_turn` sends each prompt once with `n = num_generations` to a vLLM server, and never lets a
      vision placeholder token into a completion;
    - evidence metrics are logged under `evidence/*` and the sampled reverse KL under `distillation/reverse_kl`; the
      blind-teacher alarm watches both views ([`vzero_trl.evidence_alarm`]), and with `gate_probe_dataset` a callback
      measures the gate on labelled rows ([`vzero_trl.gate_probe`]);
    - `create_model_card` writes an image-text-to-text card with the teacher and the V-Zero hyper-parameters;
    - `log` adds each rollout's group, gate, evidence score and both crops to the completions table
      (`log_completions=True`, [`vzero_trl.completions_table`]).

    The README's "Training from Python" shows it at work, and its "Layout" walks a row through the modules it calls.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Vision-language student, loaded as in [`~trl.DistillationTrainer`].
        teacher_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            Vision-language teacher sharing the student's vocabulary and processor (e.g. a larger model of the same
            family). Loaded with `args.teacher_model_init_kwargs` when given as a string. Required with
            `args.teacher_source="external"` (the default) unless `args.teacher_server_urls` serves it
            ([`vzero_trl.served_teacher`]); must be `None` with a served teacher or a self-teacher (`"frozen"`,
            `"ema"`), which is built from the student ([`vzero_trl.teachers`]).
        args ([`VZeroConfig`], *optional*):
            Configuration. Defaults to `VZeroConfig("<model name>-VZero")`.
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Rows with `prompt` (conversational), `image` (or `images`) and the evidence columns named by
            `args.crop_column` and `args.negative_crop_column`; see the README's dataset schema.
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict` of them, *optional*):
            Same schema as `train_dataset`.
        processing_class ([`~transformers.ProcessorMixin`], *optional*):
            The student's processor, with `padding_side="left"`. Loaded from `model` with
            [`~vzero_trl.processing.load_processor`] when `None`.
        callbacks, optimizers, quantization_config, peft_config:
            As in [`~trl.DistillationTrainer`]. LoRA students are supported (not on `lm_head`).
    """

    _tag_names = ["trl", "distillation", "v-zero"]
    _name = "V-Zero"
    _paper = PAPER

    def __init__(
        self,
        model: "str | PreTrainedModel",
        teacher_model: str | PreTrainedModel | None = None,
        args: VZeroConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: ProcessorMixin | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        silence_unactionable_warnings()
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = VZeroConfig(f"{model_name.rstrip('/').split('/')[-1]}-VZero")
        if not isinstance(args, VZeroConfig):
            raise TypeError(f"`args` must be a VZeroConfig, got {type(args).__name__}.")
        check_teacher_model(args.teacher_source, teacher_model, served=bool(args.teacher_server_urls))
        check_dataset_columns(train_dataset, args.crop_columns, "train_dataset", teacher_view=args.teacher_view)
        check_dataset_columns(eval_dataset, args.crop_columns, "eval_dataset", teacher_view=args.teacher_view)
        if processing_class is None:  # as `trl.DistillationTrainer.__init__` loads it (TRL 1.16)
            processing_class = student_processor(model, args.model_init_kwargs, args.trust_remote_code)

        super().__init__(
            model=model,
            teacher_model=teacher_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        check_processor(self.processing_class, self._is_vlm, self._tokenizer.padding_side)

        # `_peft_teacher`: the PEFT student whose base model is the frozen teacher (adapter disabled), else `None`.
        self.teacher_model, self._peft_teacher = setup_teacher(
            args.teacher_source,
            self.teacher_model,
            self.accelerator.unwrap_model(self.model),
            sharded=self.is_deepspeed_enabled or self.is_fsdp_enabled,
            offload=args.offload_teacher,
        )
        if args.teacher_source == "ema":
            self.add_callback(EMACallback(self.teacher_model, self.accelerator.unwrap_model, args.teacher_ema_rate))

        teacher_config = self.accelerator.unwrap_model(
            self.model if self.teacher_model is None else self.teacher_model
        ).config
        if not args.teacher_server_urls:
            check_teacher_scoring(args.teacher_scoring, teacher_config.model_type)
        student_config = self.accelerator.unwrap_model(self.model).config
        vocab_size = min(config.get_text_config().vocab_size for config in (student_config, teacher_config))
        if args.loss_top_k is not None and args.loss_top_k > vocab_size:
            raise ValueError(
                f"`loss_top_k` ({args.loss_top_k}) is larger than the vocabulary of the models ({vocab_size} tokens). "
                f"Set it to at most {vocab_size} (Vision-OPD uses 100), or unset it for the whole vocabulary."
            )
        # Read after `super().__init__`, which may force reentrant checkpointing (PEFT with DeepSpeed ZeRO-3).
        reason = unsupported_reason(student_config.model_type, args.reentrant_checkpointing)
        self._student_shared = args.student_scoring == "shared_prefix" and reason is None
        if args.student_scoring == "shared_prefix" and reason is not None:
            logger.warning(f"student_scoring='shared_prefix' falls back to 'per_sequence': {reason}.")

        self._vision_token_ids = vision_token_ids(student_config.to_dict())
        suppressed = sorted(set(self.generation_kwargs.get("suppress_tokens") or []) | self._vision_token_ids)
        self.generation_kwargs["suppress_tokens"] = suppressed
        self.generation_config.suppress_tokens = suppressed
        self._reverse_kl_stats = None
        self._sampler_logps = None  # vLLM's log-probabilities of the last generated rollouts (importance correction)
        # Beside the base class's prompt and completion logs, aligned with them, for the completions table.
        for key in TABLE_COLUMNS[2:]:
            self._logs[key] = deque(maxlen=self._logs["prompt"].maxlen)
        self._served_teacher = None  # a vLLM-served teacher (`teacher_server_urls`), checked before any step
        if args.teacher_server_urls:
            self._served_teacher = ServedTeacher(
                args.teacher_server_urls,
                args.teacher_model_name_or_path,
                timeout=args.teacher_server_timeout,
                retries=args.teacher_server_retries,
                backoff=args.teacher_server_backoff,
                concurrency=args.teacher_server_concurrency,
            )
            vocab_size = vocabulary_size(self.processing_class, student_config)
            self._served_teacher.check(self.processing_class, vocab_size, self.chat_template_kwargs)
        scorer = self._teacher() or self.accelerator.unwrap_model(self.model)  # the frozen PEFT teacher: the student
        teacher_dtype = torch.bfloat16 if self._served_teacher is not None else scorer.dtype
        self._evidence_alarm = build_alarm(args, teacher_dtype, train_dataset)
        if args.gate_probe_dataset is not None:  # labelled rows on which the gate is measured, never trained on
            probe_rows = load_probe_rows(args.gate_probe_dataset, train_dataset, args.crop_columns)
            self.add_callback(GateProbeCallback(self, probe_rows))

    def _teacher(self) -> PreTrainedModel | None:
        """The unwrapped teacher model, or `None` for the frozen teacher of a PEFT student (see `_peft_teacher`)."""
        return None if self.teacher_model is None else self.accelerator.unwrap_model(self.teacher_model)

    def _save_checkpoint(self, model, trial):
        # A checkpoint counts once `vzero_checkpoint.json` lists its files ([`vzero_trl.checkpoints`]): V-Zero's own
        # state first, then the base class's files, then, once every process has written its part, the marker (before
        # a push, so that the pushed copy is complete too). Older checkpoints are rotated out only after that (the base
        # class would rotate before it), so a kill while saving always leaves a complete checkpoint behind.
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")  # the base class's name
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            remove_marker(folder)
            if self.args.teacher_source == "ema":
                save_ema(self.teacher_model, folder)
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        self._mark_complete(folder)
        if self.args.should_save:
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint, use_mtime=True)

    def _push_from_checkpoint(self, checkpoint_folder):
        # Called by the base `_save_checkpoint` on every process once all files are written (TRL 1.16/transformers 5).
        self._mark_complete(checkpoint_folder)
        super()._push_from_checkpoint(checkpoint_folder)

    def _mark_complete(self, folder: str) -> None:
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_marker(folder, self.state.global_step)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # The schedule's base rate, which the restored optimizer state brought back from the checkpoint.
        if checkpoint is None or self.optimizer.param_groups[0].get("initial_lr") in (None, self.args.learning_rate):
            return
        restored = set_learning_rate(self.optimizer, self.lr_scheduler, self.args.learning_rate)
        logger.warning(
            f"Resuming {checkpoint} with learning_rate {self.args.learning_rate} instead of the {restored} it was "
            f"saved with: the restored optimizer and scheduler now use it (current rate "
            f"{self.lr_scheduler.get_last_lr()[0]:.6g} at optimizer step {self.lr_scheduler.last_epoch})."
        )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.args.teacher_source == "ema":
            load_ema(self.teacher_model, resume_from_checkpoint)

    def _set_signature_columns_if_needed(self):
        # As `trl.DistillationTrainer._set_signature_columns_if_needed` (TRL 1.16), plus the evidence columns (and `id`,
        # used in error messages) if `remove_unused_columns` is turned on.
        if self._signature_columns is None:
            self._signature_columns = ["prompt", "image", "images", "id", *self.args.crop_columns]

    # Grouped sampling: each prompt appears `num_generations` times in a row, so rows [k * G, (k + 1) * G) of the
    # gathered generation batch are one prompt's rollouts, whichever process generated them (`rollout_groups`). The
    # samplers and loaders below mirror `trl.DistillationTrainer`'s `_get_train_sampler`, `_get_eval_sampler`,
    # `get_train_dataloader` and `get_eval_dataloader` (TRL 1.16) with `mini_repeat_count = num_generations`.

    def _generation_batch_size(self) -> int:
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
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else dataset
        if not isinstance(dataset, IterableDataset):
            return super().get_eval_dataloader(eval_dataset)  # map-style: grouping comes from `_get_eval_sampler`
        dataset = repeat_iterable_dataset(
            dataset.shuffle(seed=self.args.seed), mini_repeat_count=self.args.num_generations_eval
        )
        self.accelerator.dataloader_config.dispatch_batches = False
        num_workers, self.args.dataloader_num_workers = self.args.dataloader_num_workers, 0  # keep groups in order
        try:
            return self._get_dataloader(
                dataset=dataset,
                description="Evaluation",
                batch_size=self.args.eval_batch_size,
                sampler_fn=self._get_eval_sampler,
                dataloader_key=eval_dataset if isinstance(eval_dataset, str) else "eval",
            )
        finally:
            self.args.dataloader_num_workers = num_workers

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
        mode = "train" if self.model.training else "eval"
        self._sampler_logps = None
        if self.use_vllm:
            # Mirrors the vLLM branch of `trl.DistillationTrainer._generate_single_turn` (TRL 1.16), but keeps the
            # sampler's log-probabilities (for `rollout_importance_clip`), and in server mode, where the rows hold each
            # prompt `num_generations` times in a row, sends every prompt (and its image features) once with
            # `n = num_generations` instead of `num_generations` separate requests. Colocated: one per repeated row.
            if self.state.global_step != self._last_loaded_step:
                with profiling_context(self, "sync_weights"):
                    self.vllm_generation.sync_weights()
                self._last_loaded_step = self.state.global_step
            num_generations = self.args.num_generations if mode == "train" else self.args.num_generations_eval
            _, completion_ids, logprobs, logprob_token_ids = self.vllm_generation.generate(
                prompts=prompt_ids,
                images=images,
                num_generations=num_generations if self.vllm_mode == "server" else 1,
                profiler=profiling_context(self, "vLLM.generate"),
            )
        else:
            completion_ids = super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
        # Generation suppresses vision tokens, but vLLM ignores the transformers suppression list.
        completion_ids, num_cut = truncate_at_tokens(
            completion_ids, self._vision_token_ids, self._tokenizer.eos_token_id
        )
        if self.use_vllm and self.args.rollout_importance_clip is not None:
            if logprobs is None:
                raise ValueError(
                    "`rollout_importance_clip` needs the sampler's log-probabilities, and vLLM sent none."
                )
            self._sampler_logps = sampler_token_logps(completion_ids, logprobs, logprob_token_ids)
        num_cut = self.accelerator.gather(torch.tensor(num_cut, device=self.accelerator.device)).sum()
        self._metrics[mode]["completions/vision_token_cut_frac"].append(
            num_cut.item() / (len(completion_ids) * self.accelerator.num_processes)
        )
        return completion_ids

    def _prepare_inputs(self, generation_batch: dict[str, Any]) -> dict[str, Any]:
        if not (self.model.training and self._student_shared):
            return super()._prepare_inputs(generation_batch)
        # Mirrors the training branch of `trl.DistillationTrainer._prepare_inputs` (TRL 1.16) without its
        # `shuffle_sequence_dict`: the micro-batches take the generation batch's rows in order, so each prompt's
        # rollouts stay together and share one prompt pass in the student's forward. The optimizer steps once per
        # generation batch and the loss is normalised by batch-wide counts, so the summed gradient does not depend on
        # how the rows are dealt into micro-batches.
        accumulation = self.args.gradient_accumulation_steps
        if self._step % accumulation == 0 or self._buffered_inputs is None:
            batch = split_pixel_values_by_grid(self._generate_and_score_completions(generation_batch))
            self._buffered_inputs = [
                unsplit_pixel_values_by_grid(micro_batch) for micro_batch in split_tensor_dict(batch, accumulation)
            ]
        return self._buffered_inputs[self._step % accumulation]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        # The walk of a batch of rows: check them, let the base class build the student prompts and generate, replay
        # the rollouts under both teacher views, gate, and hand the loss its inputs.
        args = self.args
        for index, row in enumerate(inputs):
            check_row(row, args.crop_columns, index, teacher_view=args.teacher_view)  # images to RGB, in place
        mode = "train" if self.model.training else "eval"
        num_generations = args.num_generations if mode == "train" else args.num_generations_eval
        local_rows = len(inputs)
        first_row = self.accelerator.process_index * local_rows  # this process's rows in the gathered batch
        group_index = rollout_groups(local_rows, num_generations, first_row, self.accelerator.device)
        if self._served_teacher is not None:  # the teacher's servers render both views while the student generates
            rendered = self._render(inputs, group_slices(group_index), args.crop_columns)
        output = super()._generate_and_score_completions(inputs)
        completion_ids, mask = output["completion_ids"], output["completion_mask"]
        device = completion_ids.device

        if self.teacher_model is not None:
            self.teacher_model.eval()
        keep_hidden = args.loss_type == "full_reverse_kl"
        groups = group_slices(group_index)
        if self._served_teacher is not None:
            scored = self._served_teacher.score(rendered, groups, completion_ids, mask)
        else:
            scored = self._replay(inputs, groups, completion_ids, mask, args.crop_columns, keep_hidden)
        (pos_logps, pos_hidden), neg_logps = scored[0], scored[1][0] if len(scored) > 1 else None
        if mode == "train" and self._evidence_alarm.active:
            self._check_views(inputs, groups[0], completion_ids, mask, pos_logps, neg_logps)

        # The gate needs whole groups, which may straddle processes: gather, gate, keep this process's rows.
        all_scores = None
        if neg_logps is None:  # plain on-policy distillation from the positive view
            all_weights = self.accelerator.gather(torch.ones(local_rows, device=device))
        else:
            all_scores = self.accelerator.gather(
                evidence_scores(pos_logps, neg_logps, mask, gamma=args.evidence_gamma)
            )
            all_weights = evidence_weights(
                all_scores,
                num_generations,
                alpha=args.evidence_alpha,
                w_min=args.evidence_weight_min,
                w_max=args.evidence_weight_max,
                eps=args.evidence_eps,
                std=args.evidence_std,
            )

        sums = self.accelerator.gather(evidence_token_sums(pos_logps, neg_logps, mask)).view(-1, 5).sum(0)
        bounds = (args.evidence_weight_min, args.evidence_weight_max)
        for key, value in evidence_metrics(sums, all_weights, all_scores, num_generations, *bounds).items():
            self._metrics[mode][key].append(value)
        if self.log_completions:  # gathered in the same order as the base class's prompts and completions
            self._logs["gate"].extend(all_weights.tolist())
            scores = all_scores.tolist() if all_scores is not None else [math.nan] * len(all_weights)
            self._logs["evidence_score"].extend(scores)
            self._logs["group"].extend(self.accelerator.gather(group_index).tolist())
            for key, column in zip(IMAGE_COLUMNS, (args.crop_column, args.negative_crop_column), strict=True):
                self._logs[key].extend(gather_object([thumbnail_png(row.get(column)) for row in inputs]))

        output["teacher_logps"] = pos_logps
        if self._sampler_logps is not None:  # right-padded like the completions, nan where unknown
            output["sampler_logps"] = padded_sampler_logps(self._sampler_logps, completion_ids.shape, device)
        output["evidence_weights"] = all_weights[first_row : first_row + local_rows]
        output["group_index"] = group_index
        output["num_sequences_in_batch"] = self.accelerator.gather(torch.tensor(local_rows, device=device)).sum()
        if keep_hidden:
            output["teacher_hidden_states"] = pos_hidden
        return output

    def _render(self, inputs, groups, columns):
        views = teacher_views(inputs, groups, columns, *self.args.teacher_texts, self.args.teacher_view)
        return self._served_teacher.render_views(views, self.chat_template_kwargs)

    def _replay(self, inputs, groups, completion_ids, mask, columns, keep_hidden=False):
        """The teacher's log-probabilities of the rollouts under the views of `columns` ([`replay_teacher`])."""
        if self._served_teacher is not None:
            return self._served_teacher.score(self._render(inputs, groups, columns), groups, completion_ids, mask)
        args, teacher = self.args, self._teacher()
        external = args.teacher_source == "external"  # prepared by the accelerator: forwards go through its wrapper
        with (
            offloaded(teacher, self.accelerator.device, args.offload_teacher),
            teacher_for_replay(teacher, self._peft_teacher) as scorer,
        ):
            return replay_teacher(
                scorer,
                self.processing_class,
                inputs,
                groups,
                completion_ids,
                mask,
                columns,
                strategy=args.teacher_scoring,
                crop_prefix=args.teacher_texts[0],
                crop_suffix=args.teacher_texts[1],
                layout=args.teacher_view,
                chat_template_kwargs=self.chat_template_kwargs,
                temperature=self.temperature,
                rows_per_forward=args.teacher_batch_size or args.per_device_train_batch_size,
                keep_hidden=keep_hidden,
                forward=partial(self._forward_redirection, self.teacher_model, teacher) if external else None,
            )

    def _check_views(self, inputs, first_group, completion_ids, mask, pos_logps, neg_logps):
        """Feed the blind-teacher alarm; without a negative view (alpha 0), score one for the first group's rollouts."""
        rows = slice(None)
        if neg_logps is None:
            if not self._evidence_alarm.wants_sample(self.state.global_step, inputs[first_group.start]):
                return
            rows, size = first_group, first_group.stop - first_group.start
            neg_column = [self.args.negative_crop_column]
            check_row(inputs[first_group.start], neg_column, first_group.start)
            neg_logps = self._replay(inputs[rows], [slice(0, size)], completion_ids[rows], mask[rows], neg_column)
            neg_logps = neg_logps[0][0]
        sums = view_gap_sums(pos_logps[rows], neg_logps, mask[rows], self._evidence_alarm.tolerance)
        for key, value in self._evidence_alarm.update(self.accelerator.gather(sums.view(1, 4)).sum(0)).items():
            self._metrics["train"][key].append(value)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Reduced here, outside the DDP-wrapped forward where `_compute_loss` runs, as the entropy is in
        # `trl.DistillationTrainer.compute_loss` (TRL 1.16).
        kl_sum, num_tokens, importance = self._reverse_kl_stats
        mode = "train" if self.model.training else "eval"
        if importance is not None:  # (ratio sum, clipped count) over the valid tokens
            ratio_sum, num_clipped = self.accelerator.gather_for_metrics(importance.view(1, 2)).sum(0)
            total = self.accelerator.gather_for_metrics(num_tokens).sum().clamp(min=1)
            self._metrics[mode]["rollout_is/ratio_mean"].append((ratio_sum / total).item())
            self._metrics[mode]["rollout_is/clipped_frac"].append((num_clipped / total).item())
        kl_sum = self.accelerator.gather_for_metrics(kl_sum).sum()
        num_tokens = self.accelerator.gather_for_metrics(num_tokens).sum()
        # The divergence the loss distils: the reverse KL, unless a generalized JSD or a top-k support replaces it.
        reverse_kl = self.args.beta == 1.0 and self.args.loss_top_k is None
        name = "distillation/reverse_kl" if reverse_kl else "distillation/divergence"
        self._metrics[mode][name].append((kl_sum / num_tokens.clamp(min=1)).item())
        return result

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        if self._student_shared:  # each group of rollouts continues from one pass over its prompt
            model = unwrapped_student.base_model.model if is_peft_model(unwrapped_student) else unwrapped_student
            groups = group_slices(inputs["group_index"])
            hidden_states = student_hidden_grouped(model.base_model, inputs, groups, model.config.image_token_id)
        else:  # every rollout as its own [prompt | completion] sequence, as `trl.DistillationTrainer._compute_loss`
            hidden_states = self._get_last_hidden_state(
                unwrapped_student,
                torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
                torch.cat([inputs["prompt_mask"], mask], dim=1),
                completion_ids.size(1),
                **{key: inputs[key] for key in MULTIMODAL_KEYS if key in inputs},
            )
        lm_head = unwrapped_student.get_output_embeddings()

        # The base `compute_loss` passes the generation batch's token count divided by the number of processes; a
        # micro-batch's sum divided by the global count makes accumulation and DDP averaging give the global mean.
        normalizer = None
        if self.model.training and num_items_in_batch is not None:
            if self.args.loss_aggregation == "token":
                normalizer = num_items_in_batch
            else:
                normalizer = inputs["num_sequences_in_batch"] / self.accelerator.num_processes

        teacher_lm_head = None
        if self.args.loss_type == "full_reverse_kl":
            # A PEFT student's frozen teacher is its base model, whose lm_head carries no adapter.
            teacher = self._peft_teacher.get_base_model() if self.teacher_model is None else self._teacher()
            teacher_lm_head = teacher.get_output_embeddings()
        loss, per_token_kl, entropy, importance = gated_distillation_loss(
            hidden_states,
            lm_head,
            completion_ids,
            mask,
            inputs["evidence_weights"],
            loss_type=self.args.loss_type,
            aggregation=self.args.loss_aggregation,
            temperature=self.temperature,
            normalizer=normalizer,
            teacher_logps=inputs["teacher_logps"],
            log_ratio_clip=self.args.log_ratio_clip,
            teacher_hidden_states=inputs.get("teacher_hidden_states"),
            teacher_lm_head=teacher_lm_head,
            beta=self.args.beta,
            top_k=self.args.loss_top_k,
            sampler_logps=inputs.get("sampler_logps"),
            importance_clip=self.args.rollout_importance_clip,
        )
        valid = mask.bool()
        self._reverse_kl_stats = (per_token_kl[valid].sum(), valid.sum(), importance)
        return loss, entropy[valid].sum(), valid.sum()

    def create_model_card(
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ):
        """Write `output_dir/README.md`: the V-Zero card (the inherited one describes a text-generation model)."""
        if not self.is_world_process_zero():
            return
        tags = {tags} if isinstance(tags, str) else set(tags or [])
        base_model = get_config_model_id(self.model.config)
        external = self.args.teacher_source == "external" and self._served_teacher is None
        teacher_id = (
            get_config_model_id(self.accelerator.unwrap_model(self.teacher_model).config) if external else None
        )
        if self._served_teacher is not None:  # the served model's name
            teacher_id = self._served_teacher.model
        card = build_model_card(
            args=self.args,
            model_name=model_name or Path(self.args.output_dir).name,
            base_model=base_model,
            teacher_model=teacher_description(self.args.teacher_source, base_model, teacher_id),
            dataset_name=dataset_name,
            tags=sorted(tags | set(self._tag_names)),
            citation=self._paper["citation"],
            num_processes=self.accelerator.num_processes,
            log_history=self.state.log_history,
            **tracking_urls(),
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def add_metrics(self, metrics: dict[str, float], mode: str = "train") -> None:
        """Values averaged into the next log with the trainer's own metrics (callbacks such as the benchmark one)."""
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # `trl.DistillationTrainer.log` (TRL 1.16) writes a completions table without gates; write ours instead.
        log_completions, self.log_completions = self.log_completions, False
        try:
            super().log(logs, start_time)
        finally:
            self.log_completions = log_completions
        if self.accelerator.is_main_process and self.log_completions:
            log_completions_table(
                {key: list(self._logs[key]) for key in TABLE_COLUMNS},
                self.state.global_step,
                self.args.output_dir,
                self.num_completions_to_print,
                self.log_unique_prompts,
                self.args.report_to or [],
            )
