"""Teacher replay: the teacher's log-probabilities of the student's rollouts under each evidence view.

Rows go in, grouped as the sampler laid them out (each prompt's `G` rollouts are contiguous, see
[`vzero_trl.gating.rollout_groups`]); each group's teacher views are built once from its first row
([`teacher_views`]); out come per-token teacher log-probabilities `(B, C)` per view, and the first view's hidden states
`(B, C, H_t)` for the full-vocabulary loss. Two strategies sit behind one signature:

- `"shared_prefix"` ([`score_shared_prefix`]): each group's prompt runs through the teacher once and both views and all
  `G` rollouts continue from it (`vzero_trl.shared_prefix`; Qwen3.5 teachers);
- `"per_sequence"` ([`score_per_sequence`]): every rollout is its own left-padded `[teacher prompt | completion]`
  sequence, `rows_per_forward` rows per forward (any teacher; the reference the shared path is tested against).

Nothing here compares ids or pixels: the groups are data, handed in by the caller.
"""

from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, ProcessorMixin

from .scoring import completion_logps
from .shared_prefix import score_views_shared
from .views import student_messages, teacher_messages


Strategy = Literal["shared_prefix", "per_sequence"]
Layout = Literal["full_and_crop", "crop_only"]
Scored = list[tuple[torch.Tensor, torch.Tensor | None]]

# Model inputs that the processor returns besides the token ids and that the backbone accepts.
MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
# Per-token type ids are aligned with the prompt, so they are extended with zeros over the completion.
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")


def _call(function: Callable, *args, **kwargs):
    return function(*args, **kwargs)


def teacher_views(
    rows: list[dict[str, Any]],
    groups: list[slice],
    crop_columns: list[str],
    crop_prefix: str,
    crop_suffix: str,
    layout: Layout = "full_and_crop",
) -> list[list[list[dict[str, Any]]]]:
    """
    The teacher's messages, built once per group from its first row: `views[v][k]` is group `k`'s prompt with the crop
    of `crop_columns[v]` appended (paper Fig. 4) or in place of the full image (`layout="crop_only"`). Every row of a
    group is a copy of one dataset example.
    """
    prompts = [student_messages(rows[group.start]) for group in groups]
    return [
        [
            teacher_messages(prompt, rows[group.start][column], crop_prefix, crop_suffix, layout)
            for prompt, group in zip(prompts, groups, strict=True)
        ]
        for column in crop_columns
    ]


def tokenize(
    processor: ProcessorMixin, messages: list[list[dict[str, Any]]], chat_template_kwargs: dict, device
) -> dict[str, torch.Tensor]:
    """One processor call for a batch of conversations: left padded, ids and pixels that agree with each other."""
    return processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
        **chat_template_kwargs,
    ).to(device)


def completion_hidden_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_completion_tokens: int,
    **multimodal: torch.Tensor,
) -> torch.Tensor:
    """
    Backbone hidden states `(B, C, H)` of `[prompt | completion]` sequences at the positions that predict the last `C`
    tokens (position `k` predicts completion token `k`). Mirrors `trl.DistillationTrainer._get_last_hidden_state`
    (TRL 1.16) for a model that is not a PEFT model.
    """
    output = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **multimodal)
    return output.last_hidden_state[:, -num_completion_tokens - 1 : -1]


def score_per_sequence(
    teacher: PreTrainedModel,
    processor: ProcessorMixin,
    views: list[list[list[dict[str, Any]]]],
    groups: list[slice],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    chat_template_kwargs: dict,
    temperature: float,
    rows_per_forward: int,
    keep_hidden: bool,
    forward: Callable,
) -> Scored:
    """
    Every rollout scored as its own sequence. Each chunk of `rows_per_forward` rows is tokenised with one processor
    call (left padded, so `[teacher prompt | completion]` puts every completion token at the same position as in the
    student's sequence, counted from the right) and never holds more than its own pixels. Arguments as
    [`replay_teacher`].
    """
    row_group = [k for k, group in enumerate(groups) for _ in range(group.start, group.stop)]
    num_completion_tokens = completion_ids.size(1)
    lm_head = teacher.get_output_embeddings()
    results = []
    for v, view in enumerate(views):
        logps, hidden = [], []
        for start in range(0, len(row_group), rows_per_forward):
            rows = slice(start, start + rows_per_forward)
            inputs = tokenize(
                processor, [view[k] for k in row_group[rows]], chat_template_kwargs, completion_ids.device
            )
            ids, mask = completion_ids[rows], completion_mask[rows]
            extra = {key: inputs[key] for key in MULTIMODAL_KEYS if key in inputs}
            for key in TOKEN_TYPE_KEYS:
                if key in extra:
                    extra[key] = torch.cat([extra[key], extra[key].new_zeros(ids.shape)], dim=1)
            hidden_states = forward(
                completion_hidden_states,
                teacher,
                torch.cat([inputs["input_ids"], ids], dim=1),
                torch.cat([inputs["attention_mask"], mask], dim=1),
                num_completion_tokens,
                **extra,
            )
            chunk_logps, _ = completion_logps(hidden_states, lm_head, ids, mask, temperature)
            logps.append(chunk_logps)
            if keep_hidden and v == 0:
                hidden.append(hidden_states)
        results.append((torch.cat(logps), torch.cat(hidden) if hidden else None))
    return results


def score_shared_prefix(
    teacher: PreTrainedModel,
    processor: ProcessorMixin,
    views: list[list[list[dict[str, Any]]]],
    groups: list[slice],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    chat_template_kwargs: dict,
    temperature: float,
    rows_per_forward: int,
    keep_hidden: bool,
    forward: Callable,
) -> Scored:
    """
    Each group's rollouts scored under every view with [`~vzero_trl.shared_prefix.score_views_shared`]: the group's
    prompt runs once, both views and all rollouts continue from it. Arguments as [`replay_teacher`].
    """
    results = [([], []) for _ in views]
    for k, group in enumerate(groups):
        inputs = [tokenize(processor, [view[k]], chat_template_kwargs, completion_ids.device) for view in views]
        scored = forward(
            score_views_shared,
            teacher.base_model,
            teacher.get_output_embeddings(),
            inputs,
            completion_ids[group],
            completion_mask[group],
            image_token_id=teacher.config.image_token_id,
            temperature=temperature,
            rows_per_forward=rows_per_forward,
            keep_hidden=keep_hidden,
        )
        for (logps, hidden), (all_logps, all_hidden) in zip(scored, results, strict=True):
            all_logps.append(logps)
            all_hidden.append(hidden)
    return [
        (torch.cat(logps), torch.cat(hidden) if keep_hidden and v == 0 else None)
        for v, (logps, hidden) in enumerate(results)
    ]


@torch.no_grad()
def replay_teacher(
    teacher: PreTrainedModel,
    processor: ProcessorMixin,
    rows: list[dict[str, Any]],
    groups: list[slice],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    crop_columns: list[str],
    *,
    strategy: Strategy,
    crop_prefix: str,
    crop_suffix: str,
    layout: Layout = "full_and_crop",
    chat_template_kwargs: dict | None = None,
    temperature: float = 1.0,
    rows_per_forward: int | None = None,
    keep_hidden: bool = False,
    forward: Callable | None = None,
) -> Scored:
    """
    Teacher log-probabilities of the rollouts under the view of each crop column.

    Args:
        teacher ([`~transformers.PreTrainedModel`]):
            The unwrapped vision-language teacher.
        processor ([`~transformers.ProcessorMixin`]):
            The processor shared by student and teacher, padding on the left.
        rows (`list[dict]`):
            The dataset rows of the rollouts, one per rollout, `B` in all.
        groups (`list[slice]`):
            Which rows are rollouts of one prompt: contiguous runs covering `0..B` in order (from
            [`~vzero_trl.gating.group_slices`]). A group's teacher prompt is built from its first row.
        completion_ids (`torch.Tensor`):
            The rollouts, `(B, C)`, right-padded.
        completion_mask (`torch.Tensor`):
            `(B, C)`.
        crop_columns (`list[str]`):
            One evidence column per view, e.g. `["crop", "negative_crop"]`; every view but the last must end where
            the others do up to its crop image (true of [`~vzero_trl.views.teacher_messages`]).
        strategy (`str`):
            `"shared_prefix"` or `"per_sequence"`, see the module docstring.
        crop_prefix (`str`), crop_suffix (`str`):
            Text around the crop image (paper Fig. 4).
        layout (`str`, *optional*, defaults to `"full_and_crop"`):
            `"full_and_crop"` (crop appended after the question) or `"crop_only"` (crop in place of the full image),
            see [`~vzero_trl.views.teacher_messages`].
        chat_template_kwargs (`dict`, *optional*):
            Passed to the chat template, as for the student's prompt.
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature.
        rows_per_forward (`int`, *optional*):
            Rollouts per teacher forward (memory bound). Defaults to all `B` at once.
        keep_hidden (`bool`, *optional*, defaults to `False`):
            Also return the first view's hidden states `(B, C, H_t)`.
        forward (`Callable`, *optional*):
            Runs a function of the teacher, `forward(function, *args, **kwargs)`: the trainer routes it through the
            teacher's DeepSpeed/FSDP wrapper. Defaults to calling `function` directly.

    Returns:
        `list[tuple[torch.Tensor, torch.Tensor | None]]`: per view, the log-probabilities `(B, C)` in float32 (0 where
        masked) and the hidden states (first view with `keep_hidden`) or `None`.
    """
    if [row for group in groups for row in range(group.start, group.stop)] != list(range(completion_ids.size(0))):
        raise ValueError(f"`groups` must cover the {completion_ids.size(0)} rows in order, got {groups}.")
    views = teacher_views(rows, groups, crop_columns, crop_prefix, crop_suffix, layout)
    score = score_shared_prefix if strategy == "shared_prefix" else score_per_sequence
    return score(
        teacher,
        processor,
        views,
        groups,
        completion_ids,
        completion_mask,
        chat_template_kwargs=chat_template_kwargs or {},
        temperature=temperature,
        rows_per_forward=rows_per_forward or completion_ids.size(0),
        keep_hidden=keep_hidden,
        forward=forward or _call,
    )
