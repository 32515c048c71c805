"""Cards for what V-Zero publishes: model cards (an image-text-to-text quick start, the teacher and the
hyper-parameters used) and dataset cards (schema, how the crops were made, kept and rejected counts)."""

import importlib.resources
import json
import os
import re
import textwrap
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData
from transformers import PretrainedConfig, is_wandb_available
from trl.trainer.utils import get_config_model_id, get_trackio_space_url


if is_wandb_available():
    import wandb

if TYPE_CHECKING:
    from .config import VZeroConfig


# The paper, as `VZeroTrainer._paper` (TRL's `_paper` convention); the model card cites it.
PAPER = {
    "title": (
        "V-Zero: Answer-Label-Free On-Policy Distillation with Contrastive Evidence Gating for Fine-Grained Visual "
        "Reasoning"
    ),
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @misc{sun2026vzero,
            title        = {{V-Zero: Answer-Label-Free On-Policy Distillation with Contrastive Evidence Gating for Fine-Grained Visual Reasoning}},
            author       = {Haoxiang Sun and Zhihang Yi and Langxuan Deng and Yuhao Zhou and Peiqi Jia and Jian Zhao and Li Yuan and Jiancheng Lv and Tao Wang},
            year         = 2026,
            url          = {https://github.com/eVI-group-SCU/V-Zero},
        }"""),
}

# The fields that define a V-Zero run, in the order the card lists them.
CARD_HYPERPARAMETERS = (
    "num_generations",
    "evidence_alpha",
    "evidence_gamma",
    "evidence_weight_min",
    "evidence_weight_max",
    "evidence_std",
    "loss_type",
    "loss_aggregation",
    "log_ratio_clip",
    "crop_column",
    "negative_crop_column",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_completion_length",
    "temperature",
    "seed",
)


def hub_id(name_or_path: str | None) -> str | None:
    """`name_or_path` if it names a Hub repository (`owner/name`, not a local folder), else `None`."""
    if name_or_path and re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path) and not os.path.isdir(name_or_path):
        return name_or_path
    return None


# The metrics the card reports from the last logged training step, in this order.
CARD_METRICS = (
    "loss",
    "distillation/reverse_kl",
    "entropy",
    "evidence/weight_mean",
    "evidence/weight_at_min_frac",
    "evidence/weight_at_max_frac",
    "evidence/score_std",
    "evidence/delta_mean",
    "evidence/delta_pos_frac",
    "evidence/zero_std_group_frac",
    "completions/mean_length",
    "completions/clipped_ratio",
)


def training_summary(log_history: list[dict[str, float]]) -> tuple[list[tuple[str, str]], str]:
    """
    The card's "Training results": the `CARD_METRICS` of the last logged training step, and a caption saying which
    step that is and how long training took. Empty when nothing was logged yet.
    """
    steps = [entry for entry in log_history if "loss" in entry]
    if not steps:
        return [], ""
    last = steps[-1]
    metrics = [(name, f"{last[name]:.4g}") for name in CARD_METRICS if last.get(name) is not None]
    runtime = next((entry["train_runtime"] for entry in reversed(log_history) if "train_runtime" in entry), None)
    caption = f"Values logged at step {last['step']}" + (f"; training took {duration(runtime)}." if runtime else ".")
    return metrics, caption


def duration(seconds: float) -> str:
    """`"2.00 h"`, `"12.5 min"` or `"42 s"`: hours from one hour on, minutes from one minute on, else seconds."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def teacher_description(teacher_source: str, base_model: str | None, teacher_config: PretrainedConfig) -> str:
    """
    What the card calls a local teacher: the external teacher's checkpoint (Hub id or path, read from its
    `teacher_config`), or, for a self-teacher (`teacher_source` `"frozen"` or `"ema"`), a sentence naming the student
    it was built from. A served teacher is called by the name its servers give it.
    """
    if teacher_source == "external":
        return get_config_model_id(teacher_config)
    kind = "a frozen copy" if teacher_source == "frozen" else "an exponential moving average"
    return f"{kind} of the student ({base_model}), seeing the evidence"


def tracking_urls() -> dict[str, str | None]:
    """The card's links to the training curves: the current wandb run and the trackio Space, `None` where absent."""
    wandb_url = wandb.run.url if is_wandb_available() and wandb.run is not None else None
    return {"wandb_url": wandb_url, "trackio_url": get_trackio_space_url()}


def build_model_card(
    *,
    args: "VZeroConfig",
    model_name: str,
    base_model: str | None,
    teacher_model: str,
    dataset_name: str | None,
    tags: list[str],
    citation: str,
    num_processes: int = 1,
    log_history: list[dict[str, float]] | None = None,
    wandb_url: str | None = None,
    trackio_url: str | None = None,
) -> ModelCard:
    """
    Render the V-Zero model card of the model saved in `args.output_dir`.

    What was saved there decides two things the card says: a folder with `adapter_config.json` is a LoRA adapter (the
    card says so, and that PEFT loads it onto the base model), and a processor saved as the torchvision-free
    `Qwen3VLImageOnlyProcessor` needs `import vzero_trl.toy.processors` before transformers can load it (the quick start
    starts with that import).

    Args:
        args ([`VZeroConfig`]):
            The run's configuration; the fields of `CARD_HYPERPARAMETERS` are listed.
        model_name (`str`):
            Name of the trained model (the card's title).
        base_model (`str`, *optional*):
            Student checkpoint the run started from; linked when it is a Hub id.
        teacher_model (`str`):
            Teacher checkpoint (Hub id or local path).
        dataset_name (`str`, *optional*):
            Training dataset; linked when it is a Hub id.
        tags (`list[str]`):
            Hub tags.
        citation (`str`):
            BibTeX of the paper.
        num_processes (`int`, *optional*, defaults to `1`):
            Data-parallel processes, to state the number of rollouts per optimizer step.
        log_history (`list[dict]`, *optional*):
            The trainer's `state.log_history`; the card summarises the last logged training step.
        wandb_url (`str`, *optional*), trackio_url (`str`, *optional*):
            Links to the training curves.

    Returns:
        [`~huggingface_hub.ModelCard`]: the card, ready to `save` or `push_to_hub`.
    """
    saved = Path(args.output_dir)
    adapter = (saved / "adapter_config.json").is_file()
    processor_file = saved / "processor_config.json"
    image_only = processor_file.is_file() and (
        json.loads(processor_file.read_text())["processor_class"] == "Qwen3VLImageOnlyProcessor"
    )
    base_model_name, base_model = base_model, hub_id(base_model)
    hyperparameters = [(name, getattr(args, name)) for name in CARD_HYPERPARAMETERS]
    length = ("max_steps", args.max_steps) if args.max_steps > 0 else ("num_train_epochs", args.num_train_epochs)
    rollouts = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    hyperparameters += [
        length,
        ("num_processes", num_processes),
        ("prompts per step", rollouts // args.num_generations),
    ]
    metrics, caption = training_summary(log_history or [])
    card_data = ModelCardData(
        base_model=base_model,
        datasets=[hub_id(dataset_name)] if hub_id(dataset_name) else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-text-to-text",
        model_name=model_name,
        tags=["generated_from_trainer", *(["lora"] if adapter else []), *tags],
    )
    template = importlib.resources.files("vzero_trl.model_cards") / "model_card.md"
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(),
        model_name=model_name,
        model_id=args.hub_model_id or model_name,
        base_model=base_model,
        base_model_name=base_model_name,
        adapter=adapter,
        image_only_processor=image_only,
        teacher_model=teacher_model,
        teacher_is_hub=hub_id(teacher_model) is not None,
        dataset_name=dataset_name,
        dataset_is_hub=hub_id(dataset_name) is not None,
        num_generations=args.num_generations,
        hyperparameters=hyperparameters,
        metrics=metrics,
        metrics_caption=caption,
        wandb_url=wandb_url,
        trackio_url=trackio_url,
        citation=citation,
        vzero_trl_version=version("vzero_trl"),
        trl_version=version("trl"),
        transformers_version=version("transformers"),
        pytorch_version=version("torch"),
        datasets_version=version("datasets"),
    )


def build_dataset_card(
    summary: dict[str, Any], repo_id: str | None = None, existing: DatasetCard | None = None
) -> DatasetCard:
    """
    Render the card of a prepared V-Zero dataset from the pipeline's `summary` (counts, reasons, settings). Local paths
    in the settings are shown by their last component only ([`public_settings`]), so a pushed card does not reveal the
    machine's folders.

    Args:
        summary (`dict`):
            What [`~vzero_trl.prepare.pipeline.prepare`] returns.
        repo_id (`str`, *optional*):
            The dataset repository, used in the loading example. Without it the card describes the local folder, and
            the example loads `output_dir/dataset` with `load_from_disk`.
        existing ([`~huggingface_hub.DatasetCard`], *optional*):
            The card `Dataset.push_to_hub` wrote; its metadata (features, splits, configs) is kept so the Hub still
            knows how to load the data.

    Returns:
        [`~huggingface_hub.DatasetCard`]: the card.
    """
    settings = public_settings(summary["settings"])
    name = repo_id.split("/")[-1] if repo_id else settings["output_dir"]
    metadata = existing.data.to_dict() if existing is not None else {}
    metadata.update(
        license=settings["license"],
        tags=sorted(set(metadata.get("tags") or []) | {"v-zero", "vzero_trl", "vision-language", "trl"}),
        task_categories=["image-text-to-text"],
        pretty_name=name,
    )
    template = importlib.resources.files("vzero_trl.model_cards") / "dataset_card.md"
    return DatasetCard.from_template(
        DatasetCardData(**{key: value for key, value in metadata.items() if value is not None}),
        template_str=template.read_text(),
        pretty_name=name,
        repo_id=repo_id,
        local_dataset=str(Path(summary["settings"]["output_dir"], "dataset")),
        source=settings["dataset"],
        split=summary["split"],
        source_rows=summary["source_rows"],
        kept=summary["kept"],
        rejected=summary["rejected"],
        rejected_by_reason=sorted(summary["rejected_by_reason"].items()),
        settings_yaml=yaml.safe_dump(settings, sort_keys=False),
        clean_images=bool(settings["clean_image_column"] or settings["clean_image_dir"]),
        crop_from_source=settings["source_format"] == "crop",
        vzero_trl_version=summary["vzero_trl_version"],
        **{key: settings[key] for key in _DATASET_CARD_SETTINGS},
    )


# Settings that may name local files or folders.
_PATH_SETTINGS = ("dataset", "output_dir", "image_dir", "clean_image_dir", "processor")


def public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """
    Data-preparation settings fit to publish: a path setting that names an absolute path or an existing local file or
    folder is reduced to its last component (`/home/me/zwz/train.parquet` -> `train.parquet`); Hub ids stay as they are.
    """
    public = dict(settings)
    for key in _PATH_SETTINGS:
        value = settings[key]
        if value and (Path(value).is_absolute() or Path(value).exists()):
            public[key] = Path(value).name
    return public


_DATASET_CARD_SETTINGS = (
    "id_column",
    "negative_factor",
    "random_crop",
    "bbox_format",
    "bbox_tolerance",
    "crop_column",
    "crop_margin",
    "crop_min_side",
    "seed",
    "license",
)
