"""The V-Zero dataset schema as `datasets` features: one definition for data preparation, the synthetic data and the
README's "Dataset schema" table. What training reads of it, and how a row is checked, is in [`vzero_trl.views`].

It imports `datasets` only, so the light command lines (`python -m vzero_trl.toy.synthetic`) stay light.
"""

import datasets


def dataset_features(random_crop: bool = True) -> datasets.Features:
    """
    The V-Zero dataset schema, with the default evidence column names (`crop`, `negative_crop`).

    Args:
        random_crop (`bool`, *optional*, defaults to `True`):
            Include the `random_crop` column of the paper's random-evidence ablation (Table 2).
    """
    features = {
        "id": datasets.Value("string"),
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "image": datasets.Image(),
        "bbox": datasets.List(datasets.Value("int32")),
        "crop": datasets.Image(),
        "negative_crop": datasets.Image(),
        "answer": datasets.Value("string"),
    }
    if random_crop:
        features["random_crop"] = datasets.Image()
    return datasets.Features(features)
