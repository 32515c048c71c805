"""VZeroConfig validation: every bad setting fails at construction, naming the field, the value and the fix."""

import pytest
import yaml
from trl import TrlParser

from vzero_trl import VZeroConfig
from vzero_trl.config import TEACHER_CROP_PREFIX, TEACHER_CROP_SUFFIX


def config(**overrides):
    settings = dict(output_dir="out", use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=8)
    settings.update(overrides)
    return VZeroConfig(**settings)


def test_defaults_are_the_paper():
    args = config()
    assert args.num_generations == 8 and args.num_generations_eval == 8
    assert (args.evidence_alpha, args.evidence_gamma, args.evidence_eps) == (1.0, 1.0, 1e-6)
    assert (args.evidence_weight_min, args.evidence_weight_max) == (0.0, 2.0)
    assert (args.loss_type, args.loss_aggregation, args.log_ratio_clip) == ("sampled_token", "sequence", None)
    assert (args.crop_column, args.negative_crop_column) == ("crop", "negative_crop")
    assert args.beta == 1.0 and args.learning_rate == 1e-6 and args.temperature == 1.0
    assert args.project == "vzero"  # the tracking project (transformers' default is "huggingface")
    sentence = TEACHER_CROP_PREFIX + "<crop>" + TEACHER_CROP_SUFFIX
    assert sentence == (
        "\nThe next image is a cropped view of the target image from the original image: <crop>. Use the crop as "
        "focused visual evidence for the relevant object or region, while keeping the original image as context."
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            dict(per_device_train_batch_size=6),
            r"per_device_train_batch_size \(6\) x num_processes \(1\) x "
            r"gradient_accumulation_steps \(1\) = 6 rollouts, must be a multiple of "
            r"num_generations \(8\)",
        ),
        (dict(per_device_train_batch_size=2, gradient_accumulation_steps=3, num_generations=4), r"= 6 rollouts"),
        (
            dict(eval_strategy="steps", per_device_eval_batch_size=6),
            r"per_device_eval_batch_size \(6\).*num_generations_eval \(8\)",
        ),
        (dict(num_generations=0), r"`num_generations` must be >= 1, got 0"),
        (dict(num_generations=1, per_device_train_batch_size=1), r"at least 2 per prompt.*evidence_alpha=0"),
        (dict(evidence_alpha=-0.5), r"`evidence_alpha` must be >= 0, got -0.5"),
        (dict(evidence_gamma=-1.0), r"`evidence_gamma` must be >= 0"),
        (dict(evidence_weight_min=1.5), r"`evidence_weight_min` must be in \[0, 1\], got 1.5.*The paper uses 0 and 2"),
        (dict(evidence_weight_max=0.5), r"`evidence_weight_max` must be >= 1, got 0.5"),
        (dict(evidence_weight_min=-0.1), r"`evidence_weight_min` must be in \[0, 1\], got -0.1"),
        (dict(evidence_eps=0.0), r"`evidence_eps` must be > 0, got 0.0"),
        (dict(evidence_std="unbiased"), r"`evidence_std` must be one of 'population', 'sample', got 'unbiased'"),
        (dict(loss_type="kl"), r"`loss_type` must be one of 'sampled_token', 'full_reverse_kl', got 'kl'"),
        (dict(loss_aggregation="batch"), r"`loss_aggregation` must be one of"),
        (dict(log_ratio_clip=0.0), r"`log_ratio_clip` must be > 0"),
        (dict(log_ratio_clip=10.0, loss_type="full_reverse_kl"), r"only applies to loss_type='sampled_token'"),
        (dict(beta=0.5), r"`beta` must be 1.0 with it, got 0.5"),
        (dict(beta=0.0, loss_type="full_reverse_kl"), r"`beta` must be in \(0, 1\]"),
        (dict(loss_top_k=100), r"needs loss_type='full_reverse_kl'"),
        (dict(loss_top_k=0, loss_type="full_reverse_kl"), r"`loss_top_k` must be >= 1, got 0"),
        (dict(teacher_source="copy"), r"`teacher_source` must be one of 'external', 'frozen', 'ema', got 'copy'"),
        (dict(teacher_ema_rate=0.0), r"`teacher_ema_rate` must be in \(0, 1\], got 0.0"),
        (dict(teacher_view="crop"), r"`teacher_view` must be one of 'full_and_crop', 'crop_only'"),
        (dict(offload_teacher=True, teacher_source="frozen"), r"`offload_teacher` applies to an external teacher"),
        (dict(offload_teacher=True, loss_type="full_reverse_kl"), r"`offload_teacher` applies to an external teacher"),
        (dict(negative_crop_column="crop"), r"both 'crop'"),
        (dict(crop_column=""), r"`crop_column` \(''\)"),
        (dict(teacher_batch_size=0), r"`teacher_batch_size` must be >= 1"),
        (dict(auto_find_batch_size=True), r"`auto_find_batch_size` is not supported"),
    ],
)
def test_bad_settings_fail_early_with_the_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


@pytest.mark.parametrize("field", ["teacher_scoring", "student_scoring"])
def test_scoring_strategies_and_the_old_name_naive(field, tmp_path):
    assert getattr(config(), field) == "shared_prefix"
    assert getattr(config(**{field: "per_sequence"}), field) == "per_sequence"
    assert getattr(config(**{field: "naive"}), field) == "per_sequence"  # the old name, still accepted
    (args,) = TrlParser((VZeroConfig,)).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--use_cpu", "true", f"--{field}", "naive"]
    )
    assert getattr(args, field) == "per_sequence"
    with pytest.raises(ValueError, match=f"`{field}` must be one of 'shared_prefix', 'per_sequence', got 'batched'"):
        config(**{field: "batched"})


def test_crop_columns_read_the_negative_crop_only_with_gating_on():
    assert config().crop_columns == ["crop", "negative_crop"]
    assert config(crop_column="zoom", negative_crop_column="far").crop_columns == ["zoom", "far"]
    assert config(evidence_alpha=0.0).crop_columns == ["crop"]


def test_reentrant_checkpointing():
    assert not config().reentrant_checkpointing  # TRL's default: non-reentrant activation checkpointing
    assert config(activation_checkpointing_kwargs={"use_reentrant": True}).reentrant_checkpointing
    assert config(gradient_checkpointing_kwargs={"use_reentrant": True}).reentrant_checkpointing
    off = config(activation_checkpointing=False, activation_checkpointing_kwargs={"use_reentrant": True})
    assert not off.reentrant_checkpointing


def test_gating_off_allows_single_rollouts_and_shared_columns():
    args = config(evidence_alpha=0.0, num_generations=1, per_device_train_batch_size=3, negative_crop_column="crop")
    assert args.num_generations_eval == 1


def test_yaml_recipe_parses_and_rejects_unknown_keys(tmp_path):
    recipe = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "evidence_alpha": 0.5,
        "loss_aggregation": "token",
        "log_ratio_clip": 10.0,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    (args,) = TrlParser((VZeroConfig,)).parse_args_and_config(["--config", str(path), "--evidence_gamma", "2"])
    assert (args.evidence_alpha, args.evidence_gamma, args.loss_aggregation, args.log_ratio_clip) == (
        0.5,
        2.0,
        "token",
        10.0,
    )
    assert args.chat_template_kwargs == {"enable_thinking": False}

    path.write_text(yaml.safe_dump({**recipe, "evidence_gama": 2}))
    with pytest.raises(ValueError, match="evidence_gama"):
        TrlParser((VZeroConfig,)).parse_args_and_config(["--config", str(path)])
