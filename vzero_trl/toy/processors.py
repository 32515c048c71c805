"""Processors that load without torchvision.

transformers builds `Qwen3VLProcessor` (Qwen3-VL and Qwen3.5) with a video processor whose class only exists when
torchvision is installed, and no CPU build of torchvision exists for current torch. [`Qwen3VLImageOnlyProcessor`] is the
same processor without the video part, so image-text models such as the embedded tiny ones load on any machine. It is
registered with `AutoProcessor` when this module is imported, under a private key so that real checkpoints (which name
`Qwen3VLProcessor`) are unaffected. [`vzero_trl.toy.tiny`] imports it to build the tiny models, and
[`vzero_trl.processing.load_processor`] imports it to load a checkpoint that names this processor.
"""

from transformers import AutoProcessor, PreTrainedConfig, Qwen3VLProcessor


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """
    [`Qwen3VLProcessor`] without a video processor.

    `ProcessorMixin` type-checks every sub-processor named in `__init__`, and the video processor class only exists
    when torchvision is installed. Dropping it from the signature lets the processor build, save and load without
    torchvision; images and text are processed exactly as by the parent class.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


class _ImageOnlyProcessorKey(PreTrainedConfig):
    # Only a mapping key: `AutoProcessor` finds a saved `processor_class` name among the registered classes, so no real
    # config (such as `Qwen3_5Config`) is re-mapped for users who import this package.
    model_type = "vzero_tiny_image_only"


AutoProcessor.register(_ImageOnlyProcessorKey, Qwen3VLImageOnlyProcessor, exist_ok=True)
