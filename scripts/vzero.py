# /// script
# dependencies = ["vzero_trl"]
# ///
"""Train a vision-language model with V-Zero: answer-label-free on-policy distillation with contrastive evidence gating.

The embedded demo (a tiny teacher and student trained here in a toy world, then V-Zero from that student; CPU, a few
minutes; it ends with the student's held-out accuracy before and after and the gate's within-group AUC):

    accelerate launch --config_file configs/accelerate/cpu.yaml scripts/vzero.py --config configs/demo.yaml

The paper's recipe on 8 GPUs (Qwen3.5-4B student, Qwen3.5-27B teacher; build the data first, see the README):

    accelerate launch --config_file configs/accelerate/zero3.yaml scripts/vzero.py \
        --config configs/qwen3.5-4b/vzero_paper.yaml

The same with the 27B teacher served by vLLM on other GPUs (README, "Serving the teacher"):

    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/vzero.py \
        --config configs/qwen3.5-4b/vzero_served_teacher.yaml --teacher_server_urls http://teacher-0:8000

Every recipe key is a field of `VZeroScriptArguments` (below), `vzero_trl.VZeroConfig` or `trl.ModelConfig`;
command-line flags override the recipe, and unknown keys are rejected. A rerun with the same `output_dir` resumes from
its last checkpoint (or pass `--resume_from_checkpoint PATH`) when its settings are those the run was started with
(`output_dir/vzero_run.json`); otherwise it is refused with the differences listed. A finished run is not trained
again: the rerun prints what it produced (see the README's Resuming for training it further). With `--push_to_hub` the model, its processor and card are pushed at the end (and checkpoints as
`hub_strategy` says).
"""

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from accelerate import PartialState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.checkpoints import MARKER, incomplete_reason, last_complete_checkpoint
from vzero_trl.checks import check_range
from vzero_trl.eval.evaluate import BenchmarkEvalCallback, validation_mix
from vzero_trl.prepare.pipeline import local_splits, open_dataset
from vzero_trl.processing import load_processor
from vzero_trl.provenance import setting_differences


@dataclass
class VZeroScriptArguments(ScriptArguments):
    """
    Script arguments: the dataset (`dataset_name` is a Hub id, a local parquet/json/jsonl/csv file, or a folder saved
    with `save_to_disk`; `dataset_train_split`, `dataset_test_split`, `dataset_config`, `dataset_streaming` as in TRL),
    plus the fields below. The evidence columns are `crop_column` / `negative_crop_column` of the training config.
    """

    build_demo_assets: bool = field(
        default=False,
        metadata={
            "help": "Build what is missing of the embedded defaults: tiny Qwen3.5 models at `model_name_or_path` and "
            "`teacher_model_name_or_path` (see `demo_models`) and unlabelled toy-world prompts at `dataset_name`."
        },
    )
    demo_models: str = field(
        default="trained",
        metadata={
            "help": "With build_demo_assets: `trained` (a teacher and a student trained in the toy world, "
            "vzero_trl.mini; the run ends with accuracy before and after and the gate's diagnostics) or `random` "
            "(random weights: a fast smoke run of the machinery)."
        },
    )
    demo_num_examples: int = field(default=128, metadata={"help": "Toy-world prompts built by build_demo_assets."})
    image_min_pixels: int | None = field(
        default=None, metadata={"help": "Smallest image area after resizing (official V-Zero: 65536)."}
    )
    image_max_pixels: int | None = field(
        default=None, metadata={"help": "Largest image area after resizing (official V-Zero: 16777216)."}
    )
    benchmark_eval: list[str] = field(
        default_factory=list,
        metadata={"help": "Benchmarks to score the model on during training (e.g. vstar hrbench_4k mme_realworld)."},
    )
    benchmark_eval_items: int = field(default=150, metadata={"help": "Items sampled from each benchmark_eval one."})
    benchmark_eval_steps: int = field(default=50, metadata={"help": "Score the benchmark mix every this many steps."})
    benchmark_eval_sources: list[str] = field(
        default_factory=list, metadata={"help": "Per-benchmark overrides name=hub_id_or_path for benchmark_eval."}
    )
    benchmark_eval_max_new_tokens: int = field(default=1024, metadata={"help": "Token budget of those answers."})
    eval_holdout: float | None = field(
        default=None,
        metadata={
            "help": "Hold out this fraction (< 1) or number (>= 1) of the training rows, chosen with `seed`, as the "
            "evaluation split (for data without a `dataset_test_split`); they are not trained on."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete the checkpoints and run record in `output_dir` and train from scratch."},
    )
    accept_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume the run in `output_dir` although settings differ from those it was started with (they "
            "apply from the resumed step on)."
        },
    )

    def __post_init__(self):
        if self.demo_models not in ("trained", "random"):
            raise ValueError(f"`demo_models` must be 'trained' or 'random', got {self.demo_models!r}.")
        count = dict(integer=True)
        check_range("demo_num_examples", self.demo_num_examples, 1, **count)
        check_range("image_max_pixels", self.image_max_pixels, 1, **count, optional=True)
        check_range("image_min_pixels", self.image_min_pixels, 1, self.image_max_pixels, **count, optional=True)
        check_range("benchmark_eval_items", self.benchmark_eval_items, 1, **count)
        check_range("benchmark_eval_steps", self.benchmark_eval_steps, 1, **count)
        check_range("benchmark_eval_max_new_tokens", self.benchmark_eval_max_new_tokens, 1, **count)
        holdout = "Hold out a fraction of the rows in (0, 1), or a whole number of rows >= 1."
        check_range("eval_holdout", self.eval_holdout, 0, open_low=True, optional=True, fix=holdout)
        if self.eval_holdout is not None and self.eval_holdout > 1 and self.eval_holdout != int(self.eval_holdout):
            raise ValueError(
                f"`eval_holdout` must be a fraction below 1 or a whole number, got {self.eval_holdout}. {holdout}"
            )


def check_model_args(model_args: ModelConfig) -> None:
    """The numeric fields of TRL's `ModelConfig` (the LoRA settings), which it does not check."""
    check_range("lora_r", model_args.lora_r, 1, integer=True)
    check_range(
        "lora_alpha", model_args.lora_alpha, 1, integer=True, fix="It scales the adapter by lora_alpha / lora_r."
    )
    check_range("lora_dropout", model_args.lora_dropout, 0, 1, open_high=True)


def make_parser() -> TrlParser:
    return TrlParser((VZeroScriptArguments, VZeroConfig, ModelConfig))


def build_demo_assets(
    script_args: VZeroScriptArguments, training_args: VZeroConfig, model_args: ModelConfig
) -> dict | None:
    """Build what is missing of the demo's models and data; return the trained pair's build record (or None)."""
    # The test and demo support is imported here only: a run on real checkpoints never loads it.
    from vzero_trl.mini.demo import build_demo_data, build_demo_pair
    from vzero_trl.toy.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm

    record = None
    # Only on the main process: the others wait, then read what it wrote.
    with training_args.main_process_first(desc="building the demo models and data"):
        if script_args.demo_models == "trained":
            record = build_demo_pair(model_args.model_name_or_path, training_args.teacher_model_name_or_path)
        else:
            ensure_tiny_vlm(model_args.model_name_or_path, **TINY_STUDENT)
            ensure_tiny_vlm(training_args.teacher_model_name_or_path, **TINY_TEACHER)
        build_demo_data(script_args.dataset_name, script_args.demo_num_examples)
    return record


RUN_RECORD = "vzero_run.json"

# Settings that may change between a run and its resumption because they do not change what is trained: where and how
# often things are logged, saved and pushed, and data-loading performance. Every other setting must match.
RESUMABLE_CHANGES = frozenset({
    "output_dir", "resume_from_checkpoint", "local_rank", "overwrite_output_dir", "accept_changed_settings",
    "build_demo_assets", "demo_num_examples",
    "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "log_completions", "num_completions_to_print", "log_unique_prompts",
    "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
    "disable_tqdm", "skip_memory_metrics",
    "save_strategy", "save_steps", "save_total_limit", "save_on_each_node",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "ddp_timeout",
})  # fmt: skip


def run_settings(script_args: VZeroScriptArguments, training_args: VZeroConfig, model_args: ModelConfig) -> dict:
    """Every setting of the launch that changes what is trained, JSON-ready (as `vzero_run.json` records it)."""
    settings = {**asdict(script_args), **training_args.to_dict(), **asdict(model_args)}
    kept = {name: value for name, value in settings.items() if name not in RESUMABLE_CHANGES}
    return json.loads(json.dumps(kept, default=str))


# Settings whose new value a resume from a checkpoint would not apply, with what undoes it: changing them is refused even
# with `--accept_changed_settings`. (A new `learning_rate` is set on the restored optimizer and scheduler.)
_OPTIMIZER = "the restored optimizer keeps its own"
_WEIGHTS = "the checkpoint's weights replace the model's"
FIXED_ON_RESUME = {
    **dict.fromkeys(("optim", "optim_args", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay"), _OPTIMIZER),
    **dict.fromkeys(("model_name_or_path", "model_revision", "use_peft", "lora_r", "lora_alpha"), _WEIGHTS),
    **dict.fromkeys(("lora_target_modules", "lora_modules_to_save", "lora_task_type"), _WEIGHTS),
}


def read_run_record(output_dir: Path) -> dict | None:
    record_file = output_dir / RUN_RECORD
    return json.loads(record_file.read_text()) if record_file.is_file() else None


def checkpoint_step(checkpoint: str) -> int:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]


def check_explicit_checkpoint(script_args: VZeroScriptArguments, checkpoint: str, settings: dict) -> None:
    """Refuse a `--resume_from_checkpoint` that is incomplete, or that its own run wrote with other settings."""
    reason = incomplete_reason(checkpoint) if Path(checkpoint).is_dir() else "it is not a folder"
    if reason is not None:
        raise ValueError(
            f"`resume_from_checkpoint` ({checkpoint}) cannot be resumed from: {reason}. Point it at a complete "
            f"checkpoint-N folder (one with {MARKER}), or leave it out to resume from the newest complete one."
        )
    check_fixed_on_resume(checkpoint, settings)
    if script_args.accept_changed_settings:
        return
    run_dir = Path(checkpoint).resolve().parent
    record = read_run_record(run_dir)
    accept = "Pass `--accept_changed_settings` to resume from it with these settings (from its step on)."
    if record is None:
        raise ValueError(
            f"`resume_from_checkpoint` ({checkpoint}) was written by a run that kept no record of its settings "
            f"({run_dir / RUN_RECORD}), so resuming it with these settings cannot be checked. {accept}"
        )
    differences = setting_differences(record["settings"], settings)
    if differences:
        raise ValueError(
            f"`resume_from_checkpoint` ({checkpoint}) was written by a run with other settings; resuming it would mix "
            "them:\n  " + "\n  ".join(differences) + f"\n{accept}"
        )


def check_fixed_on_resume(checkpoint: str, settings: dict) -> None:
    """Refuse changes that resuming `checkpoint` would undo, against the settings of the run that wrote it."""
    record = read_run_record(Path(checkpoint).resolve().parent)
    if record is None:
        return
    peft = record["settings"].get("use_peft") or settings.get("use_peft")
    changed = [
        name
        for name in FIXED_ON_RESUME
        if record["settings"].get(name) != settings.get(name) and (peft or not name.startswith("lora_"))
    ]
    if changed:
        lines = [
            f"{name}: {record['settings'].get(name)!r} -> {settings.get(name)!r} ({FIXED_ON_RESUME[name]})"
            for name in changed
        ]
        raise ValueError(
            f"Resuming {checkpoint} would not apply these changes:\n  " + "\n  ".join(lines) + "\nKeep the recorded "
            "values, or start a new run (another `--output_dir`, or `--overwrite_output_dir`)."
        )


def check_train_further(training_args: VZeroConfig, finished_step: int, checkpoint: str | None) -> None:
    """A finished run trained further (changed settings accepted) must continue from its finished model's state."""
    output_dir = training_args.output_dir
    new_run = (
        f"To train its model further, start a new run from it: `--model_name_or_path {output_dir} --output_dir "
        "<another folder>`; or pass `--overwrite_output_dir` to train again from the base model."
    )
    step = checkpoint_step(checkpoint) if checkpoint else None
    if step != finished_step:
        kept = f"its newest complete checkpoint is of step {step}" if step else "it kept no complete checkpoint"
        raise ValueError(
            f"{output_dir} holds a model finished at step {finished_step}, and {kept} (`save_strategy: no`, or the "
            "checkpoint was deleted): resuming would train from an earlier state and overwrite the finished model. "
            + new_run
        )
    if 0 < training_args.max_steps <= finished_step:
        raise ValueError(
            f"{output_dir} holds a model finished at step {finished_step}, and `max_steps` ({training_args.max_steps}) "
            f"trains it no further. Raise `--max_steps` above {finished_step} to train it further."
        )


def resume_checkpoint(
    script_args: VZeroScriptArguments, training_args: VZeroConfig, settings: dict
) -> tuple[str | None, bool]:
    """
    What to do in `output_dir`: the checkpoint to resume from (`None`: from scratch), and whether the run there is
    already finished with these settings (nothing to do). Raises `ValueError`, naming the differing settings and the
    fixes, when resuming would continue a run under settings other than its own, when a changed setting could not take
    effect on resume, and when a finished run would be trained further from anything but its finished state. Reads
    only; see `start_run`.
    """
    output_dir = Path(training_args.output_dir)
    explicit = training_args.resume_from_checkpoint
    if explicit is not None:
        check_explicit_checkpoint(script_args, explicit, settings)
    if script_args.overwrite_output_dir:
        return explicit, False
    record = read_run_record(output_dir)
    checkpoint = explicit or last_complete_checkpoint(output_dir)
    fixes = (
        "Use another `--output_dir`, pass `--overwrite_output_dir` to delete its checkpoints and train from scratch, "
        "or `--accept_changed_settings` to resume with the new settings from the resumed step on."
    )
    if record is None:
        if checkpoint and not explicit and not script_args.accept_changed_settings:
            raise ValueError(
                f"{output_dir} holds checkpoints without a record of the settings they were trained with "
                f"({RUN_RECORD}), so resuming {checkpoint} cannot be checked. {fixes}"
            )
        return checkpoint, False
    finished_step = record["finished_step"]
    differences = setting_differences(record["settings"], settings)
    if not differences or not (checkpoint or finished_step is not None):
        return checkpoint, finished_step is not None and not differences
    if not script_args.accept_changed_settings:
        raise ValueError(
            f"{output_dir} holds a run started with other settings; resuming it would mix them:\n  "
            + "\n  ".join(differences)
            + f"\n{fixes}"
        )
    if checkpoint is not None:
        check_fixed_on_resume(checkpoint, settings)
    if finished_step is not None:
        check_train_further(training_args, finished_step, checkpoint)
    return checkpoint, False


def finished_report(output_dir: Path, finished_step: int) -> str:
    """What a finished run produced, shown again when it is rerun with the same settings."""
    lines = [
        f"{output_dir} holds a finished run (step {finished_step}) with these settings: nothing to train. The "
        "model, its processor and its card (README.md) are there."
    ]
    results = output_dir / "demo_results.json"
    if results.is_file():
        from vzero_trl.mini.demo import REFERENCE, demo_text

        reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None
        lines.append(f"The demo's report ({results.name}, picture {output_dir / 'demo.png'}):")
        lines.append(demo_text(json.loads(results.read_text()), reference))
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint and checkpoint_step(checkpoint) == finished_step:
        lines.append("To train further, raise `--max_steps` and pass `--accept_changed_settings`;")
    else:
        lines.append(
            f"No checkpoint of step {finished_step} was kept: to train further, start a new run with "
            f"`--model_name_or_path {output_dir}`;"
        )
    lines.append("to start over, pass `--overwrite_output_dir`.")
    return "\n".join(lines)


def start_run(script_args: VZeroScriptArguments, training_args: VZeroConfig, settings: dict) -> None:
    """Record the run's settings in `output_dir` (after `--overwrite_output_dir` deleted the old run's checkpoints)."""
    PartialState().wait_for_everyone()  # every process has read the old record before it changes
    if PartialState().is_main_process:
        output_dir = Path(training_args.output_dir)
        if script_args.overwrite_output_dir:
            for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
                shutil.rmtree(folder)
        write_run_record(output_dir, settings, finished_step=None)
    PartialState().wait_for_everyone()


def write_run_record(output_dir: Path, settings: dict, finished_step: int | None) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings, "finished_step": finished_step}
    partial = output_dir / f"{RUN_RECORD}.partial"  # replaced in one step: a kill never leaves half a record
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, output_dir / RUN_RECORD)


def splits(script_args: VZeroScriptArguments, training_args: VZeroConfig):
    """
    The training and evaluation datasets. A source without named splits (a local file, or a folder saved from one
    `Dataset`) has no `dataset_test_split`: asking for one is an error instead of evaluating on the training data, and
    `eval_holdout` carves an evaluation split out of the training rows.
    """

    def split(name: str):
        return open_dataset(
            script_args.dataset_name, script_args.dataset_config, name, streaming=script_args.dataset_streaming
        )

    # `open_dataset` refuses a split a local source lacks; checking here first names the launcher's fields, and fails
    # before the training split is read.
    named = local_splits(script_args.dataset_name)
    wanted = [script_args.dataset_train_split]
    if training_args.eval_strategy != "no" and script_args.eval_holdout is None:
        wanted.append(script_args.dataset_test_split)
    missing = [name for name in wanted if named and name not in named]
    if missing:
        raise ValueError(
            f"{script_args.dataset_name} has the splits {named}, not {missing}. Set `dataset_train_split` / "
            "`dataset_test_split` to one of them, or use `eval_holdout` to evaluate on held-out training rows."
        )
    if named == [] and len(wanted) == 2:
        raise ValueError(
            f"{script_args.dataset_name} is one dataset without splits, so `dataset_test_split` "
            f"({script_args.dataset_test_split!r}) would be the training data itself. Set `eval_holdout: 0.05` (a "
            "fraction or a number of rows) to evaluate on held-out training rows, save a DatasetDict with a "
            f"{script_args.dataset_test_split!r} split, or set `eval_strategy: no`."
        )
    train = split(script_args.dataset_train_split)
    if training_args.eval_strategy == "no":
        return train, None
    if script_args.eval_holdout is None:
        return train, split(script_args.dataset_test_split)
    if not isinstance(train, datasets.Dataset):
        raise ValueError("`eval_holdout` needs a map-style dataset; it cannot split a streamed one.")
    holdout = script_args.eval_holdout
    # As `datasets` rounds a fraction: up. Counted here so that a split that leaves no row on either side is named.
    held_out = int(holdout) if holdout >= 1 else math.ceil(holdout * len(train))
    if not 1 <= held_out < len(train):
        raise ValueError(
            f"`eval_holdout` ({holdout}) holds out {held_out} of the {len(train)} training rows of "
            f"{script_args.dataset_name}, which leaves {'no row to train on' if held_out else 'no row to evaluate on'}."
            f" Hold out between 1 and {len(train) - 1} rows (a fraction, or a number of rows)."
        )
    parts = train.train_test_split(test_size=held_out, seed=training_args.seed)
    return parts["train"], parts["test"]


def main(
    script_args: VZeroScriptArguments, training_args: VZeroConfig, model_args: ModelConfig
) -> VZeroTrainer | None:
    check_model_args(model_args)
    # A served teacher (`teacher_server_urls`) is not loaded: `teacher_model_name_or_path` only names the served model.
    local_teacher = training_args.teacher_source == "external" and not training_args.teacher_server_urls
    if local_teacher and not training_args.teacher_model_name_or_path:
        raise ValueError(
            "Set `teacher_model_name_or_path`: V-Zero distils from a local teacher model, a served one "
            "(`teacher_server_urls`), or set `teacher_source: frozen` (or `ema`) for a self-teacher."
        )
    # transformers' wandb callback reads its project from WANDB_PROJECT only: use the run's `project` unless it is set.
    os.environ.setdefault("WANDB_PROJECT", training_args.project)
    settings = run_settings(script_args, training_args, model_args)
    checkpoint, finished = resume_checkpoint(script_args, training_args, settings)
    if finished:
        output_dir = Path(training_args.output_dir)
        PartialState().print(finished_report(output_dir, read_run_record(output_dir)["finished_step"]))
        return None
    demo_record = build_demo_assets(script_args, training_args, model_args) if script_args.build_demo_assets else None

    # The student's init kwargs come from ModelConfig (as in TRL's scripts); the teacher's from
    # `teacher_model_init_kwargs` (e.g. `{"dtype": "bfloat16"}`), and the teacher is never quantized.
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    processor = load_processor(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        padding_side="left",
    )
    if script_args.image_min_pixels or script_args.image_max_pixels:
        size = dict(processor.image_processor.size)
        size["shortest_edge"] = script_args.image_min_pixels or size["shortest_edge"]
        size["longest_edge"] = script_args.image_max_pixels or size["longest_edge"]
        processor.image_processor.size = size

    train_dataset, eval_dataset = splits(script_args, training_args)
    start_run(script_args, training_args, settings)
    trainer_class = VZeroTrainer
    if demo_record is not None:  # records each rollout's gate and correctness for the report; trains as VZeroTrainer
        from vzero_trl.mini.recording import RecordingTrainer as trainer_class
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        teacher_model=training_args.teacher_model_name_or_path if local_teacher else None,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )

    if script_args.benchmark_eval:
        sources = dict(pair.split("=", 1) for pair in script_args.benchmark_eval_sources)
        items = validation_mix(
            script_args.benchmark_eval, script_args.benchmark_eval_items, training_args.seed, sources
        )
        trainer.add_callback(
            BenchmarkEvalCallback(
                trainer,
                items,
                script_args.benchmark_eval_steps,
                max_new_tokens=script_args.benchmark_eval_max_new_tokens,
            )
        )

    if checkpoint is not None:
        trainer.accelerator.print(f"Resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if trainer.is_world_process_zero():
        write_run_record(Path(training_args.output_dir), settings, finished_step=trainer.state.global_step)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.print(f"Saved the model, its processor and model card to {training_args.output_dir}")
    if demo_record is not None and trainer.is_world_process_zero():
        from vzero_trl.mini.demo import demo_report

        demo_report(trainer, demo_record, training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
