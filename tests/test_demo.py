"""The README's main job: a short V-Zero run on the embedded defaults, resumable, ending with a saved model."""

import json

from transformers import AutoModelForImageTextToText, AutoProcessor

from vzero_trl.demo import main


def test_demo_trains_saves_and_resumes(tmp_path):
    final = main(["--output_dir", str(tmp_path), "--max_steps", "3", "--num_examples", "6"])
    assert AutoModelForImageTextToText.from_pretrained(final).config.model_type == "qwen3_5"
    assert AutoProcessor.from_pretrained(final).tokenizer is not None
    card = (final / "README.md").read_text()
    assert "**V-Zero**" in card and "| `max_steps` | 3 |" in card

    # A rerun with a longer budget resumes from the last checkpoint instead of starting over.
    main(["--output_dir", str(tmp_path), "--max_steps", "5", "--num_examples", "6"])
    state = json.loads((tmp_path / "run" / "checkpoint-5" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4, 5]
    assert all("evidence/weight_mean" in entry for entry in state["log_history"] if "loss" in entry)
