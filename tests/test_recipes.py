"""Every recipe parses with the training script's own parser (unknown keys rejected), and every accelerate config loads."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file


ROOT = Path(__file__).parent.parent
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


# GPU recipes ask for bf16, which TrainingArguments refuses without a GPU unless told it runs on CPU; every other
# field is still parsed and validated.
CPU_OVERRIDE = [] if torch.cuda.is_available() else ["--use_cpu", "true"]


def test_there_are_recipes_for_the_paper_and_its_ablations():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in RECIPES}
    assert {
        "demo.yaml",
        "qwen3.5-4b/vzero_paper.yaml",
        "qwen3.5-4b/vzero_official.yaml",
        "qwen3.5-4b/vzero_no_gate.yaml",
        "qwen3.5-4b/vzero_random_evidence.yaml",
        "qwen3.5-4b/vzero_teacher_9b.yaml",
        "qwen3.5-4b/vzero_g4.yaml",
        "qwen3.5-4b/vzero_self.yaml",
        "qwen3.5-4b/vision_opd.yaml",
        "qwen3.5-4b/vzero_served_teacher.yaml",
    } <= names
    assert {p.stem for p in ACCELERATE} == {"cpu", "single_gpu", "ddp", "zero2", "zero3", "fsdp2"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_recipe_parses_and_starts_with_its_command(script, recipe, tmp_path):
    text = recipe.read_text()
    command = re.search(r"^#\s+(accelerate launch .*)$", text, re.MULTILINE)
    assert command and text.index(command.group(0)) < text.index("\n\n"), "the header must give the launch command"
    assert f"--config configs/{recipe.relative_to(ROOT / 'configs').as_posix()}" in command.group(1)
    # output_dir is redirected so that parsing creates nothing in the repository
    script_args, training_args, model_args = script.make_parser().parse_args_and_config(
        ["--config", str(recipe), "--output_dir", str(tmp_path), *CPU_OVERRIDE]
    )
    values = yaml.safe_load(text)
    assert model_args.model_name_or_path == values["model_name_or_path"]
    assert training_args.teacher_model_name_or_path == values.get("teacher_model_name_or_path")
    assert training_args.teacher_source == values.get("teacher_source", "external")
    assert training_args.num_generations == values["num_generations"]
    assert training_args.evidence_alpha == values["evidence_alpha"]
    assert script_args.dataset_name == values["dataset_name"]


def test_paper_recipes_hold_the_paper_settings(script, tmp_path):
    def parse(name):
        return script.make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs" / "qwen3.5-4b" / name), "--output_dir", str(tmp_path), *CPU_OVERRIDE]
        )

    script_args, paper, model = parse("vzero_paper.yaml")
    assert (model.model_name_or_path, paper.teacher_model_name_or_path) == ("Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-27B")
    assert (paper.num_generations, paper.learning_rate, paper.max_completion_length) == (8, 1e-6, 2048)
    assert (paper.evidence_alpha, paper.evidence_weight_min, paper.evidence_weight_max) == (1.0, 0.0, 2.0)
    assert paper.chat_template_kwargs == {"enable_thinking": False} and paper.loss_aggregation == "sequence"
    assert (script_args.image_min_pixels, script_args.image_max_pixels) == (65536, 16777216)
    _, official, _ = parse("vzero_official.yaml")
    assert (official.evidence_alpha, official.loss_aggregation, official.log_ratio_clip) == (0.5, "token", 10.0)
    assert parse("vzero_no_gate.yaml")[1].evidence_alpha == 0.0
    assert parse("vzero_random_evidence.yaml")[1].crop_column == "random_crop"
    assert parse("vzero_teacher_9b.yaml")[1].teacher_model_name_or_path == "Qwen/Qwen3.5-9B"
    g4 = parse("vzero_g4.yaml")[1]
    # same 16 prompts per step on 8 GPUs: 8 x 2 x 4 / 4 = 16
    assert g4.num_generations == 4 and 8 * g4.per_device_train_batch_size * g4.gradient_accumulation_steps // 4 == 16


def test_unknown_recipe_keys_are_rejected(script, tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text((ROOT / "configs" / "demo.yaml").read_text() + "evidence_gama: 2.0\n")
    with pytest.raises(ValueError, match="evidence_gama"):
        script.make_parser().parse_args_and_config(["--config", str(recipe)])


def test_command_line_overrides_the_recipe(script, tmp_path):
    _, args, _ = script.make_parser().parse_args_and_config(
        ["--config", str(ROOT / "configs" / "demo.yaml"), "--evidence_alpha", "0.5", "--output_dir", str(tmp_path)]
    )
    assert args.evidence_alpha == 0.5


@pytest.mark.parametrize("config", ACCELERATE, ids=lambda p: p.stem)
def test_accelerate_config_loads(config):
    loaded = load_config_from_file(str(config))
    expected = {
        "cpu": ("NO", 1),
        "single_gpu": ("NO", 1),
        "ddp": ("MULTI_GPU", 8),
        "zero2": ("DEEPSPEED", 8),
        "zero3": ("DEEPSPEED", 8),
        "fsdp2": ("FSDP", 8),
    }[config.stem]
    assert (loaded.distributed_type.value, loaded.num_processes) == expected
    if config.stem.startswith("zero"):
        assert loaded.deepspeed_config["zero_stage"] == int(config.stem[-1])
    if config.stem == "fsdp2":
        assert loaded.fsdp_config["fsdp_version"] == 2
    assert f"--config_file configs/accelerate/{config.name}" in config.read_text().splitlines()[1]


def test_a_temperature_other_than_one_is_rejected_with_the_fix(script, tmp_path):
    # The sampled-token loss estimates the reverse KL of the distribution the rollouts come from: the student's own.
    with pytest.raises(ValueError, match=r"`temperature` must be 1.0, got 0.7.*Remove `temperature`"):
        script.make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs" / "demo.yaml"), "--output_dir", str(tmp_path), "--temperature", "0.7"]
        )


def test_the_demo_launch_gives_accelerate_every_setting(tmp_path):
    # Without a config file, `accelerate launch` warns on every run that num_processes was set to 0 (and more).
    demo = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert "launch --config_file configs/accelerate/cpu.yaml scripts/vzero.py --config configs/demo.yaml" in demo
    (tmp_path / "hello.py").write_text("print('hello')\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu.yaml"]
    result = subprocess.run(
        [*command, str(tmp_path / "hello.py")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout == "hello\n"
    assert "were not passed" not in result.stderr and "num_processes" not in result.stderr


def test_the_tracking_project_defaults_to_vzero(script, tmp_path):
    recipe = ["--config", str(ROOT / "configs" / "demo.yaml"), "--output_dir", str(tmp_path)]
    assert script.make_parser().parse_args_and_config(recipe)[1].project == "vzero"
    assert script.make_parser().parse_args_and_config([*recipe, "--project", "mine"])[1].project == "mine"


def test_torchvision_is_declared_where_real_models_run_and_kept_off_the_cpu_setup():
    # Real Qwen3.5 processors need torchvision ("Qwen3VLVideoProcessor requires the Torchvision library"); the CPU
    # test set-up (`make install`: the `test` extra) must not get it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(r.startswith("torchvision") for r in extras["gpu"]) and any(
        r.startswith("torchvision") for r in extras["vllm"]
    )
    assert not any(r.startswith("torchvision") for r in [*project["dependencies"], *extras["test"]])
    makefile = (ROOT / "Makefile").read_text()
    assert "EXTRAS ?= test\n" in makefile and 'pip install --quiet -e ".[$(EXTRAS)]"' in makefile

    # vzero_trl is not on PyPI: every install command in the docs installs from the clone.
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[gpu,vllm,deepspeed]"' in readme
    documents = [
        readme,
        *(p.read_text() for p in [*ACCELERATE, *(ROOT / "vzero_trl").glob("*.py"), *(ROOT / "scripts").glob("*.py")]),
    ]
    assert not any('pip install "vzero_trl' in text or "pip install vzero_trl[" in text for text in documents)


def test_self_teacher_recipes_hold_their_settings(script, tmp_path):
    def parse(name):
        return script.make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs" / "qwen3.5-4b" / name), "--output_dir", str(tmp_path), *CPU_OVERRIDE]
        )

    # Vision-OPD's published settings (scripts/run_vision_opd.sh): EMA 0.05, crop-only teacher, top-100 JSD with
    # alpha/beta 0.5, token-level importance ratios clipped at 2, lr 2e-6, 96 prompts x 8 rollouts, 1,024 tokens.
    _, opd, model = parse("vision_opd.yaml")
    assert model.model_name_or_path == "Qwen/Qwen3.5-4B" and opd.teacher_model_name_or_path is None
    assert (opd.teacher_source, opd.teacher_ema_rate, opd.teacher_view) == ("ema", 0.05, "crop_only")
    assert (opd.teacher_crop_only_prefix, opd.teacher_crop_only_suffix) == ("", "")
    assert (opd.loss_type, opd.beta, opd.loss_top_k, opd.rollout_importance_clip) == ("full_reverse_kl", 0.5, 100, 2.0)
    assert (opd.learning_rate, opd.num_generations, opd.max_completion_length) == (2e-6, 8, 1024)
    prompts_per_step = 8 * opd.per_device_train_batch_size * opd.gradient_accumulation_steps // opd.num_generations
    assert prompts_per_step == 96 and opd.evidence_alpha == 0.0 and opd.use_vllm
    assert "configs/accelerate/ddp.yaml" in (ROOT / "configs" / "qwen3.5-4b" / "vision_opd.yaml").read_text()

    # V-Zero's gate with a frozen self-teacher on one GPU, 16 prompts x 8 per step as the paper recipe
    _, own, _ = parse("vzero_self.yaml")
    _, paper, _ = parse("vzero_paper.yaml")
    assert (own.teacher_source, own.teacher_model_name_or_path, own.teacher_view) == ("frozen", None, "full_and_crop")
    assert (own.evidence_alpha, own.evidence_weight_min, own.evidence_weight_max) == (1.0, 0.0, 2.0)
    assert own.per_device_train_batch_size * own.gradient_accumulation_steps == 8 * (
        paper.per_device_train_batch_size * paper.gradient_accumulation_steps
    )
    assert (own.learning_rate, own.loss_type, own.max_completion_length) == (
        paper.learning_rate,
        "sampled_token",
        2048,
    )
    assert "configs/accelerate/single_gpu.yaml" in (ROOT / "configs" / "qwen3.5-4b" / "vzero_self.yaml").read_text()


def test_the_served_teacher_recipe_is_the_paper_recipe_with_a_served_teacher(script, tmp_path):
    def parse(name):
        return script.make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs" / "qwen3.5-4b" / name), "--output_dir", str(tmp_path), *CPU_OVERRIDE]
        )

    served_script, served, served_model = parse("vzero_served_teacher.yaml")
    paper_script, paper, paper_model = parse("vzero_paper.yaml")
    assert served.teacher_server_urls == ["http://localhost:8001", "http://localhost:8002"]
    assert (served.teacher_source, served.teacher_model_name_or_path) == ("external", "Qwen/Qwen3.5-27B")
    assert served.teacher_model_init_kwargs is None  # nothing is loaded
    assert (served.teacher_server_timeout, served.teacher_server_retries, served.teacher_server_backoff) == (120, 3, 1)
    # 4 training GPUs x 4 x 8 = 8 GPUs x 4 x 4 = 128 rollouts, 16 prompts x G 8, per optimizer step
    assert 4 * served.per_device_train_batch_size * served.gradient_accumulation_steps == 8 * (
        paper.per_device_train_batch_size * paper.gradient_accumulation_steps
    )
    same = [
        "num_generations", "max_completion_length", "learning_rate", "lr_scheduler_type", "weight_decay",
        "max_grad_norm", "evidence_alpha", "evidence_gamma", "evidence_weight_min", "evidence_weight_max",
        "evidence_eps", "evidence_std", "crop_column", "negative_crop_column", "loss_type", "loss_aggregation",
        "chat_template_kwargs", "temperature", "use_vllm", "vllm_mode", "max_steps", "seed", "student_scoring",
    ]  # fmt: skip
    assert {key: getattr(served, key) for key in same} == {key: getattr(paper, key) for key in same}
    assert served_model.model_name_or_path == paper_model.model_name_or_path == "Qwen/Qwen3.5-4B"
    assert (served_script.image_min_pixels, served_script.image_max_pixels) == (65536, 16777216)
    assert served_script.dataset_name == paper_script.dataset_name
    header = (ROOT / "configs" / "qwen3.5-4b" / "vzero_served_teacher.yaml").read_text().split("\n\n")[0]
    assert "--config_file configs/accelerate/zero2.yaml --num_processes 4" in header
