"""Loading a checkpoint's processor: the tiny models' torchvision-free one is registered only where it is needed."""

import shutil
import subprocess
import sys
from pathlib import Path

from vzero_trl.processing import IMAGE_ONLY_PROCESSOR, saved_processor_class


ROOT = Path(__file__).parent.parent


def run_fresh(code: str) -> str:
    """Run `code` in a new interpreter (nothing registered with `AutoProcessor` yet) and return what it prints."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_saved_processor_class_reads_the_checkpoint(tiny_models, tmp_path):
    assert saved_processor_class(str(tiny_models[0])) == IMAGE_ONLY_PROCESSOR
    assert saved_processor_class(str(tmp_path)) is None  # a folder without processor_config.json


def test_a_checkpoint_naming_the_standard_processor_goes_to_auto_processor_alone(tiny_models, tmp_path):
    # Real Qwen3.5 checkpoints name `Qwen3VLProcessor`: `load_processor` does what `AutoProcessor` does with them (here,
    # without torchvision, fail alike) and leaves the toy support unimported.
    checkpoint = tmp_path / "standard"
    shutil.copytree(tiny_models[0], checkpoint)
    config = checkpoint / "processor_config.json"
    config.write_text(config.read_text().replace(IMAGE_ONLY_PROCESSOR, "Qwen3VLProcessor"))
    assert saved_processor_class(str(checkpoint)) == "Qwen3VLProcessor"
    out = run_fresh(
        "import sys\n"
        "from transformers import AutoProcessor\n"
        "from vzero_trl.processing import load_processor\n"
        "def outcome(load):\n"
        "    try:\n"
        f"        return type(load({str(checkpoint)!r})).__name__\n"
        "    except Exception as error:\n"
        "        return type(error).__name__ + ': ' + str(error)[:200]\n"
        "print(outcome(load_processor) == outcome(AutoProcessor.from_pretrained))\n"
        "print('vzero_trl.toy.processors' in sys.modules)\n"
    )
    assert out.split() == ["True", "False"]


def test_production_modules_do_not_import_the_toy_support():
    # Training, data preparation, evaluation and the scripts load without the tiny models' support package.
    out = run_fresh(
        "import sys, runpy\n"
        "import vzero_trl.trainer, vzero_trl.prepare.pipeline, vzero_trl.eval.evaluate, vzero_trl.processing\n"
        "for script in ('scripts/vzero.py', 'scripts/evaluate.py', 'scripts/prepare_data.py'):\n"
        "    runpy.run_path(script, run_name='not_main')\n"
        "print(sorted(m for m in sys.modules if m.startswith('vzero_trl.toy')))\n"
    )
    assert out.strip() == "[]"


def test_trainer_given_a_tiny_model_path_registers_its_processor(tiny_models, tmp_path):
    # A fresh process that never imported `vzero_trl.toy`: the trainer loads the saved tiny models by path.
    student, teacher = map(str, tiny_models)
    out = run_fresh(
        "import sys, datasets\n"
        "from PIL import Image\n"
        "from vzero_trl import VZeroConfig, VZeroTrainer\n"
        "image = Image.new('RGB', (32, 32))\n"
        "rows = [{'prompt': [{'role': 'user', 'content': 'What colour?'}], 'image': image, 'crop': image,\n"
        "         'negative_crop': image}]\n"
        "assert 'vzero_trl.toy.processors' not in sys.modules\n"
        f"args = VZeroConfig({str(tmp_path)!r}, report_to='none', use_cpu=True, bf16=False, num_generations=2,\n"
        "                   per_device_train_batch_size=2)\n"
        f"trainer = VZeroTrainer({student!r}, {teacher!r}, args=args, train_dataset=datasets.Dataset.from_list(rows))\n"
        "print(type(trainer.processing_class).__name__, trainer.processing_class.tokenizer.padding_side)\n"
    )
    assert out.split() == [IMAGE_ONLY_PROCESSOR, "left"]
