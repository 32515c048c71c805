import importlib.resources
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3_5Config, Qwen3VLProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING, processor_class_from_name

from vzero_trl.toy.processors import Qwen3VLImageOnlyProcessor
from vzero_trl.toy.synthetic import COLORS, SHAPES
from vzero_trl.toy.tiny import SPECIAL_TOKENS, build_tiny_pair, build_tiny_vlm


TRL_TEMPLATE = importlib.resources.files("trl") / "chat_templates" / "qwen3_5_nothink.jinja"
QUESTION = (
    "What is the color of the star in the image?\nA. red\nB. green\nC. blue\nD. yellow\n"
    "Answer with the option's letter from the given choices."
)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return build_tiny_pair(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def student(tiny_pair):
    model = AutoModelForImageTextToText.from_pretrained(tiny_pair[0])
    processor = AutoProcessor.from_pretrained(tiny_pair[0], padding_side="left")
    return model, processor


def image_inputs(processor, images: list[Image.Image]) -> dict:
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
        for image in images
    ]
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )


def test_pair_loads_with_auto_classes(tiny_pair):
    for path in tiny_pair:
        model = AutoModelForImageTextToText.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path, padding_side="left")
        assert type(model).__name__ == "Qwen3_5ForConditionalGeneration"
        assert model.dtype == torch.float32
        assert type(processor) is Qwen3VLImageOnlyProcessor
        assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
        assert processor.tokenizer.padding_side == "left"
        assert processor.chat_template == TRL_TEMPLATE.read_text()


def test_pair_shares_tokenizer_but_not_weights(tiny_pair):
    student_dir, teacher_dir = tiny_pair
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"):
        assert (student_dir / file).read_bytes() == (teacher_dir / file).read_bytes()

    student_config = AutoModelForImageTextToText.from_pretrained(student_dir).config
    teacher_config = AutoModelForImageTextToText.from_pretrained(teacher_dir).config
    assert (student_config.text_config.hidden_size, teacher_config.text_config.hidden_size) == (64, 96)
    assert student_config.text_config.vocab_size == teacher_config.text_config.vocab_size

    # The vision towers have the same shapes, so only the seed can make them differ.
    student_weights = load_file(student_dir / "model.safetensors")
    teacher_weights = load_file(teacher_dir / "model.safetensors")
    name = "model.visual.patch_embed.proj.weight"
    assert student_weights[name].shape == teacher_weights[name].shape
    assert not torch.equal(student_weights[name], teacher_weights[name])


def test_weights_depend_only_on_seed(tiny_pair, tmp_path):
    student_weights = load_file(tiny_pair[0] / "model.safetensors")
    same = load_file(build_tiny_vlm(tmp_path / "same", seed=0) / "model.safetensors")
    other = load_file(build_tiny_vlm(tmp_path / "other", seed=1) / "model.safetensors")
    assert student_weights.keys() == same.keys() == other.keys()
    assert all(torch.equal(student_weights[name], same[name]) for name in student_weights)
    assert not torch.equal(student_weights["lm_head.weight"], other["lm_head.weight"])


def test_special_tokens_are_single_ids_wired_into_config(student):
    model, processor = student
    tokenizer = processor.tokenizer
    ids = {}
    for token in SPECIAL_TOKENS + ["<think>", "</think>"]:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        assert len(encoded) == 1, token
        ids[token] = encoded[0]
    assert len(set(ids.values())) == len(ids)

    config = model.config
    assert config.image_token_id == ids["<|image_pad|>"]
    assert config.video_token_id == ids["<|video_pad|>"]
    assert config.vision_start_token_id == ids["<|vision_start|>"]
    assert config.vision_end_token_id == ids["<|vision_end|>"]
    assert config.text_config.pad_token_id == tokenizer.pad_token_id == ids["<|endoftext|>"]
    assert config.text_config.eos_token_id == tokenizer.eos_token_id == ids["<|im_end|>"]
    assert model.generation_config.eos_token_id == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert model.generation_config.pad_token_id == ids["<|endoftext|>"]
    # Padded to a multiple of 64, like real checkpoints.
    assert config.text_config.vocab_size % 64 == 0
    assert len(tokenizer) <= config.text_config.vocab_size < len(tokenizer) + 64


def test_tokenizer_round_trips_text(student):
    tokenizer = student[1].tokenizer
    teacher_text = (
        "The next image is a cropped view of the target image from the original image: <|vision_start|><|image_pad|>"
        "<|vision_end|>. Use the crop as focused visual evidence for the relevant object or region, while keeping "
        "the original image as context."
    )
    for text in (QUESTION, teacher_text, "Ünïcödé 🙂 text never seen in training\t\n"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    # The corpus holds the question vocabulary, so synthetic questions stay short.
    for word in [*COLORS, *SHAPES]:
        assert tokenizer.tokenize(" " + word) == ["Ġ" + word]


def test_chat_template_with_one_image(student):
    processor = student[1]
    inputs = image_inputs(processor, [Image.new("RGB", (224, 224), "red")])
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"} <= inputs.keys()
    # 224 x 224 is resized to the 128 x 128 max_pixels: an 8 x 8 patch grid merged 2 x 2 into 16 tokens.
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    num_image_tokens = (inputs["input_ids"] == processor.image_token_id).sum().item()
    assert num_image_tokens == inputs["image_grid_thw"].prod().item() // 4 == 16
    assert inputs["mm_token_type_ids"].sum().item() == num_image_tokens
    text = processor.decode(inputs["input_ids"][0])
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert text.endswith(QUESTION + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_batch_of_two_image_sizes_is_left_padded(student):
    processor = student[1]
    images = [Image.new("RGB", (224, 224), "red"), Image.new("RGB", (320, 192), "blue")]
    inputs = image_inputs(processor, images)
    grid = inputs["image_grid_thw"]
    assert grid.shape == (2, 3)
    tokens_per_image = (grid.prod(-1) // 4).tolist()
    assert tokens_per_image[0] != tokens_per_image[1]
    assert (inputs["input_ids"] == processor.image_token_id).sum(-1).tolist() == tokens_per_image
    # The row with fewer image tokens is padded on the left; both rows end with the generation prompt.
    mask = inputs["attention_mask"]
    short = tokens_per_image.index(min(tokens_per_image))
    assert mask[short, 0] == 0 and mask[:, -1].all()
    assert (mask == 0).sum().item() == abs(tokens_per_image[0] - tokens_per_image[1])
    assert torch.equal(inputs["input_ids"][0, -4:], inputs["input_ids"][1, -4:])


def test_generate_and_forward(student):
    model, processor = student
    images = [Image.new("RGB", (224, 224), "red"), Image.new("RGB", (320, 192), "blue")]
    inputs = image_inputs(processor, images)
    torch.manual_seed(0)
    output = model.generate(
        **inputs, do_sample=True, max_new_tokens=4, min_new_tokens=4, suppress_tokens=[model.config.image_token_id]
    )
    assert output.shape == (2, inputs["input_ids"].shape[1] + 4)
    assert torch.equal(output[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_complete_folders_are_not_rebuilt(tiny_pair):
    files = sorted(path for folder in tiny_pair for path in folder.iterdir())
    mtimes = [path.stat().st_mtime_ns for path in files]
    assert build_tiny_pair(tiny_pair[0].parent) == tiny_pair
    assert [path.stat().st_mtime_ns for path in files] == mtimes


def test_incomplete_folder_is_rebuilt(tiny_pair, tmp_path):
    for path in tiny_pair:
        shutil.copytree(path, tmp_path / path.name)
    (tmp_path / "student" / "model.safetensors").unlink()
    teacher_mtime = (tmp_path / "teacher" / "model.safetensors").stat().st_mtime_ns
    build_tiny_pair(tmp_path)
    rebuilt = tmp_path / "student" / "model.safetensors"
    assert rebuilt.read_bytes() == (tiny_pair[0] / "model.safetensors").read_bytes()
    assert (tmp_path / "teacher" / "model.safetensors").stat().st_mtime_ns == teacher_mtime


def test_registration_leaves_qwen3_5_mapping_alone():
    # Registering under `Qwen3_5Config` would make `AutoProcessor` build the image-only class for real checkpoints.
    assert PROCESSOR_MAPPING[Qwen3_5Config] is Qwen3VLProcessor
    assert Qwen3_5Config not in PROCESSOR_MAPPING._extra_content
    assert processor_class_from_name("Qwen3VLProcessor") is Qwen3VLProcessor
    assert processor_class_from_name("Qwen3VLImageOnlyProcessor") is Qwen3VLImageOnlyProcessor


def test_invalid_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match="hidden_size"):
        build_tiny_vlm(tmp_path, hidden_size=50)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        build_tiny_vlm(tmp_path, num_hidden_layers=0)


def test_cli_builds_identical_pair(tiny_pair, tmp_path):
    # Run from the repository root so that `-m` finds the package whether or not it is installed.
    repo_root = Path(__file__).parents[1]
    subprocess.run(
        [sys.executable, "-m", "vzero_trl.toy.tiny", str(tmp_path)], cwd=repo_root, check=True, capture_output=True
    )
    for path in tiny_pair:
        # Also checks that tokenizer training and weight init are deterministic across processes.
        for file in ("tokenizer.json", "model.safetensors"):
            assert (tmp_path / path.name / file).read_bytes() == (path / file).read_bytes()
