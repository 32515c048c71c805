"""The miniature reproduction's machinery: teaching rows, next-token measurements, cells, paired statistics, the pilot
rule and the refusal of runs made with other settings (fast: no training beyond a few forward passes)."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForImageTextToText

from vzero_trl.mini.measure import encode, option_probs, view_messages
from vzero_trl.mini.pretrain import DRIFT_LOSS_TOKENS, WORLD_PAIRS, AnswerCollator, teaching_rows
from vzero_trl.mini.reproduce import (
    PILOT_PAIRS,
    WORLD_SETTINGS,
    choose_learning_rate,
    learning_check_thresholds,
    markdown_table,
    plan,
    reproduce,
    summarize,
    world_settings,
)
from vzero_trl.mini.stats import interval, paired_difference, plus_minus
from vzero_trl.mini.variants import BASELINE, CORE_VARIANTS, VARIANTS
from vzero_trl.mini.world import LETTERS, PRIOR_LETTER, make_rows
from vzero_trl.processing import load_processor


def test_teaching_rows_draw_the_drift_and_prior_shares_and_are_deterministic():
    rows = [{"answer": LETTERS[i % 4], "id": i} for i in range(2000)]
    drift = teaching_rows(rows, WORLD_PAIRS["drift"].teacher, seed=0)
    assert drift == teaching_rows(rows, WORLD_PAIRS["drift"].teacher, seed=0)
    drifted = [r for r in drift if r["loss_tokens"] is not None]
    assert all(r["taught"] != r["answer"] and r["loss_tokens"] == DRIFT_LOSS_TOKENS for r in drifted)
    assert 0.27 <= len(drifted) / len(rows) <= 0.33  # drift_share 0.3
    assert all(r["taught"] == r["answer"] for r in drift if r["loss_tokens"] is None)
    prior = teaching_rows(rows, WORLD_PAIRS["prior"].teacher, seed=0)
    assert all(r["loss_tokens"] is None for r in prior)
    moved = [r for r in prior if r["taught"] != r["answer"]]
    assert all(r["taught"] == PRIOR_LETTER for r in moved)
    assert 0.20 <= len(moved) / len(rows) <= 0.25  # 0.3 of the rows, less the quarter whose answer is the prior
    student = teaching_rows(rows, WORLD_PAIRS["drift"].student, seed=0)
    assert all(r["taught"] == r["answer"] and r["loss_tokens"] is None for r in student)
    assert teaching_rows(rows, WORLD_PAIRS["drift"].teacher, seed=1) != drift


def test_a_drifted_row_carries_the_loss_on_its_letter_and_what_follows_only(tiny_models):
    _, teacher_dir = tiny_models
    processor = load_processor(teacher_dir, padding_side="left")
    rows = make_rows(2, split="eval")
    wrong = next(letter for letter in LETTERS if letter != rows[0]["answer"])
    taught = [
        {**rows[0], "taught": wrong, "loss_tokens": DRIFT_LOSS_TOKENS},
        {**rows[1], "taught": rows[1]["answer"], "loss_tokens": None},
    ]
    batch = AnswerCollator(processor, "crop", "drift")(taught)
    tokenizer = processor.tokenizer
    kept = [batch["labels"][i][batch["labels"][i] != -100].tolist() for i in range(2)]
    assert tokenizer.decode(kept[0]) == f" {wrong}.<|im_end|>"
    assert tokenizer.decode(kept[1]).startswith("The star is ")  # a gold row: the whole answer
    assert tokenizer.decode(kept[1]).endswith(f"so the answer is {rows[1]['answer']}.<|im_end|>")


def test_option_probs_of_a_ragged_batch_equal_one_row_at_a_time(tiny_models):
    student_dir, _ = tiny_models
    processor = load_processor(student_dir, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(student_dir, dtype=torch.float32)
    rows = make_rows(3, split="eval")
    messages = view_messages(rows, "student")
    prefixes = ["The answer is", "The star is red, so the answer is", "The star is"]
    options = [" A", " B", " C", " D"]
    batched = option_probs(model, processor, messages, prefixes, options)
    assert batched.shape == (3, 4)
    ids = [processor.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
    for i in range(3):
        prefix = processor.tokenizer(prefixes[i], add_special_tokens=False)["input_ids"]
        inputs = encode(processor, messages[i : i + 1], [prefix])
        inputs.pop("labels")
        with torch.no_grad():
            probs = model(**inputs).logits[0, -1].softmax(-1)[ids]
        torch.testing.assert_close(batched[i], probs, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="one"):
        option_probs(model, processor, messages, prefixes, [" answer is"])


def test_paired_difference_by_hand():
    values = {(0, 0): 0.50, (0, 1): 0.60, (1, 0): 0.40, (1, 1): 0.45, (2, 0): 0.9}
    baseline = {(0, 0): 0.40, (0, 1): 0.40, (1, 0): 0.45, (1, 1): 0.45, (3, 0): 0.1}
    d = paired_difference(values, baseline)
    diffs = [0.10, 0.20, -0.05, 0.0]  # the four cells both have
    assert d["n"] == 4 and d["mean"] == pytest.approx(sum(diffs) / 4)
    sd = math.sqrt(sum((x - 0.0625) ** 2 for x in diffs) / 3)
    assert d["sd"] == pytest.approx(sd) and d["ci95"] == pytest.approx(3.182 * sd / 2)
    # By pair: pair 0 averages +0.15, pair 1 -0.025; an interval over two pairs.
    assert d["by_pair"]["n"] == 2 and d["by_pair"]["mean"] == pytest.approx(0.0625)
    assert d["by_pair"]["ci95"] == pytest.approx(12.706 * math.sqrt(2 * 0.0875**2) / math.sqrt(2))
    assert d["cells"] == pytest.approx({"0/0": 0.1, "0/1": 0.2, "1/0": -0.05, "1/1": 0.0})
    assert interval([])["n"] == 0 and math.isnan(interval([0.3])["sd"])


def _run(variant, pair, seed, before, after, curve=None, lr=3e-4, auc=0.9):
    points = curve or [before, after]
    return {
        "world": "letter",
        "variant": variant,
        "pair_seed": pair,
        "run_seed": seed,
        "learning_rate": lr,
        "before": {"p_gold": before, "log_p_gold": math.log(before), "accuracy": before},
        "after": {"p_gold": after, "log_p_gold": math.log(after), "accuracy": after},
        "curve": [{"step": 20 * i, "p_gold": p} for i, p in enumerate(points)],
        "gates": {
            "gate_correct": 1.5,
            "gate_wrong": 0.5,
            "gate_auc": auc,
            "mixed_group_frac": 0.7,
            "rollout_accuracy": 0.6,
        },
        "gate_values": {"correct": [1.4, 1.6], "wrong": [0.5]},
        "seconds": 60.0,
    }


def test_the_pilot_rule_takes_the_steadiest_rising_rate_and_never_a_falling_one():
    runs = [
        _run(BASELINE, 100, 0, 0.4, 0.45, [0.4, 0.42, 0.45], lr=1e-4),
        _run(BASELINE, 101, 0, 0.4, 0.44, [0.4, 0.43, 0.44], lr=1e-4),
        # Rises on average but one cell gains nothing: mean 0.05, sd 0.071 -> bound -0.02.
        _run(BASELINE, 100, 0, 0.4, 0.50, [0.4, 0.45, 0.50], lr=3e-4),
        _run(BASELINE, 101, 0, 0.4, 0.40, [0.4, 0.41, 0.40], lr=3e-4),
        # The largest gain, but its mean falls at the second check.
        _run(BASELINE, 100, 0, 0.4, 0.60, [0.4, 0.7, 0.6], lr=1e-3),
        _run(BASELINE, 101, 0, 0.4, 0.60, [0.4, 0.7, 0.6], lr=1e-3),
    ]
    result = choose_learning_rate(runs)
    assert result["learning_rate"] == 1e-4
    assert result["rising"] == [1e-4, 3e-4]
    assert result["by_rate"]["0.0003"]["gain_sd"] == pytest.approx(0.1 / math.sqrt(2))
    # With no rate rising at every check, the largest mean gain.
    assert choose_learning_rate(runs[4:] + runs[:0])["learning_rate"] == 1e-3


def test_summarize_pairs_each_variant_with_plain_opd_in_the_same_cell():
    runs = [
        _run("vzero", 0, 0, 0.4, 0.50),
        _run("vzero", 0, 1, 0.4, 0.46),
        _run("vzero", 1, 0, 0.3, 0.32),
        _run(BASELINE, 0, 0, 0.4, 0.45),
        _run(BASELINE, 0, 1, 0.4, 0.47),
        _run(BASELINE, 1, 0, 0.3, 0.36),
    ]
    record = {
        "teacher": {v: {"accuracy": 1.0} for v in ("crop", "negative_crop", "random_crop")},
        "student": {"student": {"accuracy": 0.7, "p_gold": 0.4}},
    }
    summary = summarize(runs, {("letter", 0): record, ("letter", 1): record})
    vzero = summary["letter"]["vzero"]
    assert vzero["cells"] == ["0/0", "0/1", "1/0"]
    assert vzero["p_gold_vs_baseline"]["mean"] == pytest.approx((0.05 - 0.01 - 0.04) / 3)
    assert vzero["p_gold_vs_baseline"]["by_pair"]["mean"] == pytest.approx((0.02 - 0.04) / 2)
    assert vzero["p_gold_gain"]["mean"] == pytest.approx((0.10 + 0.06 + 0.02) / 3)
    assert vzero["log_p_gold_vs_baseline"]["mean"] == pytest.approx(
        (math.log(0.50 / 0.45) + math.log(0.46 / 0.47) + math.log(0.32 / 0.36)) / 3
    )
    assert "p_gold_vs_baseline" not in summary["letter"][BASELINE]
    assert summary["letter"]["pairs"] == 2
    table = markdown_table(summary)
    assert "| letter | V-Zero (alpha 1, w in [0, 2]) | 3 | 42.7 ± " in table
    assert "| letter | Plain OPD (no gate) | 3 | 42.7 ± " in table and "n/a (no gate)" in table


def test_the_grid_runs_core_variants_in_every_cell_and_the_others_in_the_first_seeds_cells():
    cells = plan(("letter",), tuple(VARIANTS), (0, 1, 2, 3, 4), (0, 1))
    for variant in CORE_VARIANTS:
        assert sum(v == variant for _, v, _, _ in cells) == 10
    for variant in set(VARIANTS) - set(CORE_VARIANTS):
        assert sorted((p, s) for _, v, p, s in cells if v == variant) == [(p, 0) for p in range(5)]


def test_runs_made_with_other_settings_are_refused_before_anything_runs(tmp_path):
    stored = {"letter": world_settings("letter", replace(WORLD_SETTINGS["letter"]))}
    assert stored["letter"] == json.loads(json.dumps(stored["letter"]))  # tuples are stored as lists already
    changed = dict(stored["letter"], **{"run.learning_rate": 0.123, "pair.teacher.steps": 7})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "settings.json").write_text(json.dumps({"letter": changed}))
    with pytest.raises(ValueError, match=r"pair.teacher.steps: 7 -> 150; run.learning_rate: 0.123 -> .*--overwrite"):
        reproduce(tmp_path, worlds=("letter",))
    with pytest.raises(ValueError, match="chose the learning rate"):
        reproduce(tmp_path / "other", worlds=("letter",), pair_seeds=(PILOT_PAIRS[0],))
    with pytest.raises(ValueError, match="Unknown variant"):
        reproduce(tmp_path / "other", variants=("vzero", "typo"))
    assert not (tmp_path / "other").exists()


def test_the_demo_recipe_is_the_reproductions_letter_world_v_zero_setting():
    # The demo prints its run beside the reproduction's interval for the letter world's V-Zero cells: that is only
    # meaningful while both train with the same settings.
    recipe = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo.yaml").read_text())
    s = WORLD_SETTINGS["letter"]
    assert recipe["max_steps"] == s.steps and recipe["learning_rate"] == s.learning_rate
    assert recipe["num_generations"] == s.num_generations
    assert recipe["per_device_train_batch_size"] == s.prompts_per_step * s.num_generations
    assert recipe["max_completion_length"] == s.max_completion_length
    assert recipe["demo_num_examples"] == s.steps * s.prompts_per_step  # the same prompts in the same order
    assert (
        recipe["evidence_alpha"] == VARIANTS["vzero"]["evidence_alpha"] and recipe["lr_scheduler_type"] == "constant"
    )
    assert (recipe["loss_type"], recipe["loss_aggregation"]) == ("sampled_token", "sequence")
    assert (recipe["evidence_weight_min"], recipe["evidence_weight_max"]) == (0.0, 2.0)
    assert recipe["seed"] == 0 and recipe["save_steps"] == s.eval_every


def test_learning_check_thresholds_sit_three_sd_below_the_cells_mean():
    entry = {
        "p_gold_gain": interval([0.02, 0.04, 0.06]),  # mean 0.04, sd 0.02
        "gate_auc": interval([0.9, 0.9, 0.9]),  # sd 0: the threshold is the mean itself
        "gate_gap": interval([1.0, 2.0]),  # mean 1.5, sd 0.7071
    }
    check = learning_check_thresholds(entry)
    assert check["min_p_gold_gain"] == pytest.approx(0.04 - 3 * 0.02)
    assert check["min_gate_auc"] == pytest.approx(0.9)
    assert check["min_gate_gap"] == pytest.approx(1.5 - 3 * math.sqrt(0.5))


def test_a_report_of_a_growing_grid_uses_the_finished_runs_and_lists_the_missing_ones(tmp_path):
    with pytest.raises(ValueError, match="No finished run"):
        reproduce(tmp_path, worlds=("letter",), pair_seeds=(0,), run_missing=False)
    cell = tmp_path / "runs" / "letter" / "pair0-seed0"
    cell.mkdir(parents=True)
    for variant, after in (("vzero", 0.45), (BASELINE, 0.42)):
        (cell / f"{variant}.json").write_text(json.dumps(_run(variant, 0, 0, 0.40, after)))
    summary = reproduce(
        tmp_path,
        worlds=("letter",),
        pair_seeds=(0,),
        run_seeds=(0, 1),
        cache_dir=tmp_path / "models",
        run_missing=False,
    )  # pair seed 0 of the letter world is the shipped pair: copied, not trained
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["missing"] == [
        "letter/pair0-seed0/wmin1",
        "letter/pair0-seed1/vzero",
        "letter/pair0-seed1/no_gate",
        "letter/pair0-seed1/wmin1",
    ]
    assert summary["letter"]["vzero"]["p_gold_vs_baseline"]["mean"] == pytest.approx(0.03)
    assert "Not run yet (4)" in (tmp_path / "results.md").read_text()
    assert not list((tmp_path / "runs" / "letter").glob("pair0-seed1*"))  # nothing was trained


def test_an_interval_is_written_as_mean_plus_minus_its_half_width():
    stat = {"mean": 0.0123, "ci95": 0.004, "sd": 0.006, "n": 10}
    assert plus_minus(stat, 100, 1, sign=True) == "+1.2 ± 0.4"
    assert plus_minus(stat) == "0.012 ± 0.004"
    assert plus_minus({**stat, "mean": -0.0123}, 100, 1, sign=True) == "-1.2 ± 0.4"
    assert plus_minus({**stat, "n": 1}, 100, 1) == "1.2"  # one cell: no interval
    assert plus_minus({**stat, "n": 0}) == "n/a"


def test_a_sensitivity_run_records_its_rate_and_refuses_the_rules_rate_in_its_folder(tmp_path):
    cell = tmp_path / "runs" / "letter" / "pair0-seed0"
    cell.mkdir(parents=True)
    for variant, after in (("vzero", 0.45), (BASELINE, 0.42)):
        (cell / f"{variant}.json").write_text(json.dumps(_run(variant, 0, 0, 0.40, after)))
    kwargs = dict(worlds=("letter",), pair_seeds=(0,), cache_dir=tmp_path / "models", run_missing=False)
    reproduce(tmp_path, learning_rate=3e-3, **kwargs)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["letter"]["run.learning_rate"] == 3e-3
    assert not (tmp_path / "reference.json").exists()  # the learning check's thresholds come from the rule's rate
    rule = WORLD_SETTINGS["letter"].learning_rate
    with pytest.raises(ValueError, match=rf"run.learning_rate: 0.003 -> {rule}"):
        reproduce(tmp_path, **kwargs)
