"""Load a checkpoint's processor, the tiny models' torchvision-free one included.

A checkpoint records its processor's class in `processor_config.json`. Real Qwen3.5 and Qwen3-VL checkpoints name
`Qwen3VLProcessor` and load with plain `AutoProcessor`. The tiny models of [`vzero_trl.toy`] name
`Qwen3VLImageOnlyProcessor`, which `AutoProcessor` only knows once [`vzero_trl.toy.processors`] is imported:
[`load_processor`] imports it for such a checkpoint and for no other, so the training, preparation and evaluation code
never loads the test and demo support otherwise.
"""

import json
from pathlib import Path

from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin, Qwen3VLProcessor
from transformers.utils import PROCESSOR_NAME, cached_file, is_torchvision_available
from trl.trainer.utils import get_config_model_id


IMAGE_ONLY_PROCESSOR = "Qwen3VLImageOnlyProcessor"


def saved_processor_class(name_or_path: str, revision: str | None = None) -> str | None:
    """The `processor_class` a checkpoint (a local folder or a Hub id) records, or `None` when it records none."""
    path = cached_file(
        name_or_path,
        PROCESSOR_NAME,
        revision=revision,
        _raise_exceptions_for_gated_repo=False,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return None if path is None else json.loads(Path(path).read_text()).get("processor_class")


def student_processor(
    model: str | PreTrainedModel, model_init_kwargs: dict | None, trust_remote_code: bool
) -> ProcessorMixin:
    """
    The processor of a student given by name or as a model, padding and truncating on the left. Mirrors
    `trl.DistillationTrainer.__init__`'s `AutoProcessor.from_pretrained` call (TRL 1.16), through [`load_processor`],
    which also loads the tiny models' torchvision-free processor.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The student as passed to the trainer.
        model_init_kwargs (`dict`, *optional*):
            `VZeroConfig.model_init_kwargs`; its `revision` applies when `model` is a name.
        trust_remote_code (`bool`):
            `VZeroConfig.trust_remote_code`.
    """
    from_path = isinstance(model, str)
    return load_processor(
        model if from_path else get_config_model_id(model.config),
        revision=(model_init_kwargs or {}).get("revision") if from_path else None,
        truncation_side="left",
        padding_side="left",
        trust_remote_code=trust_remote_code,
    )


def check_processor(processing_class: ProcessorMixin, is_vlm: bool, padding_side: str) -> None:
    """
    Raise unless the trainer's processor is multimodal (V-Zero replays rollouts with images) and pads on the left
    (completions are aligned behind left-padded prompts). `is_vlm` and `padding_side` are what the base trainer
    read from `processing_class`.
    """
    if not is_vlm:
        raise ValueError(
            f"V-Zero replays rollouts with images, so `processing_class` must be a multimodal processor "
            f"(a ProcessorMixin such as Qwen3VLProcessor), got {type(processing_class).__name__}."
        )
    if padding_side != "left":
        raise ValueError(
            f"The processor pads on the {padding_side!r}; V-Zero aligns completions behind "
            "left-padded prompts. Load it with `AutoProcessor.from_pretrained(..., padding_side='left')`."
        )


def load_processor(name_or_path: str, **kwargs) -> ProcessorMixin:
    """
    `AutoProcessor.from_pretrained(name_or_path, **kwargs)`, which also loads a checkpoint saved with the tiny models'
    `Qwen3VLImageOnlyProcessor`. Where torchvision is installed such a checkpoint loads as the standard
    [`~transformers.Qwen3VLProcessor`], with Qwen3-VL's default video processor, so that what is saved from it (a
    trained model) loads with plain transformers. Images and text are processed the same either way.
    """
    if saved_processor_class(name_or_path, kwargs.get("revision")) != IMAGE_ONLY_PROCESSOR:
        return AutoProcessor.from_pretrained(name_or_path, **kwargs)
    from .toy import processors  # noqa: F401  (registers the image-only processor with AutoProcessor)

    processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    if not is_torchvision_available():
        return processor
    from transformers import Qwen3VLVideoProcessor

    return Qwen3VLProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=processor.chat_template,
    )
