"""Publishing a trained V-Zero model: the launcher pushes model, processor, card and checkpoints to a Hub-compatible
server (loopback, real clients), and what it pushed loads back."""

import sys

import torch
from helpers import launch_command, run_command
from safetensors.torch import load_file

from vzero_trl.toy.synthetic import make_dataset
from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


def launch(hub, tmp_path, *extra):
    student = ensure_tiny_vlm(tmp_path / "student", **TINY_STUDENT)
    teacher = ensure_tiny_vlm(tmp_path / "teacher", **TINY_TEACHER)
    make_dataset(8).save_to_disk(tmp_path / "data")
    command = launch_command(
        "--config", "configs/demo.yaml",
        "--build_demo_assets", "false",
        "--model_name_or_path", str(student),
        "--teacher_model_name_or_path", str(teacher),
        "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "run"),
        "--max_steps", "4",
        "--save_steps", "2",
        "--per_device_train_batch_size", "8",
        "--max_completion_length", "16",
        "--logging_steps", "1",
        "--push_to_hub",
        "--report_to", "none",
        *extra,
    )  # fmt: skip
    return run_command(command, hub.env(tmp_path / "home"))


def test_push_final_model_and_checkpoints_then_load_them_back(fake_hub, tmp_path):
    launch(fake_hub, tmp_path, "--hub_model_id", "user/vzero-tiny", "--hub_strategy", "checkpoint")
    stored = fake_hub.files("user/vzero-tiny", repo_type="model")
    for name in (
        "model.safetensors",
        "config.json",
        "processor_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
        "last-checkpoint/model.safetensors",
        "last-checkpoint/trainer_state.json",
        "last-checkpoint/vzero_checkpoint.json",  # marked complete before the push: resumable from the Hub too
    ):
        assert name in stored, name
    assert not any(name.startswith("checkpoint-") for name in stored)  # local checkpoint folders stay local
    card = stored["README.md"].decode()
    assert 'pipeline("image-text-to-text", model="user/vzero-tiny")' in card and "**V-Zero**" in card
    assert "pipeline_tag: image-text-to-text" in card and "- v-zero" in card
    assert "Values logged at step 4" in card
    assert b'"global_step": 4' in stored["last-checkpoint/trainer_state.json"]

    dump = tmp_path / "pulled.pt"
    run_command(
        [
            sys.executable,
            "-c",
            (
                "import torch, vzero_trl.toy.processors\n"
                "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
                "model = AutoModelForImageTextToText.from_pretrained('user/vzero-tiny')\n"
                "processor = AutoProcessor.from_pretrained('user/vzero-tiny')\n"
                "assert type(processor).__name__ == 'Qwen3VLImageOnlyProcessor'\n"
                f"torch.save(model.state_dict(), {str(dump)!r})\n"
            ),
        ],
        fake_hub.env(tmp_path / "home2"),
    )
    pulled = torch.load(dump)
    local = load_file(tmp_path / "run" / "model.safetensors")
    assert local.keys() == pulled.keys() and all(torch.equal(local[k], pulled[k]) for k in local)


def test_push_a_lora_adapter_and_load_it_back(fake_hub, tmp_path):
    launch(
        fake_hub,
        tmp_path,
        "--hub_model_id",
        "user/vzero-tiny-lora",
        "--hub_strategy",
        "every_save",
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    )
    stored = fake_hub.files("user/vzero-tiny-lora", repo_type="model")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= stored.keys()
    assert "model.safetensors" not in stored  # an adapter, not a full copy of the student
    assert "**V-Zero**" in stored["README.md"].decode()

    dump = tmp_path / "adapter.pt"
    run_command(
        [
            sys.executable,
            "-c",
            (
                "import torch\n"
                "from peft import PeftModel\n"
                "from transformers import AutoModelForImageTextToText\n"
                f"base = AutoModelForImageTextToText.from_pretrained({str(tmp_path / 'student')!r})\n"
                "model = PeftModel.from_pretrained(base, 'user/vzero-tiny-lora')\n"
                f"torch.save({{k: v for k, v in model.state_dict().items() if 'lora_' in k}}, {str(dump)!r})\n"
            ),
        ],
        fake_hub.env(tmp_path / "home2"),
    )
    pulled = torch.load(dump)
    local = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert len(local) == len(pulled) > 0
    # PEFT names the loaded weights with the adapter name; the values must be the trained ones.
    assert sorted(v.sum().item() for v in local.values()) == sorted(v.sum().item() for v in pulled.values())
    assert any(v.abs().sum() > 0 for k, v in local.items() if "lora_B" in k)  # the adapter was trained
