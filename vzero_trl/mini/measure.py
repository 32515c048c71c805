"""What the miniature reproduction measures: greedy accuracy, the probability of the reference answer, gate diagnostics.

Every model here sees the messages the trainer builds ([`vzero_trl.views`]): the student view is the full image and
the question, a teacher view appends the paper's Fig. 4 sentence with an evidence crop. Completions are decoded
greedily; an answer counts when it ends with `answer is X.` and `X` is the correct letter, anything else is wrong.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..replay import TOKEN_TYPE_KEYS, tokenize
from ..views import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX, student_messages, teacher_messages
from .world import World, parse_answer, reference_answer


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


def evaluate_view(model, processor, rows: Sequence[dict], view: View, world: World, desc: str = "") -> dict:
    """Greedy accuracy, answer-format rate and mean reference probability of `model` on `rows` under `view`."""
    messages = view_messages(rows, view)
    letters = [row["answer"] for row in rows]
    texts = greedy_answers(model, processor, messages, desc=desc)
    return {
        "accuracy": accuracy(texts, letters),
        "format": format_rate(texts),
        "p_gold": sum(reference_probability(model, processor, messages, letters, world)) / len(rows),
    }


def within_group_auc(gates: Sequence[float], correct: Sequence[bool], groups: Sequence[int]) -> float:
    """
    Probability that a correct rollout's gate exceeds a wrong rollout's gate of the same prompt (ties count half),
    over all such pairs; `nan` when no group mixes correct and wrong rollouts.
    """
    wins = pairs = 0.0
    by_group: dict[int, list[tuple[float, bool]]] = {}
    for gate, ok, group in zip(gates, correct, groups, strict=True):
        by_group.setdefault(group, []).append((gate, ok))
    for members in by_group.values():
        right = [gate for gate, ok in members if ok]
        wrong = [gate for gate, ok in members if not ok]
        for a in right:
            for b in wrong:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                pairs += 1
    return wins / pairs if pairs else float("nan")


def gate_diagnostics(gates: Sequence[float], correct: Sequence[bool], groups: Sequence[int]) -> dict:
    """
    Mean gate of correct and of wrong rollouts, the within-group AUC of gate vs correctness, the fraction of groups
    with both correct and wrong rollouts, and the accuracy of the sampled rollouts.
    """
    right = [gate for gate, ok in zip(gates, correct, strict=True) if ok]
    wrong = [gate for gate, ok in zip(gates, correct, strict=True) if not ok]
    outcomes: dict[int, set[bool]] = {}
    for ok, group in zip(correct, groups, strict=True):
        outcomes.setdefault(group, set()).add(bool(ok))
    return {
        "gate_correct": sum(right) / len(right) if right else float("nan"),
        "gate_wrong": sum(wrong) / len(wrong) if wrong else float("nan"),
        "gate_auc": within_group_auc(gates, correct, groups),
        "mixed_group_frac": sum(len(o) == 2 for o in outcomes.values()) / len(outcomes),
        "rollout_accuracy": len(right) / len(correct),
    }
