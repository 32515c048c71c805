# /// script
# dependencies = ["vzero_trl"]
# ///
"""Train a vision-language model with V-Zero: answer-label-free on-policy distillation with contrastive evidence gating.

The embedded demo (tiny local models and synthetic data, built if absent; CPU, about a minute):

    accelerate launch scripts/vzero.py --config configs/demo.yaml

The paper's recipe on 8 GPUs (Qwen3.5-4B student, Qwen3.5-27B teacher; build the data first, see the README):

    accelerate launch --config_file configs/accelerate/zero3.yaml scripts/vzero.py \
        --config configs/qwen3.5-4b/vzero_paper.yaml

Every recipe key is a field of `VZeroScriptArguments` (below), `vzero_trl.VZeroConfig` or `trl.ModelConfig`;
command-line flags override the recipe, and unknown keys are rejected. A rerun with the same `output_dir` resumes from
its last checkpoint (or pass `--resume_from_checkpoint PATH`). With `--push_to_hub` the model, its processor and card
are pushed at the end (and checkpoints as `hub_strategy` says).
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoProcessor
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from vzero_trl import VZeroConfig, VZeroTrainer
from vzero_trl.evaluate import BenchmarkEvalCallback, validation_mix
from vzero_trl.prepare import open_dataset
from vzero_trl.synthetic import make_dataset
from vzero_trl.tiny import TINY_STUDENT, TINY_TEACHER, ensure_tiny_vlm


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
            "help": "Build what is missing of the embedded defaults: tiny random Qwen3.5 models at "
            "`model_name_or_path` and `teacher_model_name_or_path`, and a synthetic dataset at `dataset_name`."
        },
    )
    demo_num_examples: int = field(default=128, metadata={"help": "Synthetic prompts built by build_demo_assets."})
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


def make_parser() -> TrlParser:
    return TrlParser((VZeroScriptArguments, VZeroConfig, ModelConfig))


def build_demo_assets(script_args: VZeroScriptArguments, training_args: VZeroConfig, model_args: ModelConfig) -> None:
    # Only on the main process: the others wait, then read what it wrote.
    with training_args.main_process_first(desc="building the demo models and data"):
        ensure_tiny_vlm(model_args.model_name_or_path, **TINY_STUDENT)
        ensure_tiny_vlm(training_args.teacher_model_name_or_path, **TINY_TEACHER)
        if not Path(script_args.dataset_name).exists():
            make_dataset(script_args.demo_num_examples, seed=0).save_to_disk(script_args.dataset_name)


def last_complete_checkpoint(output_dir: str) -> str | None:
    """
    The newest `checkpoint-N` folder of `output_dir` that was fully written. Trainer writes `trainer_state.json` last,
    so a run killed while saving leaves a newer folder without it, which must not be resumed from.
    """
    folders = Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    steps = sorted((int(f.name.split("-")[-1]), f) for f in folders if f.name.split("-")[-1].isdigit())
    complete = [folder for _, folder in steps if (folder / "trainer_state.json").is_file()]
    return str(complete[-1]) if complete else None


def main(script_args: VZeroScriptArguments, training_args: VZeroConfig, model_args: ModelConfig) -> VZeroTrainer:
    if not training_args.teacher_model_name_or_path:
        raise ValueError("Set `teacher_model_name_or_path`: V-Zero distils from a local teacher model.")
    if script_args.build_demo_assets:
        build_demo_assets(script_args, training_args, model_args)

    # The student's init kwargs come from ModelConfig (as in TRL's scripts); the teacher's from
    # `teacher_model_init_kwargs` (e.g. `{"dtype": "bfloat16"}`), and the teacher is never quantized.
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    processor = AutoProcessor.from_pretrained(
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

    def split(name: str):
        return open_dataset(
            script_args.dataset_name, script_args.dataset_config, name, streaming=script_args.dataset_streaming
        )

    trainer = VZeroTrainer(
        model=model_args.model_name_or_path,
        teacher_model=training_args.teacher_model_name_or_path,
        args=training_args,
        train_dataset=split(script_args.dataset_train_split),
        eval_dataset=split(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None,
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

    checkpoint = training_args.resume_from_checkpoint or last_complete_checkpoint(training_args.output_dir)
    if checkpoint is not None:
        trainer.accelerator.print(f"Resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.print(f"Saved the model, its processor and model card to {training_args.output_dir}")
    return trainer


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
