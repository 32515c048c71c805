"""Answer extraction and scoring for the Table 1 benchmarks, following ZwZ's `mm-eval` protocol, without a judge model.

The paper evaluates "Following ZwZ" (inclusionAI/Zooming-without-Zooming, `mm-eval/`): the model is asked for its
answer in `<answer>` tags (`ZWZ_SYSTEM_PROMPT`), the answer is cut out of the response (`judge_qwenlm.py`), then
compared with the reference by `mathruler.grader.grade_answer`, by the first option letter for multiple-choice
benchmarks, and last by a Qwen3-30B-A3B judge; accuracy is the share of "Yes" over all rows (`cal_acc.py`). Here:

- `extract_answer` cuts the answer out of a response (ZwZ's order: `<answer>` tags, `Answer:`, the last 3 lines);
- `extract_choice` reads the option letter it picks, by stricter rules than ZwZ's first capital letter;
- `normalize_open` / `match_open` compare short open-ended answers (ZoomBench) as `grade_answer` does for short values;
- `score_item` scores one response, calling an optional judge only for open-ended answers the rules do not accept;
- `aggregate` computes each benchmark's score as the benchmark defines it, and `table_row` the Table 1 averages.
"""

import math
import re
import statistics
import string
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from .tasks import BENCHMARKS, EvalItem


# Verbatim from ZwZ `mm-eval/infer_without_tool.py` (also V-Zero's `qwen3_vl_crop_template.yaml`), grammar included.
ZWZ_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The answer are enclosed within <answer> </answer> tags, respectively, i.e., "
    "reasoning process here <answer> answer here </answer>"
)

# Table 1 of the paper (* = the authors' own testing). "avg" is the printed mean of the six columns.
PAPER_ROWS = {
    "Qwen3.5-4B*": dict(zip((*BENCHMARKS, "avg"), (84.3, 84.4, 80.1, 52.2, 69.2, 71.8, 73.7), strict=True)),
    "V-Zero-4B (Ours)": dict(zip((*BENCHMARKS, "avg"), (89.0, 87.8, 82.6, 57.8, 69.8, 74.4, 76.9), strict=True)),
}

# The "Perc. Avg" of the paper's ablations: V*, HR-Bench 4K and 8K, ZoomBench.
PERCEPTION_BENCHMARKS = BENCHMARKS[:4]

# The columns of Table 1 as `table_row` keys them, and their headers (also the benchmarks' names on the Hub).
COLUMNS = (*BENCHMARKS, "perception_avg", "avg")
HEADERS = ("VStar", "HR-4K", "HR-8K", "ZoomBench", "MME-RW", "MMStar", "Perc. Avg", "Avg")

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"\banswer\s*\**\s*[:：][\s*]*", re.IGNORECASE)  # also "**Answer:**", "Answer："


def extract_answer(response: str) -> str:
    """
    The answer part of a response, in ZwZ's order (`mm-eval/judge_qwenlm.py`), after dropping thinking blocks.

    1. Thinking: closed `<think>...</think>` blocks are removed; a lone `</think>` (the chat template opened the block)
       drops everything before it; a lone `<think>` (truncated thinking) is removed as a tag only.
    2. `<answer>` tags, in any case and spacing: the content of the **last** non-empty tag, up to its `</answer>` or to
       the end of the response when the tag is not closed. ZwZ takes the first tag (and, unclosed, drops the last
       character); the last one is the model's final word when it quotes the format or revises itself, and the two
       agree on the usual single tag. Only empty tags: `""` (the model used the format and gave nothing). A
       `</answer>` with no opening tag: the last line before it.
    3. Else what follows the last `Answer:` (any case; ZwZ: the first `Answer:`, case-sensitive, prefix included).
    4. Else the last 3 non-empty lines (ZwZ: the last 3 lines).

    Args:
        response (`str`):
            The generated text.

    Returns:
        `str`: The extracted answer, stripped; `""` when the response holds none.
    """
    text = _THINK_BLOCK.sub("", response)
    if re.search(r"</think>", text, re.IGNORECASE):
        text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    text = re.sub(r"<think>", "", text, flags=re.IGNORECASE)

    opens = list(_ANSWER_OPEN.finditer(text))
    if opens:
        contents = [_ANSWER_CLOSE.split(text[match.end() :], maxsplit=1)[0].strip() for match in opens]
        # A nested or repeated opening tag leaves a stray tag in the outer content: drop tags from what is kept.
        contents = [_ANSWER_CLOSE.sub("", _ANSWER_OPEN.sub("", content)).strip() for content in contents]
        return next((content for content in reversed(contents) if content), "")
    closes = list(_ANSWER_CLOSE.finditer(text))
    if closes:
        lines = [line.strip() for line in text[: closes[-1].start()].splitlines() if line.strip()]
        return lines[-1] if lines else ""
    prefixes = list(_ANSWER_PREFIX.finditer(text))
    if prefixes:
        return text[prefixes[-1].end() :].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-3:])


# An isolated letter: not inside a word, an abbreviation ("e.g.", "U.S.") or a hyphenated word ("T-shirt").
_LONE_LETTER = re.compile(r"(?<![\w'.\-])([A-Za-z])(?![\w'\-]|\.[A-Za-z])")
# Phrases that conclude with the chosen letter: "the answer is (B)", "answer: C", "correct option is D", "I choose A".
_CONCLUSIVE = re.compile(
    r"(?:\banswer|\boption|\bchoice)\s*(?:(?:is|would be|should be|will be|must be)\s*[:=]?|[:=])"
    r"\s*(?:option|choice)?\s*"
    r"|\b(?:choose|select|pick)\s+(?:option|choice)?\s*",
    re.IGNORECASE,
)
# Words after which a capital "A" or "I" is an option letter, not the article or the pronoun ("A is correct").
_LETTER_VERBS = {"is", "and", "or", "seems", "appears", "matches", "would"}
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none)\b|n't", re.IGNORECASE)


def _letter_use(text: str, match: re.Match, options: dict[str, str]) -> str | None:
    """The option letter that an isolated letter in `text` stands for, or `None` when it is not used as one."""
    letter, before, after = match.group(1), text[: match.start()], text[match.end() :]
    if letter.upper() not in options:
        return None
    if before.endswith(("(", "[")) and after.startswith((")", "]")):  # "(B)", "(b)", "[C]"
        return letter.upper()
    if letter.islower():  # "b)" or "is b." (a lowercase letter followed by a word is an article, "a", or noise)
        return letter.upper() if re.match(r"\)|[.,;:!?\]]*\s*$", after) else None
    following = re.match(r"\s+([a-z]+)", after)
    if letter in "AI" and following and following.group(1) not in _LETTER_VERBS:
        # "A red car" / "I think": the article or the pronoun, unless the option's own text follows ("A red car" where
        # option A is "red car"). Mid-sentence, a capital "A" is a letter: "the answer is A because ...".
        option = normalize_open(options[letter]).split()
        is_word = letter == "I" or not before.rstrip() or before.rstrip().endswith((".", "!", "?", ":", "\n"))
        if is_word and not (option and normalize_open(after).split()[: len(option)] == option):
            return None
    return letter


def extract_choice(text: str, options: dict[str, str]) -> str | None:
    """
    The option letter that a (possibly verbose) answer picks, or `None` when no rule decides.

    The text is NFKC-normalised (full-width letters and brackets become ASCII) and stripped of markdown emphasis,
    `\\boxed{}` and `\\text{}`. The rules, first decisive one wins:

    1. The whole answer is one letter of `options`, in any case and any brackets: `"B"`, `"(b)"`, `"**C**"`, `"D."`.
    2. A concluding phrase: `"the answer is (B)"`, `"Answer: C"`, `"correct option is D"`, `"I choose A"`. The last one
       wins (`"The answer is A. Wait, the answer is B."` -> B).
    3. The answer opens with a letter marker, `"(B) red"`, `"B. red"`, `"B) red"`, `"B: red"`, `"[B]"` (ZwZ's
       `extract_mcq_option` pattern), and either no other letter is mentioned or the option's own text follows
       (`"C. Building B"` where option C is "Building B").
    4. Exactly one distinct option letter is mentioned (VLMEvalKit `can_infer_option`, whose "A might be a quantifier"
       check is made precise here): `"It is C"`, `"Option D shows the sign"`. Two distinct letters (`"A or B"`,
       `"(A) is wrong, so (C)"` without a concluding phrase) are ambiguous: `None`.
    5. The option text (VLMEvalKit `can_infer_text`): the normalised answer (`normalize_open`) equals exactly one
       option's normalised text, else exactly one option's text occurs in it as whole words (an option contained in
       another found option, "red" in "dark red", yields to it). No containment when the answer negates (`"not"`,
       `"no"`, `"n't"`, ...), since "it is not red" would pick "red".

    Letters count only when isolated: "A" is the article and "I" the pronoun when a lowercase word follows and, for
    "A", it starts a sentence ("A red car", "I think"), unless that option's own text follows; letters inside words,
    abbreviations ("e.g.") or hyphenated words ("T-shirt") never count; lowercase letters count only bracketed
    (`"(b)"`, `"b)"`) or at the very end (`"the answer is b."`). ZwZ instead takes the first `(X)`, else the
    first capital letter followed by `.`, `)` or a space, else the first capital letter: "I think it is B" gives "I".

    Args:
        text (`str`):
            The extracted answer (`extract_answer`).
        options (`dict[str, str]`):
            Option letter (upper case) -> option text. Empty: any letter A-Z counts, and rule 5 is skipped.

    Returns:
        `str | None`: The upper-case option letter, or `None`.
    """
    options = options or dict.fromkeys(string.ascii_uppercase, "")
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\*\*|__|`", "", text).strip()

    bare = re.fullmatch(r"[\s(\[{*]*([A-Za-z])[\s)\]}*.:,;!]*", text)
    if bare and bare.group(1).upper() in options:
        return bare.group(1).upper()

    concluded = None
    for phrase in _CONCLUSIVE.finditer(text):
        start = phrase.end() + (text[phrase.end() : phrase.end() + 1] in ("(", "["))
        match = _LONE_LETTER.match(text, start)
        concluded = (match and _letter_use(text, match, options)) or concluded
    if concluded:
        return concluded

    mentioned = {_letter_use(text, match, options) for match in _LONE_LETTER.finditer(text)} - {None}
    marker = re.match(r"[(\[]?([A-Z])(?:[).:\]]|\s+-\s)", text)
    if marker and marker.group(1) in options:
        # "C. Building B" is C, but "(A) is wrong, so (C)" is reasoning: the marker must be the only letter, or be
        # followed by its own option text.
        letter, rest = marker.group(1), normalize_open(text[marker.end() :]).split()
        option = normalize_open(options[letter]).split()
        if mentioned == {letter} or (option and rest[: len(option)] == option):
            return letter
    if mentioned:
        return mentioned.pop() if len(mentioned) == 1 else None

    answer = normalize_open(text)
    texts = {letter: normalize_open(option) for letter, option in options.items() if normalize_open(option)}
    exact = [letter for letter, option in texts.items() if option == answer]
    if exact:
        return exact[0] if len(exact) == 1 else None
    if _NEGATION.search(text):
        return None
    found = {letter: option for letter, option in texts.items() if _contains(answer, option)}
    found = [
        letter
        for letter, option in found.items()
        if not any(o != option and _contains(o, option) for o in found.values())
    ]
    return found[0] if len(found) == 1 else None


def _contains(text: str, part: str) -> bool:
    """Whether `part` occurs in `text` as whole space-separated words (both normalised)."""
    return f" {part} " in f" {text} "


_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_TENS = {
    word: 10 * value for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
}
_NUMBER_WORDS |= _TENS
# A number (a leading minus only when it is not a hyphen, "5-6"), or a word of letters/digits; the rest is punctuation.
_NUMBER = r"(?:(?<![\w.])-)?\d+(?:\.\d+)?(?:/\d+)?"
_TOKEN = re.compile(rf"{_NUMBER}|[^\W_]+")


def _canonical_number(token: str) -> str:
    """`"2.0"` -> `"2"`, `"0.50"` -> `"0.5"`, `"4/8"` -> `"0.5"`, `"1/3"` -> `"1/3"`."""
    value = Fraction(token)
    if value.denominator == 1:
        return str(value.numerator)
    if 10**30 % value.denominator:  # not a terminating decimal
        return f"{value.numerator}/{value.denominator}"
    return format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")


def normalize_open(text: str) -> str:
    """
    A canonical form of a short open-ended answer (a number, a word, a short phrase), for exact comparison.

    Mirrors `mathruler.grader.grade_answer` on such values (it is what ZwZ tries before its judge): NFKC, lower case,
    `\\text{}` / `\\boxed{}` and `$` dropped, only what follows the last `=` kept (`"count = 3"` -> `"3"`, as MATH's
    normaliser), thousands separators dropped (`"1,000"` -> `"1000"`), numbers compared by value (`"2.0"` -> `"2"`,
    `"0.5"` and `"1/2"` -> `"0.5"`), punctuation, `%` and `°` dropped. Added for words: the articles a/an/the are
    dropped and number words become digits (`"two"` -> `"2"`, `"twenty-one"` -> `"21"`). Units are kept as words
    (`"5cm"` -> `"5 cm"`, different from `"5 m"`), where mathruler deletes some of them ("cm", "meter", "degree", ...).

    Args:
        text (`str`):
            The answer.

    Returns:
        `str`: Space-separated tokens; `""` when nothing is left.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}", r"\1", text).replace("$", "")
    text = text.rsplit("=", 1)[-1]
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    words, previous = [], ""
    for token in _TOKEN.findall(text):
        if token in _ARTICLES:
            continue
        if previous in _TENS and 0 < _NUMBER_WORDS.get(token, 0) < 10:  # "twenty one" -> 21
            words[-1] = str(_TENS[previous] + _NUMBER_WORDS[token])
        elif re.fullmatch(_NUMBER, token):
            words.append(_canonical_number(token))
        else:
            words.append(str(_NUMBER_WORDS.get(token, token)))
        previous = token
    return " ".join(words)


def match_open(prediction: str, reference: str) -> bool:
    """
    Whether a short open-ended prediction states the reference answer.

    True when the normalised forms (`normalize_open`) are equal, or when the reference (at most 3 words) occurs once,
    as whole words, in a prediction at most 3 words longer, and the extra words cannot change the answer: no negation
    ("not", "no", ...), no alternative ("or", "and") and, for a numeric reference, no other number. So `"3 cars"`
    states `"3"` and `"dark red"` states `"red"`, but `"3 or 4"`, `"not red"` and `"red and blue"` do not.

    Args:
        prediction (`str`):
            The extracted answer.
        reference (`str`):
            The benchmark's reference answer.

    Returns:
        `bool`
    """
    predicted, expected = normalize_open(prediction).split(), normalize_open(reference).split()
    if not predicted or not expected:
        return False
    if predicted == expected:
        return True
    if len(expected) > 3 or len(predicted) > len(expected) + 3:
        return False
    n = len(expected)
    spans = [i for i in range(len(predicted) - n + 1) if predicted[i : i + n] == expected]
    if len(spans) != 1:
        return False
    rest = predicted[: spans[0]] + predicted[spans[0] + n :]
    if any(word in {"not", "no", "never", "or", "and", "nor", "neither", "none"} for word in rest):
        return False
    return not (any(_is_number(word) for word in expected) and any(_is_number(word) for word in rest))


def _is_number(token: str) -> bool:
    return re.fullmatch(_NUMBER, token) is not None


def score_item(item: EvalItem, response: str, judge: Callable[[str, str, str], bool] | None = None) -> dict:
    """
    Score one response to a benchmark item.

    Multiple choice: the letter `extract_choice` reads from the extracted answer is compared with the reference letter
    (`"rule_choice"`); no letter is `"no_answer"`. Open-ended: `match_open` decides (`"rule_open"`); when it does not
    accept the answer and a judge is given, the judge decides (`"judge"`); an empty extracted answer is `"no_answer"`
    and the judge is not called. ZwZ runs its judge on every row its rules reject, multiple choice on ZoomBench
    included; here letters are always read by rule.

    Args:
        item ([`~vzero_trl.eval.tasks.EvalItem`]):
            The benchmark item.
        response (`str`):
            The generated text.
        judge (`Callable[[str, str, str], bool]`, *optional*):
            Called as `judge(question, reference, extracted)` for open-ended answers the rules do not accept.

    Returns:
        `dict`: `extracted` (`str`), `choice` (`str | None`, the letter read for multiple choice), `correct` (`bool`)
        and `score_source` (`"rule_choice"`, `"rule_open"`, `"judge"` or `"no_answer"`).
    """
    extracted = extract_answer(response)
    choice = None
    if item.kind == "mcq":
        choice = extract_choice(extracted, item.options) if extracted else None
        correct, source = choice == item.answer.strip().upper(), "rule_choice" if choice else "no_answer"
    elif not extracted:
        correct, source = False, "no_answer"
    elif match_open(extracted, item.answer):
        correct, source = True, "rule_open"
    elif judge is not None:
        correct, source = bool(judge(item.question, item.answer, extracted)), "judge"
    else:
        correct, source = False, "rule_open"
    return {"extracted": extracted, "choice": choice, "correct": bool(correct), "score_source": source}


def _accuracy(records: list[dict]) -> float:
    return 100.0 * sum(bool(record["correct"]) for record in records) / len(records)


def _groups(records: list[dict], key: str) -> dict:
    groups = {}
    for record in records:
        groups.setdefault(record[key], []).append(record)
    return groups


def aggregate(benchmark: str, records: list[dict]) -> dict[str, float]:
    """
    A benchmark's scores from its scored rows, as the benchmark defines them, in percent.

    `"score"` is the number Table 1 reports; the other keys break it down (rows whose field is `None` are left out of
    the breakdown only):

    - `vstar`, `mmstar`: accuracy over all rows (ZwZ `cal_acc.py`; VLMEvalKit), plus one key per `category`.
      lmms-eval's `mmstar` macro-averages its categories instead; ZwZ and VLMEvalKit do not.
    - `hrbench_4k`, `hrbench_8k`: the accuracy of each `group` (HR-Bench's `cycle_category`, one option rotation), then
      the mean over groups (VLMEvalKit `report_acc_hrbench`); it equals the plain accuracy that ZwZ's `cal_acc.py`
      computes only when groups are equal in size (believed so in the released data: 800 rows, 4 rotations of 200).
      Per `category` (`single`, `cross`): the same mean over the groups that hold the category (VLMEvalKit divides by
      all groups, the same when every group holds both categories).
    - `mme_realworld`: accuracy over all rows, plus `Perception` and `Reasoning` by `group` (lmms-eval
      `mme_realworld_aggregate_results`: overall = all correct / all rows).
    - `zoombench`: accuracy over all rows (ZwZ `cal_acc.py`), plus `mcq` and `open` by `kind`.

    Args:
        benchmark (`str`):
            One of `BENCHMARKS`.
        records (`list[dict]`):
            Scored rows with at least `correct`, `category` and `group` (and `kind` for ZoomBench).

    Returns:
        `dict[str, float]`: `"score"` (NaN for no rows) and the breakdown.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}.")
    if not records:
        return {"score": math.nan}
    if benchmark in ("hrbench_4k", "hrbench_8k"):
        cycles = list(_groups(records, "group").values())
        scores = {"score": statistics.fmean(_accuracy(cycle) for cycle in cycles)}
        for category in sorted(_groups(records, "category").keys() - {None}):
            per_cycle = [[r for r in cycle if r["category"] == category] for cycle in cycles]
            scores[category] = statistics.fmean(_accuracy(rows) for rows in per_cycle if rows)
        return scores
    key = {"mme_realworld": "group", "zoombench": "kind"}.get(benchmark, "category")
    breakdown = {name: _accuracy(rows) for name, rows in _groups(records, key).items() if name is not None}
    return {"score": _accuracy(records), **dict(sorted(breakdown.items()))}


def _mean(values: list[float | None]) -> float | None:
    return None if any(value is None for value in values) else statistics.fmean(values)


def table_row(scores: dict[str, float | None]) -> dict[str, float | None]:
    """
    One Table 1 row: the six benchmark scores plus `"perception_avg"` (V*, HR-Bench 4K and 8K, ZoomBench: the "Perc.
    Avg" of the paper's ablations) and `"avg"` (all six, as Table 1), each `None` unless all its inputs are present.

    Args:
        scores (`dict[str, float | None]`):
            Benchmark name -> score in percent; missing or `None` benchmarks are allowed, other keys are ignored.

    Returns:
        `dict[str, float | None]`: The `BENCHMARKS` scores in Table 1 order, then `"perception_avg"` and `"avg"`.
    """
    row = {name: scores.get(name) for name in BENCHMARKS}
    row["perception_avg"] = _mean([row[name] for name in PERCEPTION_BENCHMARKS])
    row["avg"] = _mean([row[name] for name in BENCHMARKS])
    return row
