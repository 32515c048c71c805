"""`VZeroTrainer`: on-policy distillation of a vision-language student with contrastive evidence gating."""

import os
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, ProcessorMixin, TrainerCallback
from transformers.utils import logging
from trl import DistillationTrainer
from trl.extras.profiling import profiling_context
from trl.trainer.utils import (
    get_config_model_id,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from .card import PAPER, build_model_card, teacher_description, tracking_urls
from .checkpoints import MarkedCheckpoints
from .completions_table import COLUMNS as TABLE_COLUMNS
from .completions_table import add_columns, extend_columns, log_completions_table, thumbnail_png
from .config import VZeroConfig
from .evidence_alarm import build_alarm
from .gate_probe import GateProbeCallback, load_probe_rows
from .gating import (
    evidence_metrics,
    evidence_scores,
    evidence_token_sums,
    evidence_weights,
    group_slices,
    rollout_groups,
)
from .grouped_sampling import GroupedSampling
from .importance import importance_metrics, padded_sampler_logps, sampler_token_logps
from .losses import check_top_k, divergence_metric, gated_distillation_loss, loss_normalizer
from .processing import check_processor, student_processor
from .quiet import silence_unactionable_warnings
from .replay import MULTIMODAL_KEYS, replay_teacher, teacher_views
from .served_teacher import connect_served_teacher
from .shared_prefix import check_teacher_scoring, student_hidden_grouped, unsupported_reason
from .teachers import EMACallback, check_teacher_model, load_ema, save_ema, setup_teacher
from .views import check_dataset_columns, check_row, truncate_at_tokens, vision_token_ids


logger = logging.get_logger(__name__)


class VZeroTrainer(GroupedSampling, MarkedCheckpoints, DistillationTrainer):
    """
    Trainer for V-Zero: answer-label-free on-policy distillation with contrastive evidence gating.

    The student samples `num_generations` rollouts per prompt from the full image. The teacher replays every rollout
    twice, with the positive crop and with the negative crop appended to the prompt; the per-token log-probability gap,
    averaged per rollout and standardised within each prompt's group, becomes a gate `w = clip(1 + alpha * a, w_min,
    w_max)` that weights a sampled-token reverse-KL distillation loss against the positive view (eqs. 14-24).

    Differences from [`~trl.DistillationTrainer`]:

    - samplers and loaders repeat each prompt `num_generations` times, contiguously (train and eval), through the
      [`vzero_trl.grouped_sampling.GroupedSampling`] mixin;
    - `_generate_and_score_completions` also replays the rollouts under both teacher views ([`vzero_trl.replay`], or
      on vLLM servers: [`vzero_trl.served_teacher`]) and gates them once per generation batch, over whole groups
      gathered from all processes; each row's group is read from the sampler's layout once (`group_index`);
    - `_prepare_inputs` keeps each prompt's rollouts together in the micro-batches for the shared-prefix student;
    - `_compute_loss` computes the gated loss from the student's sampled-token log-probabilities (or the gated full
      reverse KL), normalised so that gradient accumulation and data parallelism give the same update as one batch;
    - `_generate_single_turn` sends each prompt once with `n = num_generations` to a vLLM server, and never lets a
      vision placeholder token into a completion;
    - evidence metrics are logged under `evidence/*` and the sampled reverse KL under `distillation/reverse_kl`; the
      blind-teacher alarm watches both views ([`vzero_trl.evidence_alarm`]), and with `gate_probe_dataset` a callback
      measures the gate on labelled rows ([`vzero_trl.gate_probe`]);
    - checkpoints count once complete and a resume applies the run's `learning_rate`, through the
      [`vzero_trl.checkpoints.MarkedCheckpoints`] mixin; the EMA teacher is saved in each;
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

        # The teacher replays in this process (`_local_teacher`) or on vLLM servers (`_served_teacher`), never both.
        unwrap, student_config = self.accelerator.unwrap_model, self.accelerator.unwrap_model(self.model).config
        self._local_teacher = self._served_teacher = None
        if args.teacher_server_urls:
            self._served_teacher = connect_served_teacher(
                args, self.processing_class, student_config, self.chat_template_kwargs
            )
        else:
            sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
            local = setup_teacher(
                args, self.teacher_model, self.model, self.accelerator, sharded, self._forward_redirection
            )
            self._local_teacher, self.teacher_model = local, local.model
            check_teacher_scoring(args.teacher_scoring, local.weights.config.model_type)
        if args.teacher_source == "ema":
            self.add_callback(EMACallback(self.teacher_model, unwrap, args.teacher_ema_rate))
        teacher_config = self._local_teacher.weights.config if self._local_teacher else student_config
        check_top_k(args.loss_top_k, min(c.get_text_config().vocab_size for c in (student_config, teacher_config)))
        # Read after `super().__init__`, which may force reentrant checkpointing (PEFT with DeepSpeed ZeRO-3).
        reason = unsupported_reason(student_config.model_type, args.reentrant_checkpointing)
        self._student_shared = args.student_scoring == "shared_prefix" and reason is None
        if args.student_scoring == "shared_prefix" and reason is not None:
            logger.warning(f"student_scoring='shared_prefix' falls back to 'per_sequence': {reason}.")

        # Vision placeholder tokens are never generated (and cut where vLLM ignores this: `_generate_single_turn`).
        self._vision_token_ids = vision_token_ids(student_config.to_dict())
        suppressed = sorted(set(self.generation_kwargs.get("suppress_tokens") or []) | self._vision_token_ids)
        self.generation_kwargs["suppress_tokens"] = self.generation_config.suppress_tokens = suppressed
        self._reverse_kl_stats = None
        self._sampler_logps = None  # vLLM's log-probabilities of the last generated rollouts (importance correction)
        add_columns(self._logs)  # beside the base class's prompt and completion logs, for the completions table
        teacher_dtype = torch.bfloat16 if self._served_teacher is not None else self._local_teacher.weights.dtype
        self._evidence_alarm = build_alarm(args, teacher_dtype, train_dataset)
        if args.gate_probe_dataset is not None:  # labelled rows on which the gate is measured, never trained on
            probe_rows = load_probe_rows(args.gate_probe_dataset, train_dataset, args.crop_columns)
            self.add_callback(GateProbeCallback(self, probe_rows))

    def _save_own_state(self, folder: str) -> None:
        if self.args.teacher_source == "ema":  # restored by `_load_from_checkpoint`
            save_ema(self.teacher_model, folder)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.args.teacher_source == "ema":
            load_ema(self.teacher_model, resume_from_checkpoint)

    def _set_signature_columns_if_needed(self):
        # As `trl.DistillationTrainer._set_signature_columns_if_needed` (TRL 1.16), plus the evidence columns (and `id`,
        # used in error messages) if `remove_unused_columns` is turned on.
        if self._signature_columns is None:
            self._signature_columns = ["prompt", "image", "images", "id", *self.args.crop_columns]

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
        groups = group_slices(group_index)
        if self._served_teacher is not None:  # the teacher's servers render both views while the student generates
            rendered = self._render(inputs, groups, args.crop_columns)
        output = super()._generate_and_score_completions(inputs)
        completion_ids, mask = output["completion_ids"], output["completion_mask"]
        device = completion_ids.device

        keep_hidden = args.loss_type == "full_reverse_kl"
        if self._served_teacher is not None:
            scored = self._served_teacher.score(rendered, groups, completion_ids, mask)
        else:
            scored = self._replay(inputs, groups, completion_ids, mask, args.crop_columns, keep_hidden)
        (pos_logps, pos_hidden), neg_logps = scored[0], scored[1][0] if len(scored) > 1 else None
        if mode == "train" and self._evidence_alarm.active:
            step, replay, gather = self.state.global_step, self._replay, self.accelerator.gather
            alarm = self._evidence_alarm.watch(
                step, inputs, groups[0], completion_ids, mask, pos_logps, neg_logps, replay, gather
            )
            self.add_metrics(alarm)  # the two views compared (without gating, on a sampled negative view)

        # The gate needs whole groups, which may straddle processes: gather, gate, keep this process's rows.
        all_scores = None
        if neg_logps is None:  # plain on-policy distillation from the positive view
            all_weights = self.accelerator.gather(torch.ones(local_rows, device=device))
        else:
            all_scores = self.accelerator.gather(
                evidence_scores(pos_logps, neg_logps, mask, gamma=args.evidence_gamma)
            )
            all_weights = evidence_weights(all_scores, num_generations, **args.gate_settings)

        sums = self.accelerator.gather(evidence_token_sums(pos_logps, neg_logps, mask)).view(-1, 5).sum(0)
        bounds = (args.evidence_weight_min, args.evidence_weight_max)
        self.add_metrics(evidence_metrics(sums, all_weights, all_scores, num_generations, *bounds), mode)
        if self.log_completions:
            crops = [
                tuple(thumbnail_png(row.get(c)) for c in (args.crop_column, args.negative_crop_column))
                for row in inputs
            ]
            groups = self.accelerator.gather(group_index)
            extend_columns(self._logs, all_weights, all_scores, groups, gather_object(crops))

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
        args = self.args
        with self._local_teacher.replaying() as (scorer, forward):
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
                forward=forward,
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Reduced here, outside the DDP-wrapped forward where `_compute_loss` runs, as the entropy is in
        # `trl.DistillationTrainer.compute_loss` (TRL 1.16).
        kl_sum, num_tokens, importance = self._reverse_kl_stats
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        kl_sum, num_tokens = gather(kl_sum).sum(), gather(num_tokens).sum()
        if importance is not None:  # (ratio sum, clipped count) over the valid tokens
            self.add_metrics(importance_metrics(gather(importance.view(1, 2)).sum(0), num_tokens), mode)
        name = divergence_metric(self.args.beta, self.args.loss_top_k)
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

        normalizer = None  # evaluation: each micro-batch's own mean
        if self.model.training:
            normalizer = loss_normalizer(
                self.args.loss_aggregation,
                num_items_in_batch,
                inputs["num_sequences_in_batch"],
                self.accelerator.num_processes,
            )

        full_kl = self.args.loss_type == "full_reverse_kl"
        loss, per_token_kl, entropy, importance = gated_distillation_loss(
            hidden_states,
            lm_head,
            completion_ids,
            mask,
            inputs["evidence_weights"],
            temperature=self.temperature,
            normalizer=normalizer,
            teacher_logps=inputs["teacher_logps"],
            teacher_hidden_states=inputs.get("teacher_hidden_states"),
            teacher_lm_head=self._local_teacher.output_layer() if full_kl else None,
            sampler_logps=inputs.get("sampler_logps"),
            **self.args.loss_settings,
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
        if self._served_teacher is not None:
            teacher = self._served_teacher.model
        else:
            teacher = teacher_description(self.args.teacher_source, base_model, self._local_teacher.weights.config)
        card = build_model_card(
            args=self.args,
            model_name=model_name or Path(self.args.output_dir).name,
            base_model=base_model,
            teacher_model=teacher,
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
