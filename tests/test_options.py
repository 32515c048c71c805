"""Every numeric option is checked where it enters: NaN, infinities, negatives and values past a bound are refused,
naming the option and the value, before anything runs.

The sweep below reads the numeric fields of each configuration class from its dataclass fields, so an option added
later is probed without editing this file; only its upper bound, when it has one, must be listed in `UPPER`.
"""

import dataclasses
import math
import types
import typing

import pytest
from helpers import load_script
from trl import ModelConfig

from vzero_trl import VZeroConfig
from vzero_trl.eval.evaluate import EvaluateConfig
from vzero_trl.prepare.convert import PrepareConfig


SCRIPT = load_script()


def build_model_config(**overrides):
    SCRIPT.check_model_args(ModelConfig(**overrides))  # the launcher checks TRL's ModelConfig in `main`


# Each class with the least it needs to build, and how the launcher or script builds it.
BUILDERS = {
    VZeroConfig: lambda **o: VZeroConfig(
        **{"output_dir": "out", "use_cpu": True, "bf16": False, "report_to": "none", "per_device_train_batch_size": 8}
        | o
    ),
    PrepareConfig: lambda **o: PrepareConfig(**{"dataset": "x", "output_dir": "y"} | o),
    EvaluateConfig: lambda **o: EvaluateConfig(**{"model": "m", "output_dir": "o"} | o),
    SCRIPT.VZeroScriptArguments: lambda **o: SCRIPT.VZeroScriptArguments(**{"dataset_name": "d"} | o),
    ModelConfig: build_model_config,
}

# Options with an upper bound: (class, option) -> (the bound, which is accepted; a value just past it).
UPPER = {
    (VZeroConfig, "teacher_ema_rate"): (1.0, 1.5),
    (VZeroConfig, "evidence_weight_min"): (1.0, 1.01),
    (VZeroConfig, "beta"): (1.0, 1.01),
    (VZeroConfig, "min_p"): (1.0, 1.01),
    (VZeroConfig, "top_p"): (1.0, 1.01),
    (VZeroConfig, "vllm_gpu_memory_utilization"): (1.0, 1.01),
    (VZeroConfig, "vllm_server_port"): (65535, 65536),
    (VZeroConfig, "vllm_group_port"): (65535, 65536),
    (VZeroConfig, "adam_beta1"): (0.999, 1.0),
    (VZeroConfig, "adam_beta2"): (0.999, 1.0),
    (VZeroConfig, "label_smoothing_factor"): (1.0, 1.01),
    (VZeroConfig, "seed"): (2**32 - 1, 2**32),
    (VZeroConfig, "data_seed"): (2**32 - 1, 2**32),
    (PrepareConfig, "seed"): (2**32 - 1, 2**32),
    (PrepareConfig, "max_aspect_ratio"): (200.0, 201.0),
    (PrepareConfig, "min_pixels"): (16777216, 16777217),  # bounded by max_pixels
    (EvaluateConfig, "seed"): (2**32 - 1, 2**32),
    (EvaluateConfig, "gpu_memory_utilization"): (1.0, 1.01),
    (EvaluateConfig, "min_pixels"): (16777216, 16777217),  # bounded by max_pixels
    (ModelConfig, "lora_dropout"): (0.99, 1.0),
}
# ModelConfig is TRL's; the launcher checks only its numbers, so only those are swept.
MODEL_FIELDS = ("lora_r", "lora_alpha", "lora_dropout")


def numeric_fields(cls) -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        union = typing.get_origin(f.type) in (typing.Union, types.UnionType)
        if any(t in (int, float) for t in (typing.get_args(f.type) if union else (f.type,))):
            names.append(f.name)
    return [n for n in names if n in MODEL_FIELDS] if cls is ModelConfig else names


SWEEP = [(cls, name) for cls in BUILDERS for name in numeric_fields(cls)]


def test_the_sweep_reaches_every_class_and_the_new_options():
    swept = {(cls.__name__, name) for cls, name in SWEEP}
    for expected in [
        ("VZeroConfig", "evidence_alpha"),
        ("VZeroConfig", "loss_top_k"),
        ("VZeroConfig", "learning_rate"),  # inherited from TrainingArguments
        ("VZeroConfig", "top_k"),  # inherited from DistillationConfig
        ("PrepareConfig", "crop_margin"),
        ("EvaluateConfig", "batch_size"),
        ("VZeroScriptArguments", "eval_holdout"),
        ("ModelConfig", "lora_dropout"),
    ]:
        assert expected in swept
    assert len(swept) >= 85
    assert {(cls, name) for cls, name in UPPER} <= set(SWEEP)  # no stale entry


@pytest.mark.parametrize("probe", [math.nan, math.inf, -math.inf, -7], ids=["nan", "inf", "-inf", "negative"])
@pytest.mark.parametrize("cls,name", SWEEP, ids=[f"{cls.__name__}.{name}" for cls, name in SWEEP])
def test_every_numeric_option_refuses_non_numbers_and_negatives(cls, name, probe):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*got {probe!r}"):
        BUILDERS[cls](**{name: probe})


@pytest.mark.parametrize("cls,name", list(UPPER), ids=[f"{cls.__name__}.{name}" for cls, name in UPPER])
def test_bounded_options_take_their_bound_and_refuse_past_it(cls, name):
    bound, past = UPPER[(cls, name)]
    overrides = {"loss_type": "full_reverse_kl"} if (cls, name) == (VZeroConfig, "beta") else {}
    BUILDERS[cls](**{name: bound}, **overrides)
    with pytest.raises(ValueError, match=rf"`{name}` must be .*got {past!r}"):
        BUILDERS[cls](**{name: past}, **overrides)


def test_the_defaults_pass():
    for build in BUILDERS.values():
        build()


def test_check_range_messages():
    from vzero_trl.checks import check_range  # here, so that the sweep above also runs against code without it

    check_range("x", 3, 1, 3, integer=True)
    check_range("x", None, 1, optional=True)
    for value, message in [
        (math.nan, r"`x` must be in \[1, 3\], got nan \(a finite number is needed\)\. Fix it\."),
        (2.5, r"`x` must be in \[1, 3\], got 2\.5 \(a whole number is needed\)"),
        (True, r"got True \(a finite number is needed\)"),  # a bool is not a count
        ("2", r"got '2' \(a finite number is needed\)"),
        (None, r"got None"),
        (0, r"`x` must be in \[1, 3\], got 0\. Fix it\."),
    ]:
        with pytest.raises(ValueError, match=message):
            check_range("x", value, 1, 3, integer=True, fix="Fix it.")
    with pytest.raises(ValueError, match=r"`y` must be > 0, got 0"):
        check_range("y", 0, 0, open_low=True)
    with pytest.raises(ValueError, match=r"`y` must be in \[0, 1\), got 1"):
        check_range("y", 1, 0, 1, open_high=True)


@pytest.mark.parametrize(
    "cls,overrides,message",
    [
        # NaN used to pass `x <= 0`: a NaN gain switched the gate off, a NaN clip made every loss NaN.
        (VZeroConfig, dict(evidence_alpha=math.nan), r"`evidence_alpha` must be >= 0, got nan"),
        (VZeroConfig, dict(log_ratio_clip=math.nan), r"`log_ratio_clip` must be > 0, got nan"),
        (VZeroConfig, dict(max_steps=0), r"`max_steps` must be >= 1, or -1"),
        (VZeroConfig, dict(num_generations=4.0), r"a whole number is needed"),
        (PrepareConfig, dict(max_bbox_side=5, min_bbox_side=10), r"`max_bbox_side` must be >= 10, got 5"),
        (EvaluateConfig, dict(min_pixels=100, max_pixels=10), r"`min_pixels` must be in \[1, 10\], got 100"),
        (SCRIPT.VZeroScriptArguments, dict(eval_holdout=2.5), r"fraction below 1 or a whole number, got 2.5"),
        (SCRIPT.VZeroScriptArguments, dict(demo_models="big"), r"`demo_models` must be 'trained' or 'random'"),
        (
            SCRIPT.VZeroScriptArguments,
            dict(image_min_pixels=100, image_max_pixels=10),
            r"`image_min_pixels` must be in \[1, 10\], got 100",
        ),
    ],
)
def test_cross_field_and_whole_number_checks(cls, overrides, message):
    with pytest.raises(ValueError, match=message):
        BUILDERS[cls](**overrides)


def test_max_steps_minus_one_still_means_epochs():
    assert BUILDERS[VZeroConfig](max_steps=-1, num_train_epochs=2.0).max_steps == -1
