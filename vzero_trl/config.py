"""`VZeroConfig`: the one flat configuration of V-Zero training, a `trl.DistillationConfig` with the V-Zero fields."""

from dataclasses import dataclass, field
from typing import Any, Literal

from trl import DistillationConfig

from .checks import check_range
from .views import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX


@dataclass
class VZeroConfig(DistillationConfig):
    r"""
    Configuration class for [`VZeroTrainer`]: [`~trl.DistillationConfig`] plus the fields of V-Zero's contrastive
    evidence gating ([V-Zero: Answer-Label-Free On-Policy Distillation with Contrastive Evidence Gating for
    Fine-Grained Visual Reasoning](https://github.com/eVI-group-SCU/V-Zero), eqs. 14-24).

    Every field can be set from a YAML recipe or the command line with [`~trl.TrlParser`].

    Parameters:
        > Parameters that control the rollouts

        num_generations (`int`, *optional*, defaults to `8`):
            Number of rollouts `G` sampled per prompt. The rollouts of a prompt are contiguous rows of the generation
            batch, so `per_device_train_batch_size * num_processes * gradient_accumulation_steps` (the number of
            rollouts per optimizer step) must be a multiple of it. `per_device_train_batch_size` counts rollouts, not
            prompts.
        num_generations_eval (`int`, *optional*):
            Number of rollouts per prompt during evaluation. Defaults to `num_generations`; `per_device_eval_batch_size
            * num_processes` must be a multiple of it.

        > Parameters that control the teacher

        teacher_source (`str`, *optional*, defaults to `"external"`):
            Where the teacher comes from. `"external"`: the separate `teacher_model` (e.g. Qwen3.5-27B). `"frozen"`: the
            initial student, never updated; a full-parameter student is copied once, a LoRA student needs no copy (its
            base model with the adapter disabled is the initial student). `"ema"`: an exponential moving average of
            the student, `theta_t <- (1 - r) * theta_t + r * theta_s` after every optimizer step with
            `r = teacher_ema_rate` (Vision-OPD), one copy of the student's weights, saved in every checkpoint
            (`ema_teacher.pt`) and restored on resume. The self-teachers need no `teacher_model`, see the student's
            vocabulary and processor by construction, and are gated like an external teacher. Neither runs under
            DeepSpeed ZeRO-3 or FSDP (they copy unsharded weights); `"ema"` needs a full-parameter student.
        teacher_ema_rate (`float`, *optional*, defaults to `0.05`):
            Weight `r` of the student in each EMA step, in `(0, 1]` (Vision-OPD uses `0.05`). Only for
            `teacher_source="ema"`.
        offload_teacher (`bool`, *optional*, defaults to `False`):
            Keep an external teacher's weights on the CPU and move them to the accelerator once per generation batch,
            for the replay of all its rollouts, and back afterwards: device memory is bounded by the larger of student
            and teacher instead of their sum, at the cost of two host-device copies of the teacher per generation
            batch. Only for `teacher_source="external"` and `loss_type="sampled_token"` (the full-vocabulary loss reads
            the teacher's output layer in every micro-batch), and not under DeepSpeed or FSDP.
        teacher_server_urls (`list[str]`, *optional*):
            Base URLs (`http://host:port`) of vLLM servers of the external teacher (`vllm serve <teacher>
            --enable-scale-out --logprobs-mode raw_logprobs`, vLLM >= 0.30): both views are then scored by the servers
            and no teacher is loaded into training ([`vzero_trl.served_teacher`]). Rollouts are spread over the URLs.
            `teacher_model_name_or_path`, if set, must be the served model's name. Each server is checked at start
            (up; the student's tokenizer, chat template and vocabulary; sees the images). Only for
            `teacher_source="external"` and `loss_type="sampled_token"`: a server returns the sampled tokens'
            log-probabilities, not the whole distribution that the full-vocabulary and top-k losses need.
        teacher_server_timeout (`float`, *optional*, defaults to `120.0`):
            Seconds one request to a teacher server may take.
        teacher_server_retries (`int`, *optional*, defaults to `3`):
            Retries of a teacher-server request that fails to connect, times out or gets a 5xx answer; after them the
            step fails with the URL and the error (training never uses a missing or partial score).
        teacher_server_backoff (`float`, *optional*, defaults to `1.0`):
            Seconds before the first retry; each further retry waits twice as long (1, 2, 4 s by default).
        teacher_server_concurrency (`int`, *optional*, defaults to `32`):
            Teacher-server requests in flight at once per training process, over all URLs.

        > Parameters that control the teacher views

        crop_column (`str`, *optional*, defaults to `"crop"`):
            Dataset column holding the positive evidence image `z+` (a crop around the question-relevant region).
            Point it at a random-crop column to run the paper's "random evidence" ablation (Table 2).
        negative_crop_column (`str`, *optional*, defaults to `"negative_crop"`):
            Dataset column holding the negative evidence image `z-` (an equal-size region away from the target, taken
            after a 2x downsample). Not read when `evidence_alpha` is `0`.
        teacher_view (`str`, *optional*, defaults to `"full_and_crop"`):
            Layout of both teacher views. `"full_and_crop"` (paper Fig. 4): the full image, the question, then
            `teacher_crop_prefix`, the crop and `teacher_crop_suffix`. `"crop_only"` (Vision-OPD): the crop takes the
            full image's place, between `teacher_crop_only_prefix` and `teacher_crop_only_suffix` (empty by default:
            the teacher's text is then the student's, byte for byte); needs one image per prompt. The negative view
            takes the same layout with the negative crop.
        teacher_crop_prefix (`str`, *optional*, defaults to the first half of the paper's Fig. 4 sentence):
            Text placed after the question and before the crop image in the teacher's user turn (`"full_and_crop"`).
        teacher_crop_suffix (`str`, *optional*, defaults to the second half of the paper's Fig. 4 sentence):
            Text placed after the crop image (`"full_and_crop"`).
        teacher_crop_only_prefix (`str`, *optional*, defaults to `""`):
            Text placed before the crop image, where the full image was (`"crop_only"`; empty texts are left out).
        teacher_crop_only_suffix (`str`, *optional*, defaults to `""`):
            Text placed right after the crop image, before the question (`"crop_only"`).
        teacher_batch_size (`int`, *optional*):
            Number of rollouts per teacher forward pass when replaying the views. Defaults to
            `per_device_train_batch_size`. Lower it if the teacher's long multimodal contexts run out of memory.
        teacher_scoring (`str`, *optional*, defaults to `"shared_prefix"`):
            `"shared_prefix"`: each prompt's image and question are run through the teacher once, and both views and
            all rollouts continue from that state (one full-image encoding per prompt instead of `2G`; Qwen3.5
            teachers). `"per_sequence"`: every rollout is scored under each view as its own sequence (any teacher; the
            reference the shared path is tested against). `"naive"` is the old name of `"per_sequence"`, still accepted.
        student_scoring (`str`, *optional*, defaults to `"shared_prefix"`):
            The student's training forward. `"shared_prefix"`: the rollouts of one prompt in a micro-batch continue
            from a single run of its image and question, with gradients flowing back through the shared part (one
            full-image encoding and one prefix per prompt instead of one per rollout; Qwen3.5 students). Works with
            non-reentrant activation checkpointing (the default): each checkpointed layer replays against the cache
            as it was. Micro-batches keep each prompt's rollouts together instead of shuffling them; with one
            optimizer step per generation batch the summed gradient is the same. Falls back to `"per_sequence"` with
            a warning for other model types and under reentrant checkpointing. `"per_sequence"`: every rollout is its
            own `[prompt | completion]` sequence (the reference the shared path is tested against). `"naive"` is the
            old name of `"per_sequence"`, still accepted.

        > Parameters that control the evidence gate

        evidence_alpha (`float`, *optional*, defaults to `1.0`):
            Gain of the gate `w = clip(1 + alpha * a, w_min, w_max)`. `1.0` is the paper (eq. 20), `0.5` reproduces
            the official code, and `0.0` switches gating off: every weight is 1, which is plain on-policy distillation
            from the positive view, and the negative-view teacher pass is skipped.
        evidence_gamma (`float`, *optional*, defaults to `1.0`):
            Token score `relu(d) - gamma * relu(-d)` with `d` the positive/negative log-probability gap. `1.0` is the
            plain gap of eq. 18; larger values penalise tokens that the negative view supports better.
        evidence_weight_min (`float`, *optional*, defaults to `0.0`):
            Lower clip bound `w_min` of the gate. Must lie in `[0, 1]`.
        evidence_weight_max (`float`, *optional*, defaults to `2.0`):
            Upper clip bound `w_max` of the gate. Must be at least `1`.
        evidence_eps (`float`, *optional*, defaults to `1e-6`):
            Added to each group's standard deviation (eq. 19).
        evidence_std (`str`, *optional*, defaults to `"population"`):
            Standard deviation used in eq. 19: `"population"` (divide by `G`, the official code) or `"sample"` (divide
            by `G - 1`).

        > Parameters that check the gate

        evidence_alarm (`str`, *optional*, defaults to `"warn"`):
            The blind-teacher alarm ([`vzero_trl.evidence_alarm`]): over the first `evidence_alarm_steps` scored
            generation batches, a token is distinct when the two views' teacher log-probabilities differ beyond the
            teacher's numerical noise; with at most 1% distinct tokens the teacher cannot see the evidence (vision
            weights not loaded, wrong processor, images dropped by the chat template, identical crops). `"warn"` logs
            it once, naming these causes, `"error"` stops training, `"off"` skips the check. A teacher that sees but
            prefers neither crop is reported once as a different condition. The share of distinct tokens of each
            checked batch is logged as `evidence/distinct_token_frac`.
        evidence_alarm_steps (`int`, *optional*, defaults to `5`):
            Number of scored generation batches the alarm looks at before it decides (once per run).
        evidence_alarm_every (`int`, *optional*, defaults to `10`):
            With `evidence_alpha=0`, which skips the negative view, the alarm scores it for one prompt's rollouts per
            process every `evidence_alarm_every` steps until it has decided (after `(evidence_alarm_steps - 1) *
            evidence_alarm_every + 1` steps); rows without `negative_crop_column` turn it off with a warning.
        gate_probe_dataset (`str`, *optional*):
            A labelled dataset in the training schema, with `answer` (a few hundred rows; a folder written by
            `save_to_disk`, a local file or a Hub id, its `train` split): every `gate_probe_steps` steps the current
            student samples `num_generations` rollouts per row, the teacher scores both views, the gates are computed
            as in training and the rollouts graded with [`vzero_trl.eval.answers`]; logged under `probe/*`
            ([`vzero_trl.gate_probe`]). The probe never trains and leaves the training's random state as it was; rows
            whose `id` (or, without ids, prompt and image) are training rows are refused. Needs `evidence_alpha > 0`.
        gate_probe_steps (`int`, *optional*, defaults to `100`):
            Steps between two runs of the gate probe.

        > Parameters that control the loss

        loss_type (`str`, *optional*, defaults to `"sampled_token"`):
            `"sampled_token"`: the surrogate `w * sg[lp_s - lp_t] * lp_s` on the sampled tokens (eq. 24, the paper's
            training loss). `"full_reverse_kl"`: the exact full-vocabulary reverse KL against the positive view, each
            rollout's tokens weighted by its gate (eq. 22); it keeps the positive view's teacher hidden states of the
            generation batch in memory.
        loss_aggregation (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"`: mean over rollouts of each rollout's token mean (eqs. 22 and 24). `"token"`: one mean over all
            completion tokens of the batch (the official code), so longer rollouts weigh more.
        log_ratio_clip (`float`, *optional*):
            If set, the detached log-ratio `lp_s - lp_t` of the sampled-token loss is clamped to
            `[-log_ratio_clip, log_ratio_clip]` (the official code uses `10`). Only for `loss_type="sampled_token"`.
        rollout_importance_clip (`float`, *optional*):
            With vLLM rollouts (`use_vllm=True`): multiply each token's loss by the detached truncated importance
            weight `min(pi_train / pi_sampler, C)`, `C = rollout_importance_clip` (Vision-OPD: `2.0`), from the
            log-probabilities vLLM returns with its samples. The mean ratio and the clipped fraction are logged under
            `rollout_is/*`. `None` (the default) leaves the loss as is.
        loss_top_k (`int`, *optional*):
            With `loss_type="full_reverse_kl"`: restrict the divergence at each position to the teacher's `loss_top_k`
            most likely tokens, both distributions renormalised over them (Vision-OPD: `100`). The gate still weights
            each rollout.

    > [!NOTE]
    > V-Zero uses these inherited fields with the meaning they have in [`~trl.DistillationConfig`]: `beta` selects
    > the divergence of `loss_type="full_reverse_kl"`, in TRL's convention: `1.0` (the default) is the reverse KL
    > `KL(p_s || p_t)`, and `beta` in `(0, 1)` the generalized JSD `beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`
    > with `m = (1 - beta) * p_s + beta * p_t` (`0.5`: Vision-OPD's symmetric JSD); the sampled-token loss needs
    > `1.0`. `temperature` must stay `1.0` (rollouts are sampled from, and scored under, the student's
    > own distribution, as in the paper), and `chat_template_kwargs` (e.g. `{"enable_thinking": false}` for Qwen3.5)
    > applies to the student prompt and to both teacher views alike.

    > [!NOTE]
    > `project` (the trackio project; the launcher also gives it to wandb) defaults to `"vzero"` instead of
    > transformers' `"huggingface"`.
    """

    # Parameters that control the rollouts
    num_generations: int = field(
        default=8,
        metadata={"help": "Number of rollouts G sampled per prompt; they form one group for the evidence gate."},
    )
    num_generations_eval: int | None = field(
        default=None,
        metadata={"help": "Number of rollouts per prompt during evaluation. Defaults to `num_generations`."},
    )

    # Parameters that control the teacher
    teacher_source: Literal["external", "frozen", "ema"] = field(
        default="external",
        metadata={
            "help": "'external' (the separate teacher_model), 'frozen' (the initial student; for LoRA the base model "
            "with the adapter disabled) or 'ema' (an EMA of the student, rate teacher_ema_rate)."
        },
    )
    teacher_ema_rate: float = field(
        default=0.05,
        metadata={
            "help": "Student weight r of the EMA step theta_t <- (1 - r) theta_t + r theta_s (Vision-OPD: 0.05)."
        },
    )
    offload_teacher: bool = field(
        default=False,
        metadata={"help": "Keep an external teacher on the CPU, on the accelerator only while it replays a batch."},
    )
    teacher_server_urls: list[str] | None = field(
        default=None,
        metadata={
            "help": "Base URLs of vLLM servers of the external teacher (vllm serve --enable-scale-out --logprobs-mode "
            "raw_logprobs); both views are scored there, no teacher is loaded. Sampled-token loss only."
        },
    )
    teacher_server_timeout: float = field(
        default=120.0,
        metadata={"help": "Seconds one request to a teacher server may take."},
    )
    teacher_server_retries: int = field(
        default=3,
        metadata={
            "help": "Retries of a failed teacher-server request (connection, timeout, 5xx) before the step fails."
        },
    )
    teacher_server_backoff: float = field(
        default=1.0,
        metadata={"help": "Seconds before the first retry of a teacher-server request; doubled at each retry."},
    )
    teacher_server_concurrency: int = field(
        default=32,
        metadata={"help": "Teacher-server requests in flight at once per training process, over all URLs."},
    )

    # Parameters that control the teacher views
    crop_column: str = field(
        default="crop",
        metadata={"help": "Dataset column with the positive evidence crop z+."},
    )
    negative_crop_column: str = field(
        default="negative_crop",
        metadata={"help": "Dataset column with the negative evidence crop z- (not read when evidence_alpha is 0)."},
    )
    teacher_view: Literal["full_and_crop", "crop_only"] = field(
        default="full_and_crop",
        metadata={"help": "'full_and_crop' (paper Fig. 4) or 'crop_only' (Vision-OPD: the crop replaces the image)."},
    )
    teacher_crop_prefix: str = field(
        default=TEACHER_CROP_PREFIX,
        metadata={"help": "Teacher text between the question and the crop image (paper Fig. 4)."},
    )
    teacher_crop_suffix: str = field(
        default=TEACHER_CROP_SUFFIX,
        metadata={"help": "Teacher text after the crop image (paper Fig. 4)."},
    )
    teacher_crop_only_prefix: str = field(
        default="",
        metadata={"help": "Teacher text before the crop image in the 'crop_only' layout (Vision-OPD: none)."},
    )
    teacher_crop_only_suffix: str = field(
        default="",
        metadata={"help": "Teacher text after the crop image in the 'crop_only' layout (Vision-OPD: none)."},
    )
    teacher_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rollouts per teacher forward pass. Defaults to per_device_train_batch_size."},
    )
    teacher_scoring: Literal["shared_prefix", "per_sequence", "naive"] = field(
        default="shared_prefix",
        metadata={
            "help": "'shared_prefix' (each prompt's prefix run once; Qwen3.5 teachers) or 'per_sequence' (every "
            "rollout alone; the reference). 'naive' is the old name of 'per_sequence'."
        },
    )
    student_scoring: Literal["shared_prefix", "per_sequence", "naive"] = field(
        default="shared_prefix",
        metadata={
            "help": "'shared_prefix' (each prompt run once in the student's training forward, gradients through it; "
            "Qwen3.5 students) or 'per_sequence' (every rollout alone; the reference). 'naive' is the old name of "
            "'per_sequence'."
        },
    )

    # Parameters that control the evidence gate
    evidence_alpha: float = field(
        default=1.0,
        metadata={
            "help": "Gate gain: w = clip(1 + alpha * a, w_min, w_max). 1 = paper, 0.5 = official code, 0 = off."
        },
    )
    evidence_gamma: float = field(
        default=1.0,
        metadata={"help": "Token score relu(d) - gamma * relu(-d); 1 gives the plain gap of eq. 18."},
    )
    evidence_weight_min: float = field(
        default=0.0,
        metadata={"help": "Lower clip bound of the gate, in [0, 1]."},
    )
    evidence_weight_max: float = field(
        default=2.0,
        metadata={"help": "Upper clip bound of the gate, at least 1."},
    )
    evidence_eps: float = field(
        default=1e-6,
        metadata={"help": "Added to each group's standard deviation (eq. 19)."},
    )
    evidence_std: Literal["population", "sample"] = field(
        default="population",
        metadata={"help": "Standard deviation of eq. 19: 'population' (official code) or 'sample' (Bessel)."},
    )

    # Parameters that check the gate
    evidence_alarm: Literal["warn", "error", "off"] = field(
        default="warn",
        metadata={
            "help": "Blind-teacher alarm when the two views' teacher log-probabilities are indistinguishable: 'warn' "
            "(once), 'error' (stop training) or 'off'."
        },
    )
    evidence_alarm_steps: int = field(
        default=5,
        metadata={"help": "Scored generation batches the blind-teacher alarm looks at before it decides."},
    )
    evidence_alarm_every: int = field(
        default=10,
        metadata={"help": "With evidence_alpha=0: steps between two sampled negative-view scorings for the alarm."},
    )
    gate_probe_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Labelled rows (training schema with `answer`) on which the gate's ranking of correct and wrong "
            "rollouts is measured every gate_probe_steps steps (probe/*); never trained on."
        },
    )
    gate_probe_steps: int = field(
        default=100,
        metadata={"help": "Steps between two runs of the gate probe."},
    )

    # Parameters that control the loss
    loss_type: Literal["sampled_token", "full_reverse_kl"] = field(
        default="sampled_token",
        metadata={
            "help": "'sampled_token' (eq. 24) or 'full_reverse_kl' (eq. 22, gate applied per rollout; with beta < 1 "
            "the generalized JSD, with loss_top_k over the teacher's top-k tokens)."
        },
    )
    loss_aggregation: Literal["sequence", "token"] = field(
        default="sequence",
        metadata={"help": "'sequence' (mean of per-rollout token means, eq. 24) or 'token' (official code)."},
    )
    log_ratio_clip: float | None = field(
        default=None,
        metadata={"help": "Clamp of the detached sampled log-ratio (official code: 10). Sampled-token loss only."},
    )

    rollout_importance_clip: float | None = field(
        default=None,
        metadata={
            "help": "Truncation C of the token-level weight min(pi_train / pi_sampler, C) (vLLM; Vision-OPD: 2)."
        },
    )
    loss_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Full-vocabulary loss over the teacher's top-k tokens only, renormalised (Vision-OPD: 100)."
        },
    )

    # Parameters whose default differs from TrainingArguments
    project: str = field(
        default="vzero",
        metadata={"help": "The name of the project to use for logging (trackio; the launcher also sets wandb's)."},
    )

    @property
    def crop_columns(self) -> list[str]:
        """The evidence columns training reads: the positive crop, and the negative crop unless gating is off."""
        return [self.crop_column] + ([self.negative_crop_column] if self.evidence_alpha > 0 else [])

    @property
    def teacher_texts(self) -> tuple[str, str]:
        """The teacher text before and after the crop image in the chosen `teacher_view` layout."""
        if self.teacher_view == "crop_only":
            return self.teacher_crop_only_prefix, self.teacher_crop_only_suffix
        return self.teacher_crop_prefix, self.teacher_crop_suffix

    @property
    def gate_settings(self) -> dict[str, Any]:
        """The gate's settings as [`~vzero_trl.gating.evidence_weights`] takes them (beside the scores and `G`)."""
        return dict(
            alpha=self.evidence_alpha,
            w_min=self.evidence_weight_min,
            w_max=self.evidence_weight_max,
            eps=self.evidence_eps,
            std=self.evidence_std,
        )

    @property
    def loss_settings(self) -> dict[str, Any]:
        """The objective's settings as [`~vzero_trl.losses.gated_distillation_loss`] takes them."""
        return dict(
            loss_type=self.loss_type,
            aggregation=self.loss_aggregation,
            log_ratio_clip=self.log_ratio_clip,
            beta=self.beta,
            top_k=self.loss_top_k,
            importance_clip=self.rollout_importance_clip,
        )

    @property
    def reentrant_checkpointing(self) -> bool:
        """Whether activation checkpointing is on and reentrant (the student's shared-prefix forward needs it off)."""
        kwargs = (self.activation_checkpointing_kwargs, self.gradient_checkpointing_kwargs)
        return bool(self.activation_checkpointing) and any((k or {}).get("use_reentrant") for k in kwargs)

    def __post_init__(self):
        # The numbers are checked first, as the user gave them, so that no library trips over a NaN before its option
        # is named.
        self._check_numbers()
        super().__post_init__()
        check_range("pad_to_multiple_of", self.pad_to_multiple_of, 1, integer=True, optional=True)  # "auto" resolved
        if self.num_generations_eval is None:
            self.num_generations_eval = self.num_generations
        _check_choice("evidence_std", self.evidence_std, ("population", "sample"))
        _check_choice("loss_type", self.loss_type, ("sampled_token", "full_reverse_kl"))
        _check_choice("loss_aggregation", self.loss_aggregation, ("sequence", "token"))
        _check_choice("teacher_view", self.teacher_view, ("full_and_crop", "crop_only"))
        _check_choice("teacher_source", self.teacher_source, ("external", "frozen", "ema"))
        if self.offload_teacher and (self.teacher_source != "external" or self.loss_type != "sampled_token"):
            raise ValueError(
                f"`offload_teacher` applies to an external teacher with the sampled-token loss, got "
                f"teacher_source={self.teacher_source!r} and loss_type={self.loss_type!r}: a self-teacher shares the "
                "student's device, and the full-vocabulary loss reads the teacher's output layer in every micro-batch."
            )
        self._check_teacher_server()
        # "naive" is the old name of "per_sequence": accepted, and stored under the new name.
        self.teacher_scoring = "per_sequence" if self.teacher_scoring == "naive" else self.teacher_scoring
        self.student_scoring = "per_sequence" if self.student_scoring == "naive" else self.student_scoring
        _check_choice("teacher_scoring", self.teacher_scoring, ("shared_prefix", "per_sequence"))
        _check_choice("student_scoring", self.student_scoring, ("shared_prefix", "per_sequence"))

        if self.evidence_alpha > 0 and min(self.num_generations, self.num_generations_eval) < 2:
            raise ValueError(
                f"Evidence gating ranks the rollouts of a prompt against each other, so it needs at least 2 per prompt, "
                f"got num_generations={self.num_generations} and num_generations_eval={self.num_generations_eval}. "
                "Raise them, or set `evidence_alpha=0` for plain on-policy distillation."
            )
        _check_choice("evidence_alarm", self.evidence_alarm, ("warn", "error", "off"))
        if self.gate_probe_dataset is not None and self.evidence_alpha == 0:
            raise ValueError(
                f"The gate probe (`gate_probe_dataset` {self.gate_probe_dataset!r}) measures the evidence gate, and "
                "`evidence_alpha=0` has none. Set `evidence_alpha` > 0, or unset `gate_probe_dataset`."
            )
        if self.log_ratio_clip is not None and self.loss_type != "sampled_token":
            raise ValueError(
                f"`log_ratio_clip` ({self.log_ratio_clip}) only applies to loss_type='sampled_token', got "
                f"loss_type={self.loss_type!r}. Unset it, or use the sampled-token loss."
            )
        if self.beta != 1.0 and self.loss_type != "full_reverse_kl":
            raise ValueError(
                f"The sampled-token loss estimates the reverse KL, so `beta` must be 1.0 with it, got {self.beta}. Set "
                "`loss_type='full_reverse_kl'` for the generalized JSD, or remove `beta` from the config."
            )
        if self.rollout_importance_clip is not None and not self.use_vllm:
            raise ValueError(
                f"`rollout_importance_clip` corrects vLLM rollouts (`use_vllm=True`), got "
                f"rollout_importance_clip={self.rollout_importance_clip} and use_vllm={self.use_vllm}: without vLLM the "
                "trainer samples the rollouts itself."
            )
        if self.loss_top_k is not None and self.loss_type != "full_reverse_kl":
            raise ValueError(
                f"`loss_top_k` needs loss_type='full_reverse_kl', got "
                f"loss_top_k={self.loss_top_k} and loss_type={self.loss_type!r}."
            )
        if self.temperature != 1.0:
            raise ValueError(
                f"V-Zero samples and scores rollouts at temperature 1, so `temperature` must be 1.0, got "
                f"{self.temperature}: the sampled-token loss (eq. 24) estimates the reverse KL of the distribution the "
                "rollouts were sampled from, and the paper distils the student's own distribution. Remove "
                "`temperature` from the config."
            )
        if not self.crop_column or not self.negative_crop_column:
            raise ValueError(
                f"`crop_column` ({self.crop_column!r}) and `negative_crop_column` ({self.negative_crop_column!r}) must "
                "name dataset columns."
            )
        if self.evidence_alpha > 0 and self.crop_column == self.negative_crop_column:
            raise ValueError(
                f"`crop_column` and `negative_crop_column` are both {self.crop_column!r}: the gate would compare a view "
                "with itself and every weight would be 1. Point `negative_crop_column` at the negative crops."
            )
        if self.auto_find_batch_size:
            raise ValueError(
                "`auto_find_batch_size` is not supported: it shrinks the batch on out-of-memory errors, which would "
                "split prompt groups. Set it to False and lower `per_device_train_batch_size` (keeping the generation "
                "batch a multiple of `num_generations`)."
            )

        generation_batch_size = self.per_device_train_batch_size * self.world_size * self.gradient_accumulation_steps
        if generation_batch_size % self.num_generations != 0:
            raise ValueError(
                f"The generation batch, per_device_train_batch_size ({self.per_device_train_batch_size}) x "
                f"num_processes ({self.world_size}) x gradient_accumulation_steps ({self.gradient_accumulation_steps})"
                f" = {generation_batch_size} rollouts, must be a multiple of num_generations ({self.num_generations}) "
                "so that every prompt contributes all of its rollouts to one optimizer step. Change one of them."
            )
        eval_batch_size = self.per_device_eval_batch_size * self.world_size
        if self.eval_strategy != "no" and eval_batch_size % self.num_generations_eval != 0:
            raise ValueError(
                f"The evaluation batch, per_device_eval_batch_size ({self.per_device_eval_batch_size}) x "
                f"num_processes ({self.world_size}) = {eval_batch_size}, must be a multiple of num_generations_eval "
                f"({self.num_generations_eval}). Change one of them."
            )

    def _check_teacher_server(self) -> None:
        self.teacher_server_urls = list(self.teacher_server_urls or []) or None
        if self.teacher_server_urls is None:
            return
        for url in self.teacher_server_urls:
            if not (
                isinstance(url, str) and url.startswith(("http://", "https://")) and len(url.split("//", 1)[1]) > 0
            ):
                raise ValueError(
                    f"`teacher_server_urls` holds {url!r}: each must be a server's base URL such as "
                    "'http://10.0.0.2:8000'."
                )
        if self.teacher_source != "external":
            raise ValueError(
                f"`teacher_server_urls` serves an external teacher, got teacher_source={self.teacher_source!r}: a "
                "self-teacher is built from the student. Unset `teacher_server_urls` or set "
                "`teacher_source='external'`."
            )
        if self.loss_type != "sampled_token":
            raise ValueError(
                f"A served teacher (`teacher_server_urls`) returns the log-probabilities of the sampled tokens only, not "
                f"the whole distribution that loss_type={self.loss_type!r} (full vocabulary, or its top-k with "
                f"`loss_top_k`) needs. Use `loss_type='sampled_token'` (the paper's loss), or a local teacher."
            )
        if self.offload_teacher:
            raise ValueError(
                "`offload_teacher` moves a local teacher's weights; a served teacher (`teacher_server_urls`) has none "
                "in training. Unset one of them."
            )

    def _check_numbers(self) -> None:
        """Every numeric field of V-Zero and of `DistillationConfig` is a finite number in its range (NaN fails)."""
        gate = (
            "The paper uses 0 and 2: a rollout as grounded as its siblings keeps weight 1, and no weight is negative."
        )
        check_range("num_generations", self.num_generations, 1, integer=True)
        check_range("num_generations_eval", self.num_generations_eval, 1, integer=True, optional=True)
        check_range("teacher_ema_rate", self.teacher_ema_rate, 0, 1, open_low=True, fix="Vision-OPD uses 0.05.")
        check_range(
            "evidence_alpha",
            self.evidence_alpha,
            0,
            fix="Use 1.0 (paper), 0.5 (official code) or 0 to switch gating off.",
        )
        check_range("evidence_gamma", self.evidence_gamma, 0, fix="1.0 gives the plain gap of eq. 18.")
        check_range("evidence_weight_min", self.evidence_weight_min, 0, 1, fix=gate)
        check_range("evidence_weight_max", self.evidence_weight_max, 1, fix=gate)
        check_range("evidence_eps", self.evidence_eps, 0, open_low=True, fix="The paper uses 1e-6.")
        beta = "1 is the reverse KL, below 1 the generalized JSD; the forward KL (0) is not supported."
        check_range("beta", self.beta, 0, 1, open_low=True, fix=beta)
        clip = dict(open_low=True, optional=True)
        check_range("log_ratio_clip", self.log_ratio_clip, 0, **clip, fix="The official code uses 10; or unset it.")
        check_range("rollout_importance_clip", self.rollout_importance_clip, 0, **clip, fix="Vision-OPD uses 2.")
        count = dict(integer=True, optional=True)
        check_range("loss_top_k", self.loss_top_k, 1, **count, fix="Vision-OPD uses 100.")
        check_range("teacher_batch_size", self.teacher_batch_size, 1, **count)
        check_range("max_completion_length", self.max_completion_length, 1, **count)
        check_range("vllm_max_model_length", self.vllm_max_model_length, 1, **count)
        check_range("max_tool_calling_iterations", self.max_tool_calling_iterations, 0, **count)
        check_range("num_completions_to_print", self.num_completions_to_print, 0, **count)
        check_range("min_p", self.min_p, 0, 1, optional=True)
        check_range("top_p", self.top_p, 0, 1, open_low=True)
        check_range("top_k", self.top_k, 0, integer=True, fix="0 samples from the whole vocabulary.")
        check_range("repetition_penalty", self.repetition_penalty, 0, open_low=True, fix="1.0 leaves it off.")
        check_range("vllm_server_port", self.vllm_server_port, 1, 65535, integer=True)
        check_range("vllm_group_port", self.vllm_group_port, 1, 65535, integer=True)
        check_range("vllm_server_timeout", self.vllm_server_timeout, 0, open_low=True)
        check_range("vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0, 1, open_low=True)
        check_range("vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, 1, integer=True)
        check_range("teacher_server_timeout", self.teacher_server_timeout, 0, open_low=True, fix="Seconds.")
        check_range("teacher_server_backoff", self.teacher_server_backoff, 0, fix="Seconds before the first retry.")
        check_range("teacher_server_retries", self.teacher_server_retries, 0, integer=True)
        check_range("teacher_server_concurrency", self.teacher_server_concurrency, 1, integer=True)
        check_range("evidence_alarm_steps", self.evidence_alarm_steps, 1, integer=True)
        check_range("evidence_alarm_every", self.evidence_alarm_every, 1, integer=True)
        check_range("gate_probe_steps", self.gate_probe_steps, 1, integer=True)
        self._check_training_numbers()

    def _check_training_numbers(self) -> None:
        """The numeric fields inherited from `TrainingArguments`, which checks few of them (NaN passes its checks)."""
        count, unset = dict(integer=True), dict(integer=True, optional=True)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            check_range(name, getattr(self, name), 1, **count)
        check_range("max_steps", self.max_steps, -1, **count, fix="-1 trains for `num_train_epochs` instead.")
        if self.max_steps == 0:
            raise ValueError("`max_steps` must be >= 1, or -1 to train for `num_train_epochs`, got 0.")
        check_range("num_train_epochs", self.num_train_epochs, 0, open_low=True)
        check_range("learning_rate", self.learning_rate, 0, fix="The paper uses 1e-6.")
        check_range("weight_decay", self.weight_decay, 0)
        check_range("adam_beta1", self.adam_beta1, 0, 1, open_high=True)
        check_range("adam_beta2", self.adam_beta2, 0, 1, open_high=True)
        check_range("adam_epsilon", self.adam_epsilon, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0, fix="0 turns clipping off.")
        check_range("label_smoothing_factor", self.label_smoothing_factor, 0, 1)
        check_range("neftune_noise_alpha", self.neftune_noise_alpha, 0, open_low=True, optional=True)
        steps = "Below 1 it is a fraction of the training steps, from 1 on a number of steps."
        check_range("warmup_steps", self.warmup_steps, 0, fix=steps)
        for name in ("logging_steps", "save_steps"):
            check_range(name, getattr(self, name), 0, open_low=True, fix=steps)
        check_range("eval_steps", self.eval_steps, 0, open_low=True, optional=True, fix=steps)
        check_range("eval_delay", self.eval_delay, 0)
        check_range("eval_accumulation_steps", self.eval_accumulation_steps, 1, **unset)
        check_range("torch_empty_cache_steps", self.torch_empty_cache_steps, 1, **unset)
        check_range("save_total_limit", self.save_total_limit, 1, **unset, fix="Unset it to keep every checkpoint.")
        seed = "Seeds are below 2**32 (numpy's limit)."
        check_range("seed", self.seed, 0, 2**32 - 1, **count, fix=seed)
        check_range("data_seed", self.data_seed, 0, 2**32 - 1, **unset, fix=seed)
        check_range("dataloader_num_workers", self.dataloader_num_workers, 0, **count)
        check_range("dataloader_prefetch_factor", self.dataloader_prefetch_factor, 1, **unset)
        check_range("ddp_bucket_cap_mb", self.ddp_bucket_cap_mb, 1, **unset)
        check_range("ddp_timeout", self.ddp_timeout, 1, **count)
        check_range("local_rank", self.local_rank, -1, **count, fix="The launcher sets it; leave it out.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}.")
