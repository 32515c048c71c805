"""Teacher scoring and student forwards that process each prompt's shared prefix once.

Per prompt, the teacher scores `2 x G` sequences (two evidence views, `G` rollouts) that share one long prefix: the full
image, the question and the start of the crop sentence. Scored one by one they cost `2G (P + K + C)` tokens and `2G`
encodings of the full image; as a tree they cost `P + 2K + 2GC` tokens and one encoding:

    prefix (full image, question, "...from the original image: ")        run once, into a cache
      +- view + : crop image, rest of the prompt                          cache copied, run once per view
      |    +- rollout 1 ... rollout G                                      cache forked G ways, completions batched
      +- view - : negative crop image, rest of the prompt
           +- rollout 1 ... rollout G

Qwen3.5 mixes Gated-DeltaNet (linear attention) and full-attention layers, so masking tricks that share a prefix inside
one packed row do not work: the recurrent layers would scan across rollouts. Forking the model's cache does: its
attention keys/values and its recurrent and convolution states are all carried forward. The teacher needs no gradient,
so the in-place cache updates are harmless. Multimodal RoPE positions are computed once per view for the whole prompt
(`get_rope_index`) and sliced for each segment; completion tokens continue as text positions.

The result equals scoring each sequence alone, up to float rounding (tests pin it at 1e-5 in float32).

The student's training forward (`student_hidden_shared`) is the same tree with one view and gradients: the prompt runs
once, its cache is forked `G` ways and the rollouts continue from it, so the backward sums every rollout's gradient
into the one prompt pass. That needs cache layers whose updates stay on the autograd graph
(`DifferentiableLinearAttentionLayer`) and, under activation checkpointing, replays that see the cache as it was
(`replayable_checkpointing`). `student_hidden_grouped` runs it over a micro-batch: it unpads each group's prompt and
finds each row's images, the groups handed in as data (`vzero_trl.gating.group_slices`).

The teacher side is called through `vzero_trl.replay`, which builds the views and picks the strategy.
"""

import copy
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from transformers.cache_utils import DynamicCache, LinearAttentionLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from .scoring import completion_logps


# Model types verified to give the same log-probabilities as scoring each sequence alone (Qwen3-VL and the MoE variants
# share the interface but are not covered by the tests yet: use `teacher_scoring="per_sequence"` for them).
SUPPORTED_MODEL_TYPES = ("qwen3_5",)


def unsupported_reason(model_type: str, reentrant_checkpointing: bool = False) -> str | None:
    """
    Why the shared-prefix path cannot run a model, or `None` when it can: the model type must be verified, and a
    training forward (the student's) needs non-reentrant activation checkpointing, see [`replayable_checkpointing`].
    """
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"it is verified for {list(SUPPORTED_MODEL_TYPES)} models, not {model_type!r}"
    if reentrant_checkpointing:
        return (
            "it needs non-reentrant activation checkpointing (set `use_reentrant: false` in "
            "`activation_checkpointing_kwargs`; TRL forces reentrant for PEFT with DeepSpeed ZeRO-3)"
        )
    return None


def check_teacher_scoring(teacher_scoring: str, model_type: str) -> None:
    """Raise if `teacher_scoring="shared_prefix"` asks the shared-prefix path to score a teacher it cannot run."""
    reason = unsupported_reason(model_type)
    if teacher_scoring == "shared_prefix" and reason is not None:
        raise ValueError(
            f"teacher_scoring='shared_prefix' cannot score this teacher: {reason}. Set "
            "`teacher_scoring='per_sequence'` to score every rollout as its own sequence."
        )


def image_runs(input_ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """
    `(start, end)` of each contiguous run of image placeholder tokens in a 1-D sequence of ids, in order: one run per
    image.
    """
    positions = (input_ids == image_token_id).nonzero().flatten().tolist()
    runs = []
    for position in positions:
        if runs and runs[-1][1] == position:
            runs[-1] = (runs[-1][0], position + 1)
        else:
            runs.append((position, position + 1))
    return runs


def rope_positions(backbone: torch.nn.Module, prompt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Multimodal RoPE positions `(3, 1, P)` of one unpadded prompt, and the offset `(1, 1)` that continues them as text
    positions after it: position of text token `P + k` is `P + k + offset`.
    """
    return backbone.get_rope_index(
        input_ids=prompt["input_ids"],
        mm_token_type_ids=prompt["mm_token_type_ids"],
        image_grid_thw=prompt["image_grid_thw"],
        attention_mask=torch.ones_like(prompt["input_ids"]),
    )


@torch.no_grad()
def score_views_shared(
    backbone: torch.nn.Module,
    lm_head: torch.nn.Module,
    views: list[dict[str, torch.Tensor]],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    image_token_id: int,
    temperature: float = 1.0,
    rows_per_forward: int | None = None,
    keep_hidden: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """
    Teacher log-probabilities of `G` rollouts of one prompt under each of its views, sharing the common prefix.

    Args:
        backbone (`torch.nn.Module`):
            The teacher's multimodal backbone (`model.base_model`: image encoder + decoder, no `lm_head`).
        lm_head (`torch.nn.Module`):
            The teacher's output projection.
        views (`list[dict]`):
            One processor output per view for this prompt (batch of 1, no padding): `input_ids`, `pixel_values`,
            `image_grid_thw`, `mm_token_type_ids`. The views must agree on every token before their last image (the
            crop), which is where they may differ; a crop-only view's last image is its only one.
        completion_ids (`torch.Tensor`):
            The prompt's rollouts, shape `(G, C)`, right-padded.
        completion_mask (`torch.Tensor`):
            Shape `(G, C)`.
        image_token_id (`int`):
            The image placeholder token.
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature.
        rows_per_forward (`int`, *optional*):
            Rollouts per completion forward (memory bound); all `G` at once by default.
        keep_hidden (`bool`, *optional*, defaults to `False`):
            Also return the hidden states aligned with the completion, `(G, C, H)`.

    Returns:
        `list[tuple[torch.Tensor, torch.Tensor | None]]`: per view, the log-probabilities `(G, C)` (0 where masked)
        and the hidden states or `None`.
    """
    device = completion_ids.device
    num_rows, num_tokens = completion_ids.shape
    rows_per_forward = rows_per_forward or num_rows
    runs = [image_runs(view["input_ids"][0], image_token_id) for view in views]
    prefix_length = min(view_runs[-1][0] for view_runs in runs)
    first = views[0]
    if any(
        not torch.equal(view["input_ids"][0, :prefix_length], first["input_ids"][0, :prefix_length]) for view in views
    ):
        raise ValueError("The teacher views must share every token before their crop image.")
    prefix_images = sum(end <= prefix_length for _, end in runs[0])
    prefix_pixels = int(first["image_grid_thw"][:prefix_images].prod(-1).sum())

    positions = [rope_positions(backbone, view) for view in views]

    # The prefix: full image, question, and the crop sentence up to the crop image; its image is encoded once here.
    # Crop-only views (the crop in the full image's place) share no image: their prefix is the chat template's opening.
    cache = DynamicCache(config=backbone.config)
    backbone(
        input_ids=first["input_ids"][:, :prefix_length],
        attention_mask=torch.ones(1, prefix_length, dtype=torch.long, device=device),
        position_ids=positions[0][0][..., :prefix_length],
        pixel_values=first["pixel_values"][:prefix_pixels] if prefix_images else None,
        image_grid_thw=first["image_grid_thw"][:prefix_images] if prefix_images else None,
        mm_token_type_ids=first["mm_token_type_ids"][:, :prefix_length],
        cache=cache,
        use_cache=True,
    )

    results = []
    for view, (position_ids, delta) in zip(views, positions, strict=True):
        length = view["input_ids"].size(1)
        view_cache = copy.deepcopy(cache)  # the segments update the cache in place
        last = backbone(
            input_ids=view["input_ids"][:, prefix_length:],
            attention_mask=torch.ones(1, length, dtype=torch.long, device=device),
            position_ids=position_ids[..., prefix_length:],
            pixel_values=view["pixel_values"][prefix_pixels:],
            image_grid_thw=view["image_grid_thw"][prefix_images:],
            mm_token_type_ids=view["mm_token_type_ids"][:, prefix_length:],
            cache=view_cache,
            use_cache=True,
        ).last_hidden_state[:, -1:]  # predicts the first completion token
        logps, hidden = [], []
        for start in range(0, num_rows, rows_per_forward):
            rows = slice(start, start + rows_per_forward)
            ids, mask = completion_ids[rows], completion_mask[rows]
            states = last.expand(ids.size(0), 1, -1)
            if num_tokens > 1:  # tokens 0..C-2 predict tokens 1..C-1; the last token predicts nothing we score
                fork = copy.deepcopy(view_cache)
                fork.reorder_cache(torch.zeros(ids.size(0), dtype=torch.long, device=device))
                text_positions = torch.arange(length, length + num_tokens - 1, device=device) + delta[0].to(device)
                out = backbone(
                    input_ids=ids[:, :-1],
                    attention_mask=torch.cat([torch.ones_like(ids[:, :1]).expand(-1, length), mask[:, :-1]], dim=1),
                    position_ids=text_positions.view(1, 1, -1).expand(3, ids.size(0), -1),
                    cache=fork,
                    use_cache=True,
                )
                states = torch.cat([states, out.last_hidden_state], dim=1)
            chunk_logps, _ = completion_logps(states, lm_head, ids, mask, temperature)
            logps.append(chunk_logps)
            if keep_hidden:
                hidden.append(states)
        results.append((torch.cat(logps), torch.cat(hidden) if keep_hidden else None))
    return results


class DifferentiableLinearAttentionLayer(LinearAttentionLayer):
    """
    A linear-attention cache layer that assigns its new convolution and recurrent states instead of copying them into
    fixed buffers. The parent copies in place (to keep static addresses for CUDA graphs), which breaks the backward of
    a forward that continued from the cache; assigning keeps both forwards differentiable.
    """

    def update_conv_state(self, conv_states, state_idx=0, conv_kernel_size=None, **kwargs):
        if not self.is_conv_states_initialized[state_idx]:
            self.lazy_initialization(conv_states=conv_states, state_idx=state_idx, conv_kernel_size=conv_kernel_size)
        kernel = self.conv_kernel_size[state_idx]
        if self.has_previous_state[state_idx]:
            full = torch.cat([self.conv_states[state_idx], conv_states], dim=-1)
        else:  # the first segment: left-pad to the kernel, as the parent does
            full = torch.nn.functional.pad(conv_states, (max(0, kernel - conv_states.shape[-1]), 0))
            self.has_previous_state[state_idx] = True
        self.conv_states[state_idx] = full[..., -kernel:]
        return full

    def update_recurrent_state(self, recurrent_states, state_idx=0, **kwargs):
        self.recurrent_states[state_idx] = recurrent_states
        self.is_recurrent_states_initialized[state_idx] = True
        return recurrent_states


def differentiable_cache(config) -> DynamicCache:
    """A `DynamicCache` for `config` whose linear-attention layers stay differentiable across segments."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer) is LinearAttentionLayer:
            layer.__class__ = DifferentiableLinearAttentionLayer  # same state, assignment instead of in-place copies
    return cache


def _cache_state(cache: DynamicCache) -> list[dict]:
    # Every cache update assigns new tensors (see `DifferentiableLinearAttentionLayer`), so references are a snapshot.
    return [{key: copy.copy(value) for key, value in vars(layer).items()} for layer in cache.layers]


def _set_cache_state(cache: DynamicCache, state: list[dict]) -> None:
    for layer, saved in zip(cache.layers, state, strict=True):
        vars(layer).clear()
        vars(layer).update({key: copy.copy(value) for key, value in saved.items()})


@contextmanager
def replayable_checkpointing(backbone: torch.nn.Module, cache: DynamicCache):
    """
    Keep activation checkpointing on for forwards that read and write `cache`.

    Checkpointed layers normally drop the cache: their replay in the backward would update it a second time, and read
    the states that later segments left in it. Here every checkpointed call snapshots the cache when it runs, and its
    replay runs against that snapshot, then puts the live state back, so the replay computes exactly what the forward
    did. It adds a `context_fn` to the model's own checkpointing function (its other settings, CPU offload included,
    are kept), so it needs non-reentrant checkpointing, the transformers default. Layers without checkpointing are
    left alone.
    """

    def context_fn():
        snapshot = _cache_state(cache)

        @contextmanager
        def replay():
            live = _cache_state(cache)
            _set_cache_state(cache, snapshot)
            try:
                yield
            finally:
                _set_cache_state(cache, live)

        return nullcontext(), replay()

    layers = [m for m in backbone.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    saved = [(vars(layer).get("_can_checkpoint_with_cache"), layer._gradient_checkpointing_func) for layer in layers]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
        layer._gradient_checkpointing_func = partial(layer._gradient_checkpointing_func, context_fn=context_fn)
    try:
        yield
    finally:
        for layer, (can_checkpoint, function) in zip(layers, saved, strict=True):
            if can_checkpoint is None:
                del layer._can_checkpoint_with_cache  # back to the class attribute
            else:
                layer._can_checkpoint_with_cache = can_checkpoint
            layer._gradient_checkpointing_func = function


def student_hidden_shared(
    backbone: torch.nn.Module,
    prompt: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """
    The student's hidden states at the completion positions of `G` rollouts of one prompt, with the prompt (image and
    question) run once and the rollouts continuing from a `G`-way fork of its state; gradients flow into the shared
    part. Equal to running each `[prompt | completion]` alone, up to float rounding.

    Args:
        backbone (`torch.nn.Module`):
            The student's multimodal backbone (no `lm_head`).
        prompt (`dict`):
            One unpadded prompt: `input_ids` `(1, P)`, `pixel_values`, `image_grid_thw`, `mm_token_type_ids` `(1, P)`.
        completion_ids (`torch.Tensor`):
            Rollouts `(G, C)`, right-padded.
        completion_mask (`torch.Tensor`):
            `(G, C)`.

    Returns:
        `torch.Tensor`: hidden states `(G, C, H)` aligned with the completion tokens (position `k` predicts token `k`).
    """
    device = completion_ids.device
    num_rows, num_tokens = completion_ids.shape
    length = prompt["input_ids"].size(1)
    ones = torch.ones_like(prompt["input_ids"])
    position_ids, delta = rope_positions(backbone, prompt)
    cache = differentiable_cache(backbone.config)
    with replayable_checkpointing(backbone, cache):
        last = backbone(
            input_ids=prompt["input_ids"],
            attention_mask=ones,
            position_ids=position_ids,
            pixel_values=prompt["pixel_values"],
            image_grid_thw=prompt["image_grid_thw"],
            mm_token_type_ids=prompt["mm_token_type_ids"],
            cache=cache,
            use_cache=True,
        ).last_hidden_state[:, -1:]
        states = last.expand(num_rows, 1, -1)
        if num_tokens == 1:
            return states
        cache.reorder_cache(torch.zeros(num_rows, dtype=torch.long, device=device))
        text_positions = torch.arange(length, length + num_tokens - 1, device=device) + delta[0].to(device)
        out = backbone(
            input_ids=completion_ids[:, :-1],
            attention_mask=torch.cat([ones.expand(num_rows, -1), completion_mask[:, :-1]], dim=1),
            position_ids=text_positions.view(1, 1, -1).expand(3, num_rows, -1),
            cache=cache,
            use_cache=True,
        )
    return torch.cat([states, out.last_hidden_state], dim=1)


def student_hidden_grouped(
    backbone: torch.nn.Module, batch: dict[str, torch.Tensor], groups: list[slice], image_token_id: int
) -> torch.Tensor:
    """
    The student's hidden states at the completion positions of a micro-batch, each group of rollouts continuing from one
    pass over its prompt ([`student_hidden_shared`]). A group's prompt is its first row's, without the left padding.

    Args:
        backbone (`torch.nn.Module`):
            The student's multimodal backbone (no `lm_head`).
        batch (`dict`):
            The micro-batch as the trainer holds it: `prompt_ids` and `prompt_mask` `(B, P)` (left padded),
            `completion_ids` and `completion_mask` `(B, C)`, `mm_token_type_ids` `(B, P + C)`, and the rows' images in
            row order, `image_grid_thw` `(I, 3)` and `pixel_values`.
        groups (`list[slice]`):
            Runs of rows that are rollouts of one prompt, covering the batch in order
            ([`~vzero_trl.gating.group_slices`]).
        image_token_id (`int`):
            The image placeholder token, which tells how many images each row's prompt holds.

    Returns:
        `torch.Tensor`: hidden states `(B, C, H)`, gradients flowing into each group's one prompt pass.
    """
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    group_starts = {group.start for group in groups}
    prompts = {}  # first row of each group -> its unpadded prompt and its images
    image_start = pixel_start = 0
    for row in range(completion_ids.size(0)):  # every row, to find where each row's images start
        keep = batch["prompt_mask"][row].bool()
        ids = batch["prompt_ids"][row, keep]
        grid = batch["image_grid_thw"][image_start : image_start + len(image_runs(ids, image_token_id))]
        num_pixels = int(grid.prod(-1).sum())
        if row in group_starts:
            prompts[row] = {
                "input_ids": ids[None],
                "mm_token_type_ids": batch["mm_token_type_ids"][row, : keep.size(0)][keep][None],
                "image_grid_thw": grid,
                "pixel_values": batch["pixel_values"][pixel_start : pixel_start + num_pixels],
            }
        image_start += grid.size(0)
        pixel_start += num_pixels
    return torch.cat(
        [
            student_hidden_shared(backbone, prompts[group.start], completion_ids[group], completion_mask[group])
            for group in groups
        ]
    )
