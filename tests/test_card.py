"""The V-Zero model card: Hub ids are linked, local paths are not, the run's settings are listed, what was saved (an
adapter, a torchvision-free processor) is said, and the quick start runs as written."""

import json
import os
import re
import subprocess
import sys

import pytest

from vzero_trl import VZeroConfig
from vzero_trl.card import build_model_card, duration, hub_id


def test_hub_id(tmp_path):
    assert hub_id("Qwen/Qwen3.5-4B") == "Qwen/Qwen3.5-4B"
    local = tmp_path / "org" / "model"
    local.mkdir(parents=True)
    for not_hub in ("vzero_trl.toy.synthetic", "/abs/path/model", "a/b/c", "", None, str(local)):
        assert hub_id(not_hub) is None


def test_card_links_hub_ids_and_lists_the_run(tmp_path):
    args = VZeroConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        hub_model_id="me/vzero-4b",
        log_ratio_clip=10.0,
    )
    card = str(
        build_model_card(
            args=args,
            model_name="vzero-4b",
            base_model="Qwen/Qwen3.5-4B",
            teacher_model="Qwen/Qwen3.5-27B",
            dataset_name="me/zwz-vzero",
            tags=["v-zero"],
            citation="@misc{x}",
            num_processes=8,
        )
    )
    assert "base_model: Qwen/Qwen3.5-4B" in card
    assert "trained from [Qwen/Qwen3.5-4B](https://huggingface.co/Qwen/Qwen3.5-4B)" in card
    assert "The teacher was [Qwen/Qwen3.5-27B](https://huggingface.co/Qwen/Qwen3.5-27B)." in card
    assert "on [me/zwz-vzero](https://huggingface.co/datasets/me/zwz-vzero)" in card
    assert 'pipeline("image-text-to-text", model="me/vzero-4b")' in card
    # 8 rollouts x 4 accumulation steps x 8 processes = 256 rollouts = 32 prompts of 8
    assert "| `prompts per step` | 32 |" in card and "| `num_processes` | 8 |" in card
    assert "| `log_ratio_clip` | 10.0 |" in card and "| `num_train_epochs` | 3.0 |" in card


def test_card_summarises_the_last_logged_training_step(tmp_path):
    args = VZeroConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8)
    history = [
        {"loss": 0.5, "evidence/weight_mean": 1.0, "step": 10},
        {"loss": 0.25, "distillation/reverse_kl": 0.0123456, "evidence/weight_mean": 0.98765, "step": 20},
        {"eval_loss": 0.3, "step": 20},
        {"train_runtime": 7200.0, "train_loss": 0.4, "step": 20},
    ]
    card = str(
        build_model_card(
            args=args,
            model_name="m",
            base_model=None,
            teacher_model="t",
            dataset_name=None,
            tags=[],
            citation="c",
            log_history=history,
        )
    )
    assert "Values logged at step 20; training took 2.00 h." in card
    assert "| `loss` | 0.25 |" in card and "| `distillation/reverse_kl` | 0.01235 |" in card
    assert "| `evidence/weight_mean` | 0.9877 |" in card and "entropy" not in card
    empty = str(
        build_model_card(
            args=args,
            model_name="m",
            base_model=None,
            teacher_model="t",
            dataset_name=None,
            tags=[],
            citation="c",
            log_history=[],
        )
    )
    assert "Training results" not in empty


def card_for(tmp_path, **overrides) -> str:
    args = VZeroConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8)
    settings = dict(
        args=args, model_name="m", base_model="Qwen/Qwen3.5-4B", teacher_model="t", dataset_name=None, tags=[],
        citation="c",
    )  # fmt: skip
    return str(build_model_card(**{**settings, **overrides}))


def test_training_time_is_shown_in_a_unit_that_fits():
    assert (duration(7200.0), duration(750.0), duration(30.4)) == ("2.00 h", "12.5 min", "30 s")


def test_a_short_run_does_not_show_zero_hours(tmp_path):
    history = [{"loss": 0.5, "step": 2}, {"train_runtime": 12.0, "step": 2}]
    card = card_for(tmp_path, log_history=history)
    assert "training took 12 s." in card and "0.00 h" not in card


def test_the_card_says_when_it_holds_a_lora_adapter(tmp_path):
    assert "LoRA adapter" not in card_for(tmp_path) and "library_name: transformers" in card_for(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    card = card_for(tmp_path)
    assert "library_name: peft" in card and "- lora" in card
    assert "holds a **LoRA adapter**, not full weights: it applies to [Qwen/Qwen3.5-4B]" in card
    assert "pip install peft" in card
    assert "the base model `/models/student`" in card_for(tmp_path, base_model="/models/student")


def test_a_torchvision_free_processor_is_imported_first_in_the_quick_start(tmp_path):
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}))
    assert "import vzero_trl.toy.processors" not in card_for(tmp_path) and "pip install torchvision" in card_for(
        tmp_path
    )
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLImageOnlyProcessor"}))
    quick_start = re.search(r"```python\n(.*?)```", card_for(tmp_path), re.DOTALL).group(1)
    assert quick_start.startswith("import vzero_trl.toy.processors")


@pytest.mark.parametrize("lora", [False, True], ids=["model", "lora_adapter"])
def test_the_quick_start_of_a_trained_model_runs_as_written(launch, tmp_path, lora):
    # On CPU without torchvision, offline: the card's own code, run from the folder above the saved model.
    flags = ["--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"] if lora else []
    launch(tmp_path / "vzero-tiny", "--max_steps", "1", *flags)
    card = (tmp_path / "vzero-tiny" / "README.md").read_text()
    assert ("LoRA adapter" in card) == lora
    quick_start = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert 'pipeline("image-text-to-text", model="vzero-tiny")' in quick_start
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", quick_start], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
