"""Tiny random-weight Qwen3.5 vision-language models for offline tests and demos.

`build_tiny_pair` writes a student and a wider, differently seeded teacher that share one tokenizer, as ordinary
`save_pretrained` folders. They load with `AutoModelForImageTextToText` and `AutoProcessor` on a CPU machine with no
network and no torchvision: the tokenizer is a byte-level BPE trained here on an in-code corpus, the chat template is
TRL's `qwen3_5_nothink.jinja`, and the processor is [`Qwen3VLImageOnlyProcessor`], which has no video processor.

Run `python -m vzero_trl.toy.tiny OUTPUT_DIR` to build `OUTPUT_DIR/student` and `OUTPUT_DIR/teacher`.
"""

import argparse
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessorPil,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
)
from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

from .processors import Qwen3VLImageOnlyProcessor
from .synthetic import COLORS, SHAPES


SPECIAL_TOKENS = (
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> <|box_end|> "
    "<|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|>"
).split()
# Used by the chat template but not special, as in the real Qwen3.5 tokenizer.
TEMPLATE_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
# A folder holding all of these is a complete build, which `ensure_tiny_vlm` does not redo.
SAVED_FILES = (
    "config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json processor_config.json "
    "chat_template.jinja"
).split()


def _corpus() -> list[str]:
    letters, colors = "ABCD", list(COLORS)
    corpus = []
    for i, shape in enumerate(SHAPES):
        for j, color in enumerate(colors):
            options = [colors[(j + k) % len(colors)] for k in range(4)]
            choices = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=True))
            corpus.append(
                f"What is the color of the {shape} in the image?\n{choices}\n"
                "Answer with the option's letter from the given choices."
            )
            corpus.append(f"The answer is {letters[(i + j) % 4]}. The {color} {shape} is in the image.")
    corpus += [
        "The next image is a cropped view of the target image from the original image: . Use the crop as focused "
        "visual evidence for the relevant object or region, while keeping the original image as context.",
        "You are a helpful assistant. Describe the image in one sentence.",
        "Which shape is on the left? How many objects are there? There are 2 objects, 0 1 2 3 4 5 6 7 8 9.",
        "The quick brown fox jumps over the lazy dog, and the user asks the assistant a question.",
    ]
    return corpus


def build_tokenizer() -> PreTrainedTokenizerFast:
    """
    Trains the byte-level BPE tokenizer shared by the tiny student and teacher.

    The pipeline is that of `Qwen3_5Tokenizer`. All 256 bytes are in the alphabet, so any text encodes without
    `<unk>` and decodes back exactly. Training on the fixed corpus is deterministic.

    Returns:
        `PreTrainedTokenizerFast`: the tokenizer, with the Qwen special tokens each encoded as one id.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.add_tokens(TEMPLATE_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        padding_side="left",
    )


def build_tiny_vlm(
    output_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    layer_types: Sequence[str] | None = None,
    vision_hidden_size: int = 32,
    max_pixels: int = 128 * 128,
    min_pixels: int = 32 * 32,
) -> Path:
    """
    Builds a random-weight Qwen3.5 VLM with its tokenizer and processor, and saves them into `output_dir`.

    Args:
        output_dir (`str` or `Path`):
            Folder to save into; created if missing, files in it are overwritten.
        seed (`int`, *optional*, defaults to `0`):
            Seed for the weight initialisation: the same seed and sizes give identical weights.
        hidden_size (`int`, *optional*, defaults to `64`):
            Text hidden size, a multiple of 16 (the head dimension); also the vision tower's output size.
        num_hidden_layers (`int`, *optional*, defaults to `2`):
            Number of text layers.
        layer_types (`Sequence[str]`, *optional*):
            `"linear_attention"` (Gated DeltaNet) or `"full_attention"` per text layer. Defaults to alternating,
            starting with linear attention, as in the real Qwen3.5 stack.
        vision_hidden_size (`int`, *optional*, defaults to `32`):
            Width of the one-layer vision tower (its MLP is twice as wide), a multiple of 2 (two heads).
        max_pixels (`int`, *optional*, defaults to `128 * 128`):
            Largest image area after resizing (the image processor's `size["longest_edge"]`).
        min_pixels (`int`, *optional*, defaults to `32 * 32`):
            Smallest image area after resizing (the image processor's `size["shortest_edge"]`).

    Returns:
        `Path`: the folder, loadable with `AutoModelForImageTextToText` and `AutoProcessor`.
    """
    if hidden_size <= 0 or hidden_size % 16 != 0:
        raise ValueError(f"`hidden_size` ({hidden_size}) must be a positive multiple of 16, the head dimension.")
    if num_hidden_layers < 1:
        raise ValueError(f"`num_hidden_layers` ({num_hidden_layers}) must be at least 1.")
    if layer_types is None:
        layer_types = [("linear_attention", "full_attention")[i % 2] for i in range(num_hidden_layers)]
    if len(layer_types) != num_hidden_layers or not set(layer_types) <= {"linear_attention", "full_attention"}:
        raise ValueError(
            f"`layer_types` ({list(layer_types)}) must name 'linear_attention' or 'full_attention' for each of the "
            f"{num_hidden_layers} layers."
        )
    tokenizer = build_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    chat_template = (importlib.resources.files("trl") / "chat_templates" / "qwen3_5_nothink.jinja").read_text()
    processor = Qwen3VLImageOnlyProcessor(image_processor, tokenizer, chat_template=chat_template)

    text_config = dict(
        vocab_size=-(-len(tokenizer) // 64) * 64,  # padded like real checkpoints
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        layer_types=list(layer_types),
        num_attention_heads=hidden_size // 16,
        num_key_value_heads=2 if (hidden_size // 16) % 2 == 0 else 1,
        head_dim=16,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_conv_kernel_dim=4,
        max_position_embeddings=4096,
        # The mrope sections must sum to head_dim * partial_rotary_factor / 2.
        rope_parameters=dict(
            rope_type="default",
            rope_theta=1e4,
            partial_rotary_factor=0.5,
            mrope_section=[2, 1, 1],
            mrope_interleaved=True,
        ),
    )
    vision_config = dict(
        depth=1,
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_heads=2,
        num_position_embeddings=64,  # must be a perfect square
    )
    config = vlm_config(tokenizer, text_config, vision_config, dtype="float32")
    torch.manual_seed(seed)
    model = Qwen3_5ForConditionalGeneration(config).to(torch.float32)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id, config.text_config.pad_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def vlm_config(tokenizer: PreTrainedTokenizerFast, text_config: dict, vision_config: dict, **kwargs) -> Qwen3_5Config:
    """
    A Qwen3.5 VLM config of the given sizes that speaks `tokenizer`'s ids.

    Adds to the sizes what every model built here shares: the pad, end-of-sequence and vision placeholder token ids of
    `tokenizer`, untied embeddings, 16 px patches merged 2 x 2, and a vision output as wide as the text hidden size.

    Args:
        tokenizer (`PreTrainedTokenizerFast`):
            A tokenizer with the Qwen special tokens (see [`build_tokenizer`]).
        text_config (`dict`):
            `Qwen3_5TextConfig` keyword arguments (sizes, layer types, rope).
        vision_config (`dict`):
            `Qwen3_5VisionConfig` keyword arguments (depth, widths, heads, position embeddings).
        kwargs:
            Further `Qwen3_5Config` keyword arguments.
    """
    token_id = tokenizer.convert_tokens_to_ids
    text_config = dict(
        **text_config,
        pad_token_id=token_id("<|endoftext|>"),
        eos_token_id=token_id("<|im_end|>"),
        tie_word_embeddings=False,
    )
    vision_config = dict(
        **vision_config,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text_config["hidden_size"],
    )
    return Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
        **kwargs,
    )


# The embedded student and its wider teacher (as in the real 4B -> 27B setting); same tokenizer and vocabulary.
TINY_STUDENT = {"seed": 0, "hidden_size": 64}
TINY_TEACHER = {"seed": 1, "hidden_size": 96}


def ensure_tiny_vlm(output_dir: str | Path, **kwargs) -> Path:
    """
    [`build_tiny_vlm`] unless `output_dir` already holds every file of a saved model (`SAVED_FILES`), in which case it
    is left untouched, whatever it was built with, so repeated runs are fast. Delete the folder to rebuild.
    """
    output_dir = Path(output_dir)
    if not all((output_dir / file).is_file() for file in SAVED_FILES):
        build_tiny_vlm(output_dir, **kwargs)
    return output_dir


def build_tiny_pair(
    output_dir: str | Path, *, max_pixels: int = 128 * 128, min_pixels: int = 32 * 32
) -> tuple[Path, Path]:
    """
    Builds (or keeps, see [`ensure_tiny_vlm`]) a tiny student in `output_dir/student` (`TINY_STUDENT`: seed 0,
    hidden size 64) and a wider teacher in `output_dir/teacher` (`TINY_TEACHER`: seed 1, hidden size 96) that share one
    tokenizer, as in the real 4B -> 27B setting.

    Args:
        output_dir (`str` or `Path`):
            Parent folder of `student/` and `teacher/`.
        max_pixels (`int`, *optional*, defaults to `128 * 128`):
            Largest image area after resizing, see [`build_tiny_vlm`].
        min_pixels (`int`, *optional*, defaults to `32 * 32`):
            Smallest image area after resizing, see [`build_tiny_vlm`].

    Returns:
        `tuple[Path, Path]`: the student and teacher folders.
    """
    output_dir = Path(output_dir)
    budget = {"max_pixels": max_pixels, "min_pixels": min_pixels}
    return (
        ensure_tiny_vlm(output_dir / "student", **TINY_STUDENT, **budget),
        ensure_tiny_vlm(output_dir / "teacher", **TINY_TEACHER, **budget),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build a tiny random-weight Qwen3.5 student/teacher pair.")
    parser.add_argument("output_dir", type=Path, help="Parent folder of student/ and teacher/.")
    parser.add_argument("--max_pixels", type=int, default=128 * 128)
    parser.add_argument("--min_pixels", type=int, default=32 * 32)
    args = parser.parse_args()
    student, teacher = build_tiny_pair(args.output_dir, max_pixels=args.max_pixels, min_pixels=args.min_pixels)
    print(f"student: {student}\nteacher: {teacher}")
