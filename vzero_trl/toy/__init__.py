"""Test and demo support: tiny random Qwen3.5 models built offline (`tiny`), synthetic fine-grained VQA data
(`synthetic`) and the torchvision-free processor the tiny models are saved with (`processors`).

Nothing here is needed to train, prepare data or evaluate with real checkpoints, and no module outside this package
imports it when it loads: the launcher imports it to build the demo's assets, and [`vzero_trl.processing`] to load a
checkpoint saved with the torchvision-free processor.
"""
