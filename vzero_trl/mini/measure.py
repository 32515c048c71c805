"""What the miniature reproduction measures: greedy accuracy, the probability of the reference answer, gate diagnostics.

Every model here sees the messages the trainer builds ([`vzero_trl.views`]): the student view is the full image and
the question, a teacher view appends the paper's Fig. 4 sentence with an evidence crop. Completions are decoded
greedily; an answer counts when it ends with `answer is X.` and `X` is the correct letter, anything else is wrong.
"""

import math
import random
from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..gate_stats import gate_diagnostics, within_group_auc  # noqa: F401  (the miniature's gate measures)
from ..replay import TOKEN_TYPE_KEYS, tokenize
from ..views import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX, student_messages, teacher_messages
from .world import LETTERS, OPTIONS, PRIOR_LETTER, TARGET, World, parse_answer, reference_answer


View = Literal["student", "crop", "negative_crop", "random_crop"]


def view_messages(rows: Sequence[dict], view: View) -> list[list[dict]]:
    """The student's messages (`view="student"`) or a teacher view with the row's `view` column as the crop."""
    if view == "student":
        return [student_messages(row) for row in rows]
    return [
        teacher_messages(student_messages(row), row[view], TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX) for row in rows
    ]


def encode(processor, messages: list[list[dict]], completions: list[list[int]] | None = None) -> dict:
    """
    Model inputs laid out as the trainer lays them out: left-padded prompts, then right-padded completions.

    Args:
        processor: The models' processor (left padding).
        messages (`list[list[dict]]`): One conversation per row, without the assistant turn.
        completions (`list[list[int]]`, *optional*): Completion token ids per row (ending with the end-of-turn id).

    Returns:
        `dict`: processor outputs ([`vzero_trl.replay.tokenize`]); with `completions`, also `labels` (-100 on the
        prompt and padding) and the per-token type ids extended with zeros over the completion, as the replay does.
    """
    inputs = tokenize(processor, messages, {}, "cpu")
    if completions is None:
        return inputs
    pad_id = processor.tokenizer.pad_token_id
    width = max(len(ids) for ids in completions)
    completion_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in completions])
    completion_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in completions])
    prompt_labels = torch.full_like(inputs["input_ids"], -100)
    inputs["labels"] = torch.cat([prompt_labels, completion_ids.masked_fill(completion_mask == 0, -100)], dim=1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], completion_mask], dim=1)
    for key in TOKEN_TYPE_KEYS:
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(completion_ids)], dim=1)
    return inputs


def answer_ids(tokenizer, letters: Sequence[str], world: World) -> list[list[int]]:
    """Token ids of the reference answers, each ending with the end-of-turn token that stops generation."""
    return [
        tokenizer(reference_answer(letter, world), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for letter in letters
    ]


@torch.no_grad()
def greedy_answers(
    model, processor, messages: list[list[dict]], max_new_tokens: int = 24, batch_size: int = 100, desc: str = ""
) -> list[str]:
    """Greedy completions, decoded without special tokens."""
    model.eval()
    texts = []
    starts = range(0, len(messages), batch_size)
    for start in tqdm(starts, desc=desc or "greedy answers", leave=False, disable=not desc):
        inputs = encode(processor, messages[start : start + batch_size]).to(model.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        texts += processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts


@torch.no_grad()
def reference_probability(
    model, processor, messages: list[list[dict]], letters: Sequence[str], world: World, batch_size: int = 100
) -> list[float]:
    """
    Probability that the model gives the correct reference answer, token by token under teacher forcing (the end of
    turn excluded). In the letter world this is the probability of the correct letter after "The answer is"; in the
    chain world, of the correct colour and then the correct letter. Steadier than greedy accuracy.
    """
    model.eval()
    probs = []
    for start in range(0, len(messages), batch_size):
        ids = answer_ids(processor.tokenizer, letters[start : start + batch_size], world)
        inputs = encode(processor, messages[start : start + batch_size], ids).to(model.device)
        labels = inputs.pop("labels")
        logits = model(**inputs).logits[:, :-1].float()
        targets = labels[:, 1:]
        # The end-of-turn token is the last label of each row: drop it, keep the answer's own tokens.
        last = (targets != -100).long().cumsum(1).argmax(1)
        keep = targets != -100
        keep[torch.arange(len(keep)), last] = False
        logps = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        probs += (logps * keep).sum(1).exp().tolist()
    return probs


def accuracy(texts: Sequence[str], letters: Sequence[str]) -> float:
    """Fraction of completions whose parsed letter is the correct one."""
    return sum(parse_answer(text) == letter for text, letter in zip(texts, letters, strict=True)) / len(letters)


def format_rate(texts: Sequence[str]) -> float:
    """Fraction of completions that end with a parsable `answer is X.`."""
    return sum(parse_answer(text) is not None for text in texts) / len(texts)


def evaluate_view(
    model, processor, rows: Sequence[dict], view: View, world: World, desc: str = "", greedy: bool = True
) -> dict:
    """
    Mean reference probability `p_gold` and its mean log `log_p_gold` (each row's probability floored at 1e-12) of
    `model` on `rows` under `view`; with `greedy`, also greedy `accuracy` and answer-`format` rate.
    """
    messages = view_messages(rows, view)
    letters = [row["answer"] for row in rows]
    probs = reference_probability(model, processor, messages, letters, world)
    result = {
        "p_gold": sum(probs) / len(rows),
        "log_p_gold": sum(math.log(max(p, 1e-12)) for p in probs) / len(rows),
    }
    if greedy:
        texts = greedy_answers(model, processor, messages, desc=desc)
        result |= {"accuracy": accuracy(texts, letters), "format": format_rate(texts)}
    return result


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer; the measurements need one.")
    return ids[0]


@torch.no_grad()
def option_probs(
    model,
    processor,
    messages: list[list[dict]],
    prefixes: Sequence[str],
    options: Sequence[str],
    batch_size: int = 100,
) -> torch.Tensor:
    """
    Probability of each option as the next token after a forced answer prefix.

    Args:
        messages (`list[list[dict]]`): One conversation per row (a view of [`view_messages`]).
        prefixes (`Sequence[str]`): The start of each row's answer, forced (for example `"The answer is"`).
        options (`Sequence[str]`): K candidate next tokens, each one token (for example `" A"`).

    Returns:
        `torch.Tensor` of shape `(N, K)`: the model's probabilities (over the whole vocabulary) of each option.
    """
    model.eval()
    tokenizer = processor.tokenizer
    option_ids = torch.tensor([_single_token(tokenizer, option) for option in options])
    out = []
    for start in range(0, len(messages), batch_size):
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes[start : start + batch_size]]
        inputs = encode(processor, messages[start : start + batch_size], ids).to(model.device)
        inputs.pop("labels")
        width = max(len(i) for i in ids)
        last = inputs["input_ids"].shape[1] - width + torch.tensor([len(i) - 1 for i in ids])
        logits = model(**inputs).logits[torch.arange(len(ids)), last].float()
        out.append(logits.softmax(-1)[:, option_ids])
    return torch.cat(out)


def drift_condition(teacher, student, processor, rows: Sequence[dict], seed: int = 0) -> dict:
    """
    Whether the drift world holds the paper's condition, measured on held-out `rows`.

    - The student sees the decisive step in part: at the colour position (after "The star is"), its mean probability
      of the gold colour, how often the gold colour is its top colour, and the mean margin of its top colour over the
      runner-up (all four are probabilities over the whole vocabulary; chance is a quarter of its colour mass).
    - The teacher continues a drifted prefix consistently: after "The star is <wrong colour>, so the answer is" with the
      positive crop, its probability of that colour's letter (`teacher_consistent`) and of the gold letter.
    - The student's own rule: after the same wrong prefix, its probability of the stated colour's letter.
    """
    rng = random.Random(f"vzero-mini/drift-condition/{seed}")
    colours = [f" {c}" for c in OPTIONS]
    letters = [f" {letter}" for letter in LETTERS]
    gold = torch.tensor([LETTERS.index(row["answer"]) for row in rows])
    wrong = torch.tensor([rng.choice([i for i in range(len(LETTERS)) if i != g]) for g in gold.tolist()])
    student_view = view_messages(rows, "student")
    colour = option_probs(student, processor, student_view, [f"The {TARGET} is"] * len(rows), colours)
    top2 = colour.topk(2, dim=-1).values
    drifted = [f"The {TARGET} is {OPTIONS[w]}, so the answer is" for w in wrong.tolist()]
    teacher_letter = option_probs(teacher, processor, view_messages(rows, "crop"), drifted, letters)
    student_letter = option_probs(student, processor, student_view, drifted, letters)
    idx = torch.arange(len(rows))
    return {
        "student_p_gold_colour": colour[idx, gold].mean().item(),
        "student_colour_chance": (colour.sum(-1) / len(OPTIONS)).mean().item(),
        "student_gold_colour_top": (colour.argmax(-1) == gold).float().mean().item(),
        "student_colour_margin": (top2[:, 0] - top2[:, 1]).mean().item(),
        "teacher_consistent": teacher_letter[idx, wrong].mean().item(),
        "teacher_gold_after_wrong": teacher_letter[idx, gold].mean().item(),
        "student_consistent": student_letter[idx, wrong].mean().item(),
    }


def prior_condition(teacher, student, processor, rows: Sequence[dict]) -> dict:
    """
    The prior world's teacher error, on held-out `rows` whose gold answer is not `PRIOR_LETTER`: after "The answer
    is", the teacher's mean probability of the prior option and of the gold option under the positive and the negative
    crop, and the student's (full image) for comparison.
    """
    rows = [row for row in rows if row["answer"] != PRIOR_LETTER]
    letters = [f" {letter}" for letter in LETTERS]
    gold = torch.tensor([LETTERS.index(row["answer"]) for row in rows])
    prior, idx, prefix = LETTERS.index(PRIOR_LETTER), torch.arange(len(rows)), ["The answer is"] * len(rows)
    result = {"rows": len(rows)}
    for name, model, view in (
        ("teacher_crop", teacher, "crop"),
        ("teacher_negative", teacher, "negative_crop"),
        ("student", student, "student"),
    ):
        probs = option_probs(model, processor, view_messages(rows, view), prefix, letters)
        result[f"{name}_p_prior"] = probs[:, prior].mean().item()
        result[f"{name}_p_gold"] = probs[idx, gold].mean().item()
    return result
