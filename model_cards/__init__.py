"""Card templates for what vzero_trl publishes, installed as `vzero_trl.model_cards` (see pyproject.toml).

- `model_card.md`: written by `VZeroTrainer.create_model_card` (and pushed by `push_to_hub`).
- `dataset_card.md`: written by the data-preparation pipeline (`scripts/prepare_data.py`).

They are Jinja templates rendered by `huggingface_hub`'s `ModelCard.from_template` / `DatasetCard.from_template`.
"""
