"""The V-Zero model card: Hub ids are linked, local paths are not, and the run's settings are listed."""

from vzero_trl import VZeroConfig
from vzero_trl.card import build_model_card, hub_id


def test_hub_id(tmp_path):
    assert hub_id("Qwen/Qwen3.5-4B") == "Qwen/Qwen3.5-4B"
    local = tmp_path / "org" / "model"
    local.mkdir(parents=True)
    for not_hub in ("vzero_trl.synthetic", "/abs/path/model", "a/b/c", "", None, str(local)):
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
