"""Golden cases for answer extraction, scoring and aggregation, written by hand; comments name the rule each pins."""

import math

import pytest
from PIL import Image

from vzero_trl.eval.answers import (
    PAPER_ROWS,
    ZWZ_SYSTEM_PROMPT,
    aggregate,
    extract_answer,
    extract_choice,
    match_open,
    normalize_open,
    score_item,
    table_row,
)
from vzero_trl.eval.tasks import BENCHMARKS, EvalItem


def test_system_prompt_is_zwz_verbatim():
    # ZwZ mm-eval/infer_without_tool.py, including "\n " and "The answer are".
    assert ZWZ_SYSTEM_PROMPT == (
        "You are a helpful assistant.\n The assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer. The answer are enclosed within <answer> </answer> tags, respectively, "
        "i.e., reasoning process here <answer> answer here </answer>"
    )


@pytest.mark.parametrize(
    "response,expected",
    [
        # <answer> tags: any case and spacing, content stripped
        ("The sign is red.\n<answer>B</answer>", "B"),
        ("<ANSWER> b </Answer>", "b"),
        ("< answer >C< / answer >", "C"),
        # unclosed: up to the end (ZwZ would drop the last character)
        ("reasoning <answer>B", "B"),
        ("<answer> C\n", "C"),
        # empty tags: no answer, even when an "Answer:" line exists (the model used the format)
        ("<answer></answer>", ""),
        ("Answer: B\n<answer>  </answer>", ""),
        # several tags: the last non-empty one
        ("<answer>A</answer> wait, no. <answer>B</answer>", "B"),
        ("<answer>A</answer> done <answer></answer>", "A"),
        ("I will reply as <answer> answer here </answer>.\nIt is the truck.\n<answer>C</answer>", "C"),
        # nested tags
        ("<answer><answer>D</answer></answer>", "D"),
        # a closing tag without an opening one: the last line before it
        ("The final choice is\nB</answer>", "B"),
        # thinking blocks are dropped first, closed or opened by the chat template
        ("<think>maybe <answer>A</answer></think><answer>B</answer>", "B"),
        ("<THINK>\nA?\n</THINK>\nAnswer: C", "C"),
        ("A looks plausible</think>\n\n<answer>C</answer>", "C"),
        ("A looks plausible</think>The answer is B", "The answer is B"),
        ("<think>truncated, but <answer>D</answer>", "D"),
        # "Answer:" variants: the last one, any case, markdown, full-width colon
        ("So.\nAnswer: B", "B"),
        ("final answer: (C) 3 cars", "(C) 3 cars"),
        ("**Answer:** D", "D"),
        ("**Answer**: two", "two"),
        ("Answer: A is tempting.\nANSWER: C", "C"),
        ("Answer：Ｂ", "Ｂ"),
        # else the last 3 non-empty lines
        ("l1\n\nl2\nl3\n\nl4\n", "l2\nl3\nl4"),
        ("The answer is B", "The answer is B"),
        # nothing
        ("", ""),
        ("  \n \n", ""),
        ("<think>only thinking</think>", ""),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


OPTIONS = {"A": "red car", "B": "blue truck", "C": "dark red", "D": "2"}


@pytest.mark.parametrize(
    "text,expected",
    [
        # 1. the whole answer is one letter, any case and brackets
        ("B", "B"),
        ("b", "B"),
        ("a", "A"),
        ("(c)", "C"),
        ("**C**", "C"),
        ("D.", "D"),
        ("[A]", "A"),
        ("\\boxed{B}", "B"),
        ("Ｂ", "B"),  # full-width, NFKC
        ("（Ｃ）", "C"),
        # 2. concluding phrases; the last one wins
        ("The answer is (B)", "B"),
        ("Answer: C", "C"),
        ("The correct option is: C", "C"),
        ("The answer is option (B).", "B"),
        ("I choose D", "D"),
        ("the answer is b.", "B"),
        ("The answer is A because the car is red.", "A"),  # mid-sentence capital A is a letter
        ("The answer is A. Wait, the answer is B.", "B"),
        ("Option A shows a car, option B shows a truck. The answer is B.", "B"),
        ("The answer is not A; the answer is D", "D"),
        ("The answer is B。", "B"),
        # 3. a leading marker, alone or followed by its own text
        ("B) blue truck", "B"),
        ("C. dark red", "C"),
        ("A: red car", "A"),
        ("b) blue truck", "B"),
        # 4. one distinct letter mentioned
        ("I think it is B", "B"),  # "I" is the pronoun (ZwZ's first-capital rule would say "I")
        ("Based on the image, the vehicle is D.", "D"),
        ("A is correct", "A"),
        ("Option D", "D"),
        ("E.g. the count gives D", "D"),  # "E.g." is not a letter
        ("(d)", "D"),
        # two distinct letters: ambiguous
        ("A or B", None),
        ("Both A and B are wrong", None),
        ("(A) is wrong, so (C)", None),
        ("B, C", None),
        # "A" as an article, lowercase letters in words
        ("A red car", "A"),  # the option's own text follows: letter A
        ("A truck that is blue", None),  # article; no option text matches
        ("the answer is a cat", None),
        # 5. option text: exact (normalised), then unique containment
        ("Blue Truck.", "B"),
        ("two", "D"),
        ("It is the blue truck.", "B"),
        ("the dark red one", "C"),
        ("red", None),  # not an option, contained in none
        ("the red car or the blue truck", None),
        ("not the red car", None),  # negation: no containment
        ("There is no blue truck", None),
        # letters outside the options, nothing
        ("The answer is F", None),
        ("", None),
        ("   ", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, OPTIONS) == expected


def test_extract_choice_article_and_option_text():
    # "A bicycle": the article when option C is "bicycle", the letter when option A is "bicycle".
    assert extract_choice("A bicycle", {"A": "car", "B": "bus", "C": "bicycle"}) == "C"
    assert extract_choice("A bicycle", {"A": "bicycle", "B": "bus", "C": "car"}) == "A"
    assert extract_choice("Answer: A bicycle", {"A": "car", "B": "bus", "C": "bicycle"}) == "C"
    # a letter inside the option text does not make the marker ambiguous
    assert extract_choice("C. Building B", {"A": "Building A", "B": "tree", "C": "Building B"}) == "C"
    # identical option texts are ambiguous
    assert extract_choice("cat", {"A": "cat", "B": "Cat."}) is None
    # without options any capital letter counts and no text matching happens
    assert extract_choice("The answer is Q", {}) == "Q"
    assert extract_choice("red car", {}) is None
    # "E.g." is an abbreviation, not option E (MME-RealWorld has five options)
    assert extract_choice("E.g. the sign reads STOP, so D", {letter: "x" for letter in "ABCDE"}) == "D"
    assert extract_choice("E", {letter: "x" for letter in "ABCDE"}) == "E"
    # "I" as an option letter versus the pronoun
    options = {letter: letter.lower() * 3 for letter in "ABCDEFGHI"}
    assert extract_choice("I", options) == "I"
    assert extract_choice("I think so", options) is None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2.0", "2"),
        ("1,000", "1000"),
        ("1,000,000 people", "1000000 people"),
        ("two", "2"),
        ("Twenty-one apples", "21 apples"),
        ("ninety nine", "99"),
        ("0.50", "0.5"),
        ("1/2", "0.5"),
        ("4/8", "0.5"),
        ("1/3", "1/3"),
        ("-3", "-3"),
        ("5-6", "5 6"),
        ("50%", "50"),
        ("45°", "45"),
        ("5cm", "5 cm"),
        ("5 cm.", "5 cm"),
        ("The Red Car.", "red car"),
        ("an apple", "apple"),
        ("count = 3", "3"),
        ("\\text{blue}", "blue"),
        ("$12", "12"),
        ("H2O", "h2o"),
        ("Ｔｗｏ", "2"),
        ("café", "café"),
        ("...", ""),
        ("", ""),
    ],
)
def test_normalize_open(text, expected):
    assert normalize_open(text) == expected


@pytest.mark.parametrize(
    "prediction,reference,expected",
    [
        ("2.0", "2", True),
        ("two", "2", True),
        ("1,000", "1000", True),
        ("0.5", "1/2", True),
        ("The red car.", "red car", True),
        ("5 cm", "5cm", True),
        ("5 m", "5 cm", False),  # units are kept
        ("5", "5 cm", False),
        ("3 cars", "3", True),  # containment of a short reference
        ("dark red", "red", True),
        ("3 or 4", "3", False),  # alternatives, negations, other numbers: ambiguous
        ("not red", "red", False),
        ("red and blue", "red", False),
        ("3 cars and 2 trucks", "3", False),
        ("33", "3", False),
        ("3.5", "3", False),
        ("there are three red cars in the lot", "3", False),  # too long for containment
        ("red red", "red", False),  # more than once
        ("", "2", False),
        ("2", "", False),
    ],
)
def test_match_open(prediction, reference, expected):
    assert match_open(prediction, reference) is expected


def item(kind: str, answer: str, **kwargs) -> EvalItem:
    options = {"A": "red", "B": "blue", "C": "green"} if kind == "mcq" else {}
    return EvalItem("zoombench", "0", Image.new("RGB", (2, 2)), "What color?", answer, kind, options, **kwargs)


class FakeJudge:
    def __init__(self, verdict: bool):
        self.verdict, self.calls = verdict, []

    def __call__(self, question: str, reference: str, prediction: str) -> bool:
        self.calls.append((question, reference, prediction))
        return self.verdict


def test_score_item_multiple_choice():
    judge = FakeJudge(True)
    assert score_item(item("mcq", "B"), "It is blue.\n<answer>(B)</answer>", judge) == {
        "extracted": "(B)",
        "choice": "B",
        "correct": True,
        "score_source": "rule_choice",
    }
    wrong = score_item(item("mcq", "B"), "<answer>green</answer>", judge)
    assert (wrong["choice"], wrong["correct"], wrong["score_source"]) == ("C", False, "rule_choice")
    for response in ["", "<answer></answer>", "<answer>purple</answer>", "<answer>A or B</answer>"]:
        result = score_item(item("mcq", "A"), response, judge)
        assert (result["choice"], result["correct"], result["score_source"]) == (None, False, "no_answer")
    assert judge.calls == []  # letters are never judged


def test_score_item_open_ended_calls_the_judge_only_when_needed():
    judge = FakeJudge(True)
    ruled = score_item(item("open", "3"), "<answer>three</answer>", judge)
    assert ruled == {"extracted": "three", "choice": None, "correct": True, "score_source": "rule_open"}
    assert judge.calls == []
    empty = score_item(item("open", "3"), "<answer> </answer>", judge)
    assert (empty["correct"], empty["score_source"]) == (False, "no_answer")
    assert judge.calls == []
    judged = score_item(item("open", "3"), "Answer: a trio", judge)
    assert (judged["correct"], judged["score_source"]) == (True, "judge")
    assert judge.calls == [("What color?", "3", "a trio")]
    rejected = score_item(item("open", "3"), "Answer: a trio", FakeJudge(False))
    assert (rejected["correct"], rejected["score_source"]) == (False, "judge")
    # without a judge, the normaliser's "no" stands
    alone = score_item(item("open", "3"), "Answer: a trio")
    assert (alone["correct"], alone["score_source"]) == (False, "rule_open")


def rows(spec: list[tuple]) -> list[dict]:
    """`(correct, category, group, kind)` tuples -> records."""
    return [dict(zip(("correct", "category", "group", "kind"), row, strict=True)) for row in spec]


def test_aggregate_micro_accuracy_and_categories():
    # V*: 3 of 4 right; direct_attributes 2/2, relative_position 1/2
    records = rows(
        [
            (True, "direct_attributes", None, "mcq"),
            (True, "direct_attributes", None, "mcq"),
            (True, "relative_position", None, "mcq"),
            (False, "relative_position", None, "mcq"),
        ]
    )
    assert aggregate("vstar", records) == {"score": 75.0, "direct_attributes": 100.0, "relative_position": 50.0}
    # MMStar: the micro mean (1/3), not the macro mean over categories ((0 + 50) / 2 = 25)
    records = rows([(False, "math", None, "mcq"), (True, "science", None, "mcq"), (False, "science", None, "mcq")])
    assert aggregate("mmstar", records) == pytest.approx({"score": 100 / 3, "math": 0.0, "science": 50.0})


def test_aggregate_hrbench_averages_cycles():
    # cycle 1: 3/3 right (100%), cycle 2: 0/1 (0%). Cycle mean 50, while the plain micro mean would be 3/4 = 75.
    # single: cycle 1 2/2 = 100, cycle 2 0/1 = 0 -> 50; cross: only cycle 1, 1/1 -> 100.
    records = rows(
        [
            (True, "single", "1", "mcq"),
            (True, "single", "1", "mcq"),
            (True, "cross", "1", "mcq"),
            (False, "single", "2", "mcq"),
        ]
    )
    for name in ("hrbench_4k", "hrbench_8k"):
        assert aggregate(name, records) == {"score": 50.0, "cross": 100.0, "single": 50.0}
    # equal cycles: the cycle mean is the micro mean (4/8 = 50 either way)
    equal = rows([(i < 2 or i == 4 or i == 5, "single", str(i // 4), "mcq") for i in range(8)])
    assert aggregate("hrbench_4k", equal)["score"] == 50.0
    # unequal cycles again: 1/1 and 1/3 -> (100 + 33.3) / 2 = 66.7, micro 2/4 = 50
    unequal = rows([(True, "single", "a", "mcq"), (True, "single", "b", "mcq")] + [(False, "single", "b", "mcq")] * 2)
    assert aggregate("hrbench_8k", unequal)["score"] == pytest.approx(200 / 3)


def test_aggregate_mme_realworld_and_zoombench_splits():
    # MME-RealWorld: overall 2/4 = 50; Perception 2/3; Reasoning 0/1
    records = rows(
        [
            (True, "OCR", "Perception", "mcq"),
            (True, "Remote Sensing", "Perception", "mcq"),
            (False, "OCR", "Perception", "mcq"),
            (False, "Autonomous_Driving", "Reasoning", "mcq"),
        ]
    )
    assert aggregate("mme_realworld", records) == pytest.approx(
        {"score": 50.0, "Perception": 200 / 3, "Reasoning": 0.0}
    )
    # ZoomBench: overall 3/5 = 60; mcq 2/2; open 1/3
    records = rows(
        [(True, None, None, "mcq"), (True, None, None, "mcq"), (True, None, None, "open")]
        + [(False, None, None, "open")] * 2
    )
    assert aggregate("zoombench", records) == pytest.approx({"score": 60.0, "mcq": 100.0, "open": 100 / 3})


def test_aggregate_edge_cases():
    assert math.isnan(aggregate("vstar", [])["score"])
    with pytest.raises(ValueError, match="Unknown benchmark"):
        aggregate("mmbench", rows([(True, None, None, "mcq")]))
    # rows without a category count in the score, not in the breakdown
    assert aggregate("mmstar", rows([(True, None, None, "mcq"), (False, "math", None, "mcq")])) == {
        "score": 50.0,
        "math": 0.0,
    }


def test_table_row_pins_the_papers_averages():
    qwen = table_row(PAPER_ROWS["Qwen3.5-4B*"])
    # (84.3 + 84.4 + 80.1 + 52.2) / 4 = 75.25; + 69.2 + 71.8 -> 442.0 / 6 = 73.67 (Table 1 prints 73.7)
    assert qwen["perception_avg"] == pytest.approx(75.25)
    assert qwen["avg"] == pytest.approx(442.0 / 6)
    vzero = table_row(PAPER_ROWS["V-Zero-4B (Ours)"])
    # (89.0 + 87.8 + 82.6 + 57.8) / 4 = 79.3; + 69.8 + 74.4 -> 461.4 / 6 = 76.9
    assert vzero["perception_avg"] == pytest.approx(79.3)
    assert vzero["avg"] == pytest.approx(76.9)
    for values in PAPER_ROWS.values():
        assert round(table_row(values)["avg"], 1) == values["avg"]
        assert list(table_row(values)) == [*BENCHMARKS, "perception_avg", "avg"]
    # the ablations' Perc. Avg: gate on 89.0 / 87.8 / 82.1 / 57.7 -> 79.15 (printed 79.2)
    ablation = table_row({"vstar": 89.0, "hrbench_4k": 87.8, "hrbench_8k": 82.1, "zoombench": 57.7})
    assert ablation["perception_avg"] == pytest.approx(79.15) and ablation["avg"] is None


def test_table_row_with_missing_benchmarks():
    assert table_row({}) == {**dict.fromkeys(BENCHMARKS), "perception_avg": None, "avg": None}
    partial = table_row({"vstar": 80.0, "hrbench_4k": 70.0, "hrbench_8k": 60.0, "zoombench": None, "other": 1.0})
    assert partial["perception_avg"] is None and partial["avg"] is None and "other" not in partial
    perception_only = table_row({"vstar": 80.0, "hrbench_4k": 70.0, "hrbench_8k": 60.0, "zoombench": 50.0})
    assert perception_only["perception_avg"] == 65.0 and perception_only["avg"] is None
    full = table_row(dict.fromkeys(BENCHMARKS, 50.0) | {"mmstar": 80.0})
    assert full["perception_avg"] == 50.0 and full["avg"] == 55.0
