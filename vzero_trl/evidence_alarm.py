"""The blind-teacher alarm: does the teacher see the evidence crops at all?

A teacher that cannot see (its vision weights never loaded, a processor whose image tokens its vision tower does not
fill, a chat template that drops the images) or that is shown the same picture twice (identical crop columns) gives
the same log-probabilities under the positive and the negative view. Training then converges on a gate of noise, or on
plain distillation from a blind teacher, and nothing else in the logs looks wrong. The two views' per-token gap
`d = pos - neg` tells this apart from a teacher that sees but finds the crop unimportant:

- a token is *distinct* when `|d|` exceeds the teacher's numerical noise, [`noise_tolerance`] of its compute dtype
  times `max(|pos|, |neg|, 1)`: a change of pixels moves the hidden states of every later token, so a teacher that sees
  has distinct tokens wherever it is not certain, even when the crop does not help it; a blind one has none beyond
  rounding;
- over the first `evidence_alarm_steps` scored generation batches, a teacher with at most `BLIND_FRACTION` distinct
  tokens is **blind**: the alarm warns once (or raises, `evidence_alarm="error"`) naming the likely causes;
- a teacher that sees but, summed over all tokens, prefers neither crop, `|mean d| <= INDIFFERENT_RATIO * mean |d|`,
  is **indifferent**: a different condition, warned once as such. It arises when the crops miss the question's
  evidence, but also when rollouts split between answers that each crop supports, where the gate still ranks them:
  the message says so, and points to the labelled probe, which can tell.

Under `evidence_alpha = 0` training never scores the negative view; the trainer then scores it for one prompt's
rollouts per process every `evidence_alarm_every` steps until the alarm has decided. [`view_gap_sums`] is pure torch;
[`EvidenceAlarm`] keeps the window's sums and decides.
"""

from collections.abc import Callable
from typing import Literal

import torch
from PIL import Image
from transformers.utils import logging

from .views import check_row


logger = logging.get_logger(__name__)

# At most this share of distinct tokens over the window: blind. A teacher that sees has distinct tokens wherever it is
# uncertain (the answer tokens at least); a blind one has none beyond rounding.
BLIND_FRACTION = 0.01
# |mean gap| at most this share of the mean |gap|: the teacher sees, but prefers neither view.
INDIFFERENT_RATIO = 0.1
# The relative rounding noise of a teacher's log-probabilities, in units of its compute dtype's machine epsilon.
NOISE_EPS = 8

Condition = Literal["blind", "indifferent", "sees"]

BLIND_MESSAGE = (
    "Blind-teacher alarm: over the first {batches} scored generation batches ({tokens} completion tokens), the teacher's "
    "log-probabilities under the positive and the negative crop differ beyond numerical noise (tolerance {tolerance:.1e} "
    "x max(|logp|, 1)) on {fraction:.2%} of tokens, mean |gap| {mean_abs:.2e}: the teacher does not see the evidence, "
    "and the gate is noise (and the distillation target blind). Likely causes: (1) the teacher's vision weights were "
    "not loaded (look for missing `visual` / `vision_tower` keys when it loads, or a serving engine that drops them); "
    "(2) a wrong processor (the teacher must use the student's, whose image tokens its vision tower fills); (3) the "
    "chat template drops the images (render a teacher view and look for the image placeholders); (4) identical crops "
    "(`crop_column` {crop!r} and `negative_crop_column` {negative!r} hold the same images). Set `evidence_alarm: off` to "
    "silence this, or `error` to stop training instead."
)
INDIFFERENT_MESSAGE = (
    "Evidence check: the teacher sees both crops ({fraction:.1%} of tokens differ beyond noise, mean |gap| "
    "{mean_abs:.2e}) but, summed over all tokens, prefers neither (mean gap {mean:+.2e}). Either the crops miss the "
    "question's evidence (or the task does not need it), and the gate then ranks rollouts at random; or each group's "
    "rollouts split between answers that one crop or the other supports, and the gate still ranks them (the gate "
    "works in the miniature's prior and drift worlds, where this message also appears). The sums cannot tell the two "
    "apart: measure the gate on a few hundred labelled rows (`gate_probe_dataset`) before relying on it."
)


def noise_tolerance(dtype: torch.dtype) -> float:
    """The relative numerical noise of log-probabilities computed in `dtype`: `NOISE_EPS` machine epsilons, at least
    `1e-5` (float32: `1e-5`, float16: `7.8e-3`, bfloat16: `6.3e-2`)."""
    return max(NOISE_EPS * torch.finfo(dtype).eps, 1e-5)


def view_gap_sums(
    pos_logps: torch.Tensor, neg_logps: torch.Tensor, mask: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """
    Sums behind the alarm over the valid tokens: `[number of tokens, number of distinct tokens, sum of |d|, sum of d]`
    with `d = pos - neg`; a token is distinct when `|d| > tolerance * max(|pos|, |neg|, 1)`. Summed over processes and
    batches, they give the window's statistics.

    Args:
        pos_logps (`torch.Tensor`): Positive-view teacher log-probabilities `(B, C)`.
        neg_logps (`torch.Tensor`): Negative-view teacher log-probabilities `(B, C)`.
        mask (`torch.Tensor`): Completion mask `(B, C)`.
        tolerance (`float`): Relative noise, see [`noise_tolerance`].

    Returns:
        `torch.Tensor`: float32 tensor of shape `(4,)` (computed in float64).
    """
    valid = mask.bool()
    pos, neg = pos_logps[valid].double(), neg_logps[valid].double()
    gap = pos - neg  # (N,) over the valid tokens
    scale = torch.maximum(pos.abs(), neg.abs()).clamp(min=1.0)
    distinct = gap.abs() > tolerance * scale
    return torch.stack([valid.sum().double(), distinct.sum().double(), gap.abs().sum(), gap.sum()]).float()


def diagnose(sums: torch.Tensor) -> tuple[Condition, dict[str, float]]:
    """
    The window's condition from its summed [`view_gap_sums`] `(4,)`, and the statistics behind it: `fraction` of
    distinct tokens, `mean_abs` gap and `mean` gap.
    """
    tokens, distinct, abs_sum, gap_sum = sums.tolist()
    tokens = max(tokens, 1.0)
    stats = {"fraction": distinct / tokens, "mean_abs": abs_sum / tokens, "mean": gap_sum / tokens}
    if stats["fraction"] <= BLIND_FRACTION:
        return "blind", stats
    if abs(gap_sum) <= INDIFFERENT_RATIO * abs_sum:
        return "indifferent", stats
    return "sees", stats


def build_alarm(args, teacher_dtype: torch.dtype, train_dataset) -> "EvidenceAlarm":
    """
    The alarm of a run from its [`VZeroConfig`], the teacher's parameter dtype (bfloat16 for a served teacher) and the
    training dataset (its columns, when known, are checked for the negative crop): the tolerance is that of the
    coarser of the teacher's dtype and the mixed precision (`bf16` / `fp16`) it may run under.
    """
    train_columns = None if train_dataset is None else train_dataset.column_names
    dtypes = [teacher_dtype] + [torch.bfloat16] * bool(args.bf16) + [torch.float16] * bool(args.fp16)
    tolerance = max(noise_tolerance(dtype) for dtype in dtypes)
    columns = (args.crop_column, args.negative_crop_column)
    alarm = EvidenceAlarm(
        args.evidence_alarm, args.evidence_alarm_steps, args.evidence_alarm_every, tolerance, columns
    )
    if train_columns is not None and args.negative_crop_column not in train_columns:
        alarm.disable(f"the training dataset has no column {args.negative_crop_column!r}")
    return alarm


class EvidenceAlarm:
    """
    The alarm's state over a run: the summed [`view_gap_sums`] of the scored batches until it decides, once.

    Args:
        mode (`str`): `"warn"`, `"error"` or `"off"` (`evidence_alarm`).
        steps (`int`): Scored generation batches it looks at (`evidence_alarm_steps`).
        every (`int`): Under `evidence_alpha = 0`, the steps between two sampled negative-view scorings
            (`evidence_alarm_every`).
        tolerance (`float`): See [`noise_tolerance`].
        columns (`tuple[str, str]`): The positive and negative crop columns, named in the message.
    """

    def __init__(
        self,
        mode: Literal["warn", "error", "off"],
        steps: int,
        every: int,
        tolerance: float,
        columns: tuple[str, str],
    ):
        self.mode, self.steps, self.every, self.tolerance, self.columns = mode, steps, every, tolerance, columns
        self.sums = torch.zeros(4, dtype=torch.float64)
        self.batches = 0
        self.condition: Condition | None = None  # set once the window is complete
        self.paused = False  # the gate probe's batches are not training's

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.condition is None and not self.paused

    def wants_sample(self, step: int, row: dict) -> bool:
        """
        Whether a batch of step `step` without a negative view scores one for the alarm (`evidence_alpha=0`), from the
        rollouts of `row`'s prompt. Rows without the negative-crop column turn the alarm off, with a warning.
        """
        if not (self.active and step % self.every == 0):
            return False
        if not isinstance(row.get(self.columns[1]), Image.Image):
            self.disable(f"the rows hold no negative crop in {self.columns[1]!r}")
            return False
        return True

    def watch(
        self,
        step: int,
        rows: list[dict],
        first_group: slice,
        completion_ids: torch.Tensor,
        mask: torch.Tensor,
        pos_logps: torch.Tensor,
        neg_logps: torch.Tensor | None,
        replay: Callable,
        gather: Callable,
    ) -> dict[str, float]:
        """
        Feed one training batch of step `step` to the alarm ([`update`]); returns its metrics (none when not scored).

        Args:
            rows (`list[dict]`), completion_ids (`torch.Tensor`), mask (`torch.Tensor`):
                The batch's rows and rollouts `(B, C)` on this process.
            first_group (`slice`):
                The rows of this process's first group: without a negative view, the alarm scores theirs alone.
            pos_logps (`torch.Tensor`), neg_logps (`torch.Tensor` or `None`):
                The teacher's per-token log-probs `(B, C)` under both views; `None` without a negative view
                (`evidence_alpha = 0`), when the alarm scores one every `every` steps ([`wants_sample`]).
            replay (`Callable`):
                The trainer's `_replay(rows, groups, completion_ids, mask, columns)`, for that scoring.
            gather (`Callable`):
                `accelerator.gather`: the counts are summed over processes.
        """
        selected = slice(None)
        if neg_logps is None:
            if not self.wants_sample(step, rows[first_group.start]):
                return {}
            selected, size, columns = first_group, first_group.stop - first_group.start, [self.columns[1]]
            check_row(rows[first_group.start], columns, first_group.start)
            scored = replay(rows[selected], [slice(0, size)], completion_ids[selected], mask[selected], columns)
            neg_logps = scored[0][0]
        sums = view_gap_sums(pos_logps[selected], neg_logps, mask[selected], self.tolerance)
        return self.update(gather(sums.view(1, 4)).sum(0))

    def disable(self, reason: str) -> None:
        """Turn the alarm off for the run, saying why once."""
        if self.mode != "off":
            logger.warning(
                f"Blind-teacher alarm off: {reason}, so the teacher's two views cannot be compared. Add the column (or "
                "point `negative_crop_column` at it), or set `evidence_alarm: off` to silence this."
            )
        self.mode = "off"

    def update(self, sums: torch.Tensor) -> dict[str, float]:
        """
        Add one scored batch's [`view_gap_sums`], summed over processes; decide when the window is complete. Returns the
        batch's `evidence/distinct_token_frac` metric. Raises `RuntimeError` on a blind teacher with `mode="error"`.
        """
        sums = sums.detach().double().cpu()
        self.sums += sums
        self.batches += 1
        if self.batches >= self.steps:
            self._decide()
        return {"evidence/distinct_token_frac": sums[1].item() / max(sums[0].item(), 1.0)}

    def _decide(self) -> None:
        self.condition, stats = diagnose(self.sums)
        if self.condition == "blind":
            message = BLIND_MESSAGE.format(
                batches=self.batches,
                tokens=int(self.sums[0].item()),
                tolerance=self.tolerance,
                crop=self.columns[0],
                negative=self.columns[1],
                **stats,
            )
            if self.mode == "error":
                raise RuntimeError(message)
            logger.warning(message)
        elif self.condition == "indifferent":
            logger.warning(INDIFFERENT_MESSAGE.format(**stats))
        else:
            logger.info(
                f"Evidence check: the teacher sees the crops ({stats['fraction']:.1%} of tokens differ beyond noise, "
                f"mean gap {stats['mean']:+.2e})."
            )
